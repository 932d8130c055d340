"""The demo's one-line verdict on what the trained critic learned (pipelines/run_local.learned)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from support.paths import ROOT


@pytest.fixture(scope="module")
def run_local() -> Iterator[Any]:
    sys.path.insert(0, str(ROOT / "pipelines"))  # run_local imports local_topology as a sibling
    spec = importlib.util.spec_from_file_location("run_local", ROOT / "pipelines" / "run_local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["run_local"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("run_local", None)
    sys.path.remove(str(ROOT / "pipelines"))


def test_format_only_points_to_the_learning_benchmark(run_local: Any) -> None:
    line = run_local.learned(
        {
            "base": {"avg_answer_rate": 0.0, "avg_f1": 0.0},
            "trained": {"avg_answer_rate": 83.3, "avg_f1": 0.0},
        }  # fmt: skip
    )
    assert "\n" not in line
    assert "0% -> 83%" in line and "not yet to find the first error" in line
    assert "bench_learning.py" in line


def test_f1_above_the_trivial_baselines_says_so(run_local: Any) -> None:
    line = run_local.learned(
        {
            "base": {"avg_answer_rate": 0.0, "avg_f1": 0.0},
            "trained": {"avg_answer_rate": 91.7, "avg_f1": 33.3},
        }  # fmt: skip
    )
    assert "F1 33.3 above the trivial baselines' 0.0" in line and "not yet" not in line


def test_no_evaluation_is_not_a_verdict(run_local: Any) -> None:
    assert "not measured" in run_local.learned({})
