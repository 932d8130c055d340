r"""GRPO of the critic: reward curve and seconds per step.

CPU (always): the learnable task of the component test (all-correct solutions, ``\boxed{-1}`` earns
the reward) on the tiny model primed to answer ``-1`` or ``10`` at random; prints the mean reward
per step and s/step, then s/step on real critique prompts (perturbed GSM8K) with the TRL 1.16
CPU log-prob path compacted (ours, default) and not (TRL as shipped).
GPU (only with CUDA): the same learnable task on SmolLM2-135M-Instruct, bf16.

    DEEPCRITIC_CACHE=/tmp/dccache python benchmarks/bench_grpo.py [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import torch

from deepcritic.data.perturb import load_perturbed
from deepcritic.grader import render_answer
from deepcritic.models import resolve_model
from deepcritic.prompting import critique_messages
from deepcritic.records import Solution, write_jsonl
from deepcritic.stages.grpo import CriticGRPOConfig, run

ALL_CORRECT = [
    Solution(
        id=f"ok{i}",
        problem=f"What is {i} + {i}?",
        steps=[f"{i} + {i} = {2 * i}.", f"So \\boxed{{{2 * i}}}."],
    )
    for i in range(1, 5)
]


def prime(
    model_path: str,
    out: Path,
    answers: list[str],
    steps: int = 80,
    device: str = "cpu",
    rows: list[Solution] = ALL_CORRECT,
) -> str:
    """Supervised warm-up: answer one of ``answers`` (same token length) at random, so a group
    of sampled critiques holds both right and wrong answers, which GRPO can then sharpen (the
    GRPO component test primes its tiny model with this too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2 if device == "cpu" else 1e-4)
    rng = random.Random(0)
    enc = [
        tok.apply_chat_template(critique_messages(r.problem, r.steps), add_generation_prompt=True)
        for r in rows
    ]
    prompts = [list(p["input_ids"] if hasattr(p, "keys") else p) for p in enc]
    targets = [tok(a + tok.eos_token, add_special_tokens=False)["input_ids"] for a in answers]
    if len({len(t) for t in targets}) != 1:
        raise ValueError("prime: answers must have the same token length")
    width, n = max(map(len, prompts)) + len(targets[0]), len(targets[0])
    for _ in range(steps):
        chosen = [rng.choice(targets) for _ in prompts]
        seqs = [p + t for p, t in zip(prompts, chosen, strict=True)]
        ids = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs], device=device)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -n - 1 : -1]
        gold = torch.tensor(chosen, device=device).flatten()
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden).flatten(0, 1), gold)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return str(out)


def learnable(model: str, work: Path, steps: int, lr: float, **kw: object) -> None:
    data = work / "all_correct.jsonl"
    write_jsonl(data, ALL_CORRECT)
    cfg = CriticGRPOConfig(
        model=model,
        labels_path=str(data),
        out_dir=str(work / "grpo-learn"),
        num_generations=8,
        per_device_train_batch_size=16,
        max_completion_length=14,
        learning_rate=lr,
        beta=0.0,
        max_steps=steps,
        save_steps=10_000,
        tracking_uri="off",
        **kw,  # type: ignore[arg-type]
    )
    result = run(cfg)
    print("reward curve (mean reward per step):", " ".join(f"{r:.3f}" for r in result.reward_curve))
    k = max(1, len(result.reward_curve) // 3)
    first, last = result.reward_curve[:k], result.reward_curve[-k:]
    print(f"  first {k} steps {sum(first) / k:.3f} -> last {k} steps {sum(last) / k:.3f}")
    print(
        f"  {result.seconds_per_step:.2f} s/step (16 completions of <= 14 tokens, ~290-token prompts)"
    )


def real_prompts(work: Path, steps: int, compact: bool) -> float:
    data = work / "perturbed.jsonl"
    write_jsonl(data, load_perturbed("test", limit=4))
    cfg = CriticGRPOConfig(
        model=resolve_model("tiny"),
        labels_path=str(data),
        out_dir=str(work / f"grpo-real-{compact}"),
        num_generations=4,
        per_device_train_batch_size=8,
        max_completion_length=32,
        learning_rate=1e-4,
        beta=0.01,
        max_steps=steps,
        save_steps=10_000,
        tracking_uri="off",
        compact_cpu_logprobs=compact,
    )
    return run(cfg).seconds_per_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        print(f"== CPU, tiny model (threads={args.threads}) ==")
        primed = prime(
            resolve_model("tiny"), work / "primed", [render_answer(-1), render_answer(10)]
        )
        learnable(primed, work, args.steps, lr=3e-3)
        on = real_prompts(work, 3, compact=True)
        off = real_prompts(work, 2, compact=False)
        print(
            f"real critique prompts (8 completions x 32 tokens): {on:.2f} s/step compacted, "
            f"{off:.2f} s/step TRL as shipped ({off / on:.1f}x)"
        )
        if not torch.cuda.is_available():
            print("== GPU: skipped (no CUDA) ==")
            return
        print(f"== GPU ({torch.cuda.get_device_name()}), SmolLM2-135M-Instruct, bf16 ==")
        primed_gpu = prime(
            resolve_model("default"),
            work / "primed-135m",
            [render_answer(-1), render_answer(10)],
            device="cuda",
        )
        learnable(primed_gpu, work / "gpu", args.steps, lr=1e-5, precision="bf16")


if __name__ == "__main__":
    main()
