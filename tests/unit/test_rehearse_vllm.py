"""benchmarks/rehearse_vllm.py (``make rehearse-vllm``): how a failed stage is read and classified.
Only the listed upstream vLLM/TRL CPU errors are ``upstream``; anything else fails the target, and
the reported error is the root one, without the worker prefixes vLLM and torchrun add."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from support.paths import ROOT
from support.scripts import load_script

PATH = ROOT / "benchmarks" / "rehearse_vllm.py"

ENGINE_DIED = """\
(Worker pid=9685) ERROR 12-07 11:40:30 [multiproc_executor.py:1058] Traceback (most recent call last):
(Worker pid=9685) ERROR 12-07 11:40:30 [multiproc_executor.py:1058]     gen.set_offset(gen.get_offset() - 4)
(Worker pid=9685) ERROR 12-07 11:40:30 [multiproc_executor.py:1058] RuntimeError: CPU Generator does not use offset
Traceback (most recent call last):
vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause.
"""
COLOCATE = """\
[rank0]: Traceback (most recent call last):
[rank0]:     param.weight_loader(param, loaded_weight, shard_id)
[rank0]: AttributeError: 'Parameter' object has no attribute 'weight_loader'
  0%|          | 0/1 [00:02<?, ?it/s]
"""
PROJECT_BUG = """\
Traceback (most recent call last):
  File "/x/src/deepcritic/stages/mc.py", line 1, in run
KeyError: 'mc_estimates'
"""


@pytest.fixture(scope="module")
def rh() -> ModuleType:
    return load_script(PATH, "rehearse_vllm")


def test_root_error_without_worker_prefixes(rh: ModuleType) -> None:
    assert rh.last_error(ENGINE_DIED).startswith(
        "RuntimeError: CPU Generator does not use offset (root)"
    )
    assert (
        rh.last_error(COLOCATE)
        == "AttributeError: 'Parameter' object has no attribute 'weight_loader'"
    )
    assert rh.last_error(PROJECT_BUG) == "KeyError: 'mc_estimates'"
    assert rh.last_error("") == "(no output)"


def test_only_listed_upstream_errors_are_upstream(rh: ModuleType) -> None:
    assert rh.upstream_limit("seed", ENGINE_DIED)
    assert rh.upstream_limit("grpo-colocate", COLOCATE)
    assert rh.upstream_limit("serve-v1", COLOCATE) is None  # listed for another stage only
    assert rh.upstream_limit("mc", PROJECT_BUG) is None


def test_a_project_bug_fails_the_stage(rh: ModuleType, tmp_path: Path) -> None:
    r = rh.Rehearsal(tmp_path)

    def bug() -> str:
        raise KeyError("mc_estimates")

    def cpu_limit() -> str:
        raise rh.StageFailed(
            "deepcritic mc exited 1: RuntimeError: CPU Generator does not use offset"
        )

    assert r.stage("mc", bug).status == "FAIL"
    assert r.stage("mc", cpu_limit).status == "upstream"
    assert r.stage("mc", lambda: "fine").status == "ok"
    assert "FAIL" in rh.table(r.outcomes) and "upstream" in rh.table(r.outcomes)
