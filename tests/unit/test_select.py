"""Choosing evaluation items: balanced by a seeded shuffle, never by file order alone."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepcritic.data.select import balanced_slice, select_items
from deepcritic.records import Solution
from deepcritic.stages.evaluate import EvalConfig

solutions = st.lists(st.tuples(st.integers(-1, 5), st.integers(1, 8)), max_size=40).map(
    lambda rows: [
        Solution(id=f"s{i:03d}", problem="p", steps=["x"] * n, label=min(label, n - 1))
        for i, (label, n) in enumerate(rows)
    ]
)


@given(solutions, st.integers(0, 30), st.integers(0, 3), st.none() | st.integers(1, 8))
def test_balanced_slice_is_half_and_half_within_the_step_cap(
    items: list[Solution], n: int, seed: int, max_steps: int | None
) -> None:
    chosen = balanced_slice(items, n, seed, max_steps)
    assert len(chosen) <= n
    assert len({s.id for s in chosen}) == len(chosen)
    assert all(max_steps is None or len(s.steps) <= max_steps for s in chosen)
    assert [s.id for s in chosen] == sorted(s.id for s in chosen)
    eligible = [s for s in items if max_steps is None or len(s.steps) <= max_steps]
    wrong = sum(s.has_error for s in eligible)
    right = len(eligible) - wrong
    got_wrong = sum(s.has_error for s in chosen)
    assert got_wrong == min(wrong, n - n // 2)
    assert len(chosen) - got_wrong == min(right, n // 2)
    assert chosen == balanced_slice(items, n, seed, max_steps)  # seeded: reproducible


def test_file_sorted_by_label_still_gives_both_kinds() -> None:
    wrong = [Solution(id=f"a{i}", problem="p", steps=["x", "y"], label=0) for i in range(10)]
    right = [Solution(id=f"b{i}", problem="p", steps=["x", "y"]) for i in range(10)]
    first = select_items(wrong + right, "first", 6, seed=0)
    assert all(s.has_error for s in first)  # what file order gives: F1 0 by construction
    balanced = select_items(wrong + right, "balanced", 6, seed=0)
    assert sum(s.has_error for s in balanced) == 3 and len(balanced) == 6


def test_evaluate_config_names_a_bad_selection() -> None:
    with pytest.raises(ValueError, match="select"):
        EvalConfig(select="random")
    with pytest.raises(ValueError, match="max_steps"):
        EvalConfig(max_steps=0)
