"""The GPU acceptance script's CPU dry run: tiny shapes, every row reported, CUDA-only rows
skipped with their reason, one table and a JSON file (benchmarks/gpu_check.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out",
         str(tmp_path)], capture_output=True, text=True, timeout=230,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] is True
    rows = {(r["check"], r["model"]): r for r in report["rows"]}
    assert rows[("tokenizer", "SmolLM2 (from GGUF)")]["figures"]["vocab"] == 49152
    plan7 = rows[("plan sft.small", "qwen2.5-7b")]["figures"]
    assert (
        plan7["planned_peak_gb"]
        > rows[("plan sft.small", "qwen2.5-1.5b")]["figures"]["planned_peak_gb"]
    )
    sft = rows[("sft", "qwen2.5-1.5b (tiny)")]
    assert sft["status"] == "ok" and sft["figures"]["tokens_per_s"] > 0
    for check, model in (
        ("grpo vLLM colocate", "qwen2.5-1.5b"),
        ("vllm-eval greedy", "qwen2.5-7b"),
    ):
        assert rows[(check, model)]["status"] == "skipped: needs CUDA"
    served = rows[("server 32 clients", "qwen2.5-1.5b (tiny)")]
    assert served["status"] == "ok", served
    assert served["figures"]["clients"] == 32 and served["figures"]["errors"] == 0
    table = proc.stdout[proc.stdout.index("gpu-check on CPU dry run") :]
    assert "skipped: needs CUDA" in table and "server 32 clients" in table
