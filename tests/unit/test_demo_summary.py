"""The demo's one-line verdict on what the trained critic learned (pipelines/run_local.learned)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from support.paths import ROOT
from support.scripts import load_script


@pytest.fixture(scope="module")
def run_local() -> Iterator[Any]:
    sys.path.insert(0, str(ROOT / "pipelines"))  # run_local imports local_topology as a sibling
    yield load_script(ROOT / "pipelines" / "run_local.py", "run_local")
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
