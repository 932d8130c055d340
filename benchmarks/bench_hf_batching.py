"""HF backend: batched (continuous batching on CPU) vs one prompt at a time.

The same ProcessBench critique prompts (``prompting.critique_messages``) are decoded greedily
both ways with each model, at each token budget; the script prints completion tokens/s for
both, the speedup, and the fraction of prompts whose greedy outputs are identical. For every
prompt whose outputs differ it prints where they diverge and the logit gap between the two
competing tokens there: a gap near zero is a numerical tie (fp32 sums in a different order at
a different batch shape), not a padding bug.

    python benchmarks/bench_hf_batching.py --models tiny,default --max-tokens 64,128,256

The default budget, 256 tokens, is what ``deepcritic eval`` gives a critique on CPU
(``configs/evaluate.local.yaml``); the default batch size is ``BackendConfig``'s. The batched
run is timed twice, before and after the one-at-a-time run, and their mean is reported, so a
machine that speeds up or slows down meanwhile favours neither side (both runs must agree).

``--decode-only`` also times a 1-token run (prefill and the first token) in both modes and
reports decode throughput without it. Prefill is compute-bound on CPU and costs the same in
both modes, except for the prompts' shared prefix, which the batched run prefills once: at
short budgets it bounds the speedup.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from deepcritic.generation import BackendConfig, Prompt, SamplingParams
from deepcritic.generation.hf import HFBackend
from deepcritic.prompting import critique_messages

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "processbench" / "gsm8k.json"


@dataclass
class Timing:
    seconds: float
    completion_tokens: int
    texts: list[str]

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


def load_prompts(path: Path, n: int) -> list[Prompt]:
    """The first ``n`` items of a ProcessBench JSON file as critique prompts."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or len(rows) < n:
        raise SystemExit(f"{path}: expected a JSON list of at least {n} items")
    prompts = []
    for i, row in enumerate(rows[:n]):
        for key in ("problem", "steps"):
            if key not in row:
                raise SystemExit(f"{path}: item {i} has no field '{key}'")
        prompts.append(critique_messages(row["problem"], row["steps"]))
    return prompts


def run_batched(backend: HFBackend, prompts: list[Prompt], params: SamplingParams) -> Timing:
    start = time.perf_counter()
    outs = backend.generate(prompts, params, desc="batched")
    seconds = time.perf_counter() - start
    tokens = sum(g[0].completion_tokens for g in outs)
    return Timing(seconds, tokens, [g[0].text for g in outs])


def run_single(backend: HFBackend, prompts: list[Prompt], params: SamplingParams) -> Timing:
    start = time.perf_counter()
    outs = [backend.generate([p], params)[0] for p in tqdm(prompts, desc="one at a time")]
    seconds = time.perf_counter() - start
    tokens = sum(g[0].completion_tokens for g in outs)
    return Timing(seconds, tokens, [g[0].text for g in outs])


def divergence(backend: HFBackend, prompt: Prompt, a: str, b: str) -> dict[str, Any]:
    """Where two greedy outputs part, and the logit gap between the two tokens chosen there."""
    import torch

    tok = backend.tokenizer
    ids_a = tok(a, add_special_tokens=False)["input_ids"]
    ids_b = tok(b, add_special_tokens=False)["input_ids"]
    k = 0
    while k < min(len(ids_a), len(ids_b)) and ids_a[k] == ids_b[k]:
        k += 1
    info: dict[str, Any] = {
        "token": k,
        "a": tok.decode(ids_a[k : k + 3]),
        "b": tok.decode(ids_b[k : k + 3]),
    }
    if k < min(len(ids_a), len(ids_b)):
        ids = torch.tensor([backend.encode([prompt])[0] + ids_a[:k]], device=backend.model.device)
        with torch.inference_mode():
            logits = backend.model(input_ids=ids).logits[0, -1].float()
        info["logit_gap"] = abs(float(logits[ids_a[k]] - logits[ids_b[k]]))
    return info


def bench_model(
    model: str, prompts: list[Prompt], args: argparse.Namespace
) -> Iterator[dict[str, Any]]:
    """The figures of one model at each token budget, as each is measured."""
    config = BackendConfig(
        model=model, device=args.device, dtype=args.dtype, batch_size=args.batch_size
    )
    backend = HFBackend(config)
    backend.generate(prompts[:2], SamplingParams(max_tokens=2))  # warm-up
    for budget in args.max_tokens:
        yield bench_budget(backend, prompts, budget, args)
    backend.close()


def bracketed(
    backend: HFBackend, prompts: list[Prompt], params: SamplingParams
) -> tuple[Timing, Timing, list[float]]:
    """(batched, one at a time, both batched times): the one-at-a-time run between two batched
    runs, whose mean is the batched time."""
    before = run_batched(backend, prompts, params)
    single = run_single(backend, prompts, params)
    after = run_batched(backend, prompts, params)
    if before.texts != after.texts:
        raise SystemExit("two batched greedy runs of the same prompts differ: not deterministic")
    mean = Timing((before.seconds + after.seconds) / 2, before.completion_tokens, before.texts)
    return mean, single, [before.seconds, after.seconds]


