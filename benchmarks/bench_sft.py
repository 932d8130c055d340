"""SFT throughput: tokens/s on CPU (tiny, default) and, with CUDA, tokens/s and MFU on a GPU.

    python benchmarks/bench_sft.py                 # CPU part (+ GPU part when CUDA is present)
    python benchmarks/bench_sft.py --cpu-steps 3 --models tiny

CPU: the real stage path (``deepcritic.stages.sft.build_trainer``) on critique chats built from
ProcessBench items in the seed format, fp32, gradient checkpointing.

GPU: a Qwen2.5-1.5B-shaped model with random weights (config dict below; no download), bf16, on
the same kind of data with lengths spread like real critiques, comparing
  * ``trl-default``: TRL's defaults (padded batches, no packing),
  * ``padding-free``: flattened batches without pad tokens (flash attention),
  * ``packing``: BFD packing into ``max_length`` blocks (padding-free implied),
reporting tokens/s (non-pad tokens) and MFU = achieved FLOP/s / peak bf16 FLOP/s, where
FLOPs/token = 6 x parameters + 12 x layers x hidden x mean context (causal attention, fwd+bwd).
Skipped with a message when there is no CUDA.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROCESSBENCH = ROOT.parent / "shared" / "data" / "processbench" / "gsm8k.json"

QWEN25_15B: dict[str, Any] = {  # Qwen2.5-1.5B-Instruct's shape (config.json), random weights
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense, per GPU


def critique_rows(n: int, seed: int = 0, repeat_body: int = 1) -> list[dict[str, Any]]:
    """Prompt/completion chats in the seed stage's format (ProcessBench problems and steps)."""
    from deepcritic.records import Solution
    from deepcritic.stages.seed.generate import format_messages
    from deepcritic.stages.seed.teacher import steps_to_critique

    rng = random.Random(seed)
    items = json.loads(PROCESSBENCH.read_text())
    rows = []
    for row in rng.sample(items, n):
        s = Solution.from_dict(row)
        body = (
            "Let me recompute the quantities in this step and check each inference. "
            "Wait, let me verify this another way, by substituting the result back. " * repeat_body
        )
        msgs = format_messages(s, [body] * steps_to_critique(s))
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return rows


def _timed_train(trainer: Any, warmup_steps: int) -> dict[str, float]:
    """Train; tokens/s over the steps after ``warmup_steps`` (from TRL's num_tokens log)."""
    from transformers import TrainerCallback

    marks: dict[str, float] = {}

    class Clock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == warmup_steps:
                _sync()
                marks["t0"] = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "num_tokens" in logs:
                marks.setdefault(f"tok{state.global_step}", float(logs["num_tokens"]))

    trainer.add_callback(Clock())
    start = time.perf_counter()
    trainer.train()
    _sync()
    end = time.perf_counter()
    steps = trainer.state.global_step
    tokens = marks[f"tok{steps}"] - (marks.get(f"tok{warmup_steps}", 0.0) if warmup_steps else 0.0)
    seconds = end - marks.get("t0", start)
    return {
        "steps": steps - warmup_steps,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_cpu(model: str, steps: int, batch: int, out: Path) -> dict[str, float]:
    from deepcritic.stages.sft import CriticSFTConfig, build_trainer

    cfg = CriticSFTConfig(
        model=model,
        out_dir=str(out / model),
        max_steps=steps,
        per_device_batch_size=batch,
        effective_batch_size=batch,
        max_length=2048,
        learning_rate=1e-5,
        logging_steps=1,
        save_steps=10_000,
        tracking_uri="off",
        resume=False,
    )
    trainer, _ = build_trainer(cfg, critique_rows(batch * steps), [])
    return _timed_train(trainer, warmup_steps=1)


def gpu_variants() -> dict[str, dict[str, Any]]:
    return {
        "trl-default": {},
        "padding-free": {"padding_free": True},
        "packing": {"packing": True},
    }


def bench_gpu(steps: int, batch: int, max_length: int, out: Path) -> dict[str, dict[str, float]]:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    from deepcritic.models import smollm2_tokenizer_dir

    tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir()))  # ids fit Qwen's vocab
    rows = [r for k in (1, 4, 8, 16) for r in critique_rows(batch * steps // 4 + 1, k, k)]
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), 989e12)
    results: dict[str, dict[str, float]] = {}
    for label, extra in gpu_variants().items():
        attn = "flash_attention_2" if extra else "sdpa"
        torch.manual_seed(0)
        model = Qwen2ForCausalLM._from_config(
            Qwen2Config(**QWEN25_15B), attn_implementation=attn, dtype=torch.bfloat16
        ).cuda()
        n_params = sum(p.numel() for p in model.parameters())
        args = SFTConfig(
            output_dir=str(out / label),
            max_steps=steps,
            bf16=True,
            per_device_train_batch_size=batch,
            max_length=max_length,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            **extra,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok
        )
        r = _timed_train(trainer, warmup_steps=3)
        ctx = max_length / 2 if extra.get("packing") else 1500  # mean attended context
        flops_per_token = 6 * n_params + 12 * 28 * 1536 * ctx
        r["mfu"] = r["tokens_per_s"] * flops_per_token / peak
        results[label] = r
        print(
            f"GPU {label:13s} {r['tokens_per_s']:10.0f} tok/s  MFU {100 * r['mfu']:.1f}%",
            flush=True,
        )
        del trainer, model
        torch.cuda.empty_cache()
    base = results["trl-default"]["tokens_per_s"]
    for r in results.values():
        r["speedup_vs_trl_default"] = r["tokens_per_s"] / base
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-steps", type=int, default=5)
    parser.add_argument("--cpu-batch", type=int, default=2)
    parser.add_argument("--models", default="tiny,default", help="CPU models, comma-separated")
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--gpu-max-length", type=int, default=8192)
    parser.add_argument("--out", default="/tmp/bench_sft")
    args = parser.parse_args(argv)
    out = Path(args.out)
    report: dict[str, Any] = {"cpu": {}}
    for model in [m for m in args.models.split(",") if m]:
        r = bench_cpu(model, args.cpu_steps, args.cpu_batch, out)
        report["cpu"][model] = r
        print(
            f"CPU {model:8s} {r['tokens_per_s']:8.1f} tok/s  ({r['tokens']:.0f} tokens, "
            f"{r['steps']} steps, {r['seconds']:.1f} s)",
            flush=True,
        )
    import torch

    if torch.cuda.is_available():
        report["gpu"] = bench_gpu(args.gpu_steps, args.gpu_batch, args.gpu_max_length, out)
    else:
        print("GPU part skipped: no CUDA device (run on a GPU node for tokens/s and MFU)")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