def bench_budget(
    backend: HFBackend, prompts: list[Prompt], budget: int, args: argparse.Namespace
) -> dict[str, Any]:
    params = SamplingParams(max_tokens=budget)  # greedy
    batched, single, batched_runs = bracketed(backend, prompts, params)
    same = [x == y for x, y in zip(batched.texts, single.texts, strict=True)]
    result: dict[str, Any] = {
        "model": backend.config.model,
        "max_tokens": budget,
        "batch_size": args.batch_size,
        "prompts": len(prompts),
        "prompt_tokens": sum(len(s) for s in backend.encode(prompts)),
        "batched_s": batched.seconds,
        "batched_runs_s": batched_runs,
        "batched_tokens": batched.completion_tokens,
        "batched_tok_s": batched.tokens_per_second,
        "single_s": single.seconds,
        "single_tokens": single.completion_tokens,
        "single_tok_s": single.tokens_per_second,
        "speedup": batched.tokens_per_second / max(single.tokens_per_second, 1e-9),
        "identical": sum(same) / len(same),
        "differences": [
            {"prompt": i, **divergence(backend, prompts[i], batched.texts[i], single.texts[i])}
            for i, ok in enumerate(same)
            if not ok
        ],
    }
    if args.decode_only:
        result.update(decode_only(backend, prompts, batched, single))
    return result


def decode_only(
    backend: HFBackend, prompts: list[Prompt], batched: Timing, single: Timing
) -> dict[str, Any]:
    """Subtract a 1-token run (prefill + first token) to get decode tokens/s in both modes."""
    one = SamplingParams(max_tokens=1)
    pre_b = run_batched(backend, prompts, one)
    pre_s = run_single(backend, prompts, one)
    tok_b, tok_s = batched.completion_tokens - len(prompts), single.completion_tokens - len(prompts)
    # When the 1-token run is not faster than the full run (tiny models: decode costs ~nothing),
    # the difference is timing noise and there is no decode figure to report.
    gap_b, gap_s = batched.seconds - pre_b.seconds, single.seconds - pre_s.seconds
    dec_b = tok_b / gap_b if gap_b > 0.05 else float("nan")
    dec_s = tok_s / gap_s if gap_s > 0.05 else float("nan")
    return {
        "prefill_batched_s": pre_b.seconds,
        "prefill_single_s": pre_s.seconds,
        "decode_batched_tok_s": dec_b,
        "decode_single_tok_s": dec_s,
        "decode_speedup": dec_b / dec_s if dec_s == dec_s and dec_s > 0 else float("nan"),
    }


def report(r: dict[str, Any]) -> None:
    print(
        f"\n== {r['model']}: {r['prompts']} prompts, {r['prompt_tokens']} prompt tokens, "
        f"max {r['max_tokens']} new tokens, batch {r['batch_size']}"
    )
    runs = " and ".join(f"{t:.1f}" for t in r["batched_runs_s"])
    print(
        f"batched      {r['batched_s']:8.1f} s  {r['batched_tokens']:6d} tokens  {r['batched_tok_s']:8.1f} tok/s"
        f"  (mean of {runs} s)"
    )
    print(
        f"one at a time{r['single_s']:8.1f} s  {r['single_tokens']:6d} tokens  {r['single_tok_s']:8.1f} tok/s"
    )
    print(
        f"speedup      {r['speedup']:.2f}x   identical greedy outputs: {100 * r['identical']:.1f}%"
    )
    if "decode_speedup" in r:
        print(
            f"prefill only (1 token): batched {r['prefill_batched_s']:.1f} s, one at a time "
            f"{r['prefill_single_s']:.1f} s; decode only: batched {r['decode_batched_tok_s']:.1f} tok/s, "
            f"one at a time {r['decode_single_tok_s']:.1f} tok/s, speedup {r['decode_speedup']:.2f}x"
        )
    for d in r["differences"]:
        gap = d.get("logit_gap")
        gap_txt = (
            f"logit gap {gap:.2e}" if gap is not None else "one output is a prefix of the other"
        )
        print(
            f"  prompt {d['prompt']}: diverges at token {d['token']}: {d['a']!r} vs {d['b']!r} ({gap_txt})"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ProcessBench JSON file")
    parser.add_argument("--models", default="tiny,default", help="comma-separated model names")
    parser.add_argument("--n-prompts", type=int, default=32)
    parser.add_argument(
        "--max-tokens",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[256],
        help="comma-separated token budgets (default: 256, the CPU budget of deepcritic eval)",
    )
    parser.add_argument("--batch-size", type=int, default=BackendConfig().batch_size)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0 = torch default); 1 is far faster on an oversubscribed machine",
    )
    parser.add_argument("--decode-only", action="store_true", help="also report decode-only tok/s")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    prompts = load_prompts(args.data, args.n_prompts)
    results = []
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        for result in bench_model(model, prompts, args):
            report(result)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
