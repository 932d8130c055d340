"""GSM8K perturbation: one changed calculation gives a known first-error label."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from deepcritic.data.perturb import (
    clean_step,
    iter_gsm8k,
    load_perturbed,
    parse_reference,
    perturb_step,
    perturbed_solutions,
)
from deepcritic.records import DataError

ANSWER = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18"


def test_parse_reference_and_clean() -> None:
    steps, final = parse_reference(ANSWER)
    assert final == "18" and len(steps) == 2
    assert clean_step(steps[0]) == "Janet sells 16 - 3 - 4 = 9 duck eggs a day."


def test_perturb_step_changes_only_the_value() -> None:
    out = perturb_step("She makes 9 * 2 = $<<9*2=18>>18 every day.", random.Random(1))
    assert out is not None and out.startswith("She makes 9 * 2 = $") and out.endswith(" every day.")
    assert "18" not in out and "<<" not in out
    assert perturb_step("No calculation here.", random.Random(0)) is None


def test_known_first_error_labels(tmp_path: Path) -> None:
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": ANSWER, "idx": 7}) + "\n")
    sols = list(perturbed_solutions(iter_gsm8k(path), seed=3))
    ok, bad = sols
    assert ok.label == -1 and ok.id == "gsm8k-7-ok" and ok.gold_answer == "18"
    k = bad.label
    assert bad.steps[k] != ok.steps[k]
    assert bad.steps[:k] == ok.steps[:k] and bad.steps[k + 1 :] == ok.steps[k + 1 :]
    assert bad.final_answer_correct is (k != len(ok.steps) - 1)


def test_bad_row_names_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "Q", "answer": "no final line"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: field 'answer'"):
        list(iter_gsm8k(path))


def test_real_gsm8k_test_split() -> None:
    sols = load_perturbed("test", limit=20, seed=0)
    errs = [s for s in sols if s.label >= 0]
    assert len([s for s in sols if s.label == -1]) == 20
    assert len(errs) >= 18  # nearly every reference has a calculator annotation
    for s in errs:
        assert s.meta["original"] != s.steps[s.label]
        assert all("<<" not in x for x in s.steps)


def test_checkable_pairs_are_balanced_and_the_error_can_be_recomputed() -> None:
    from deepcritic.arithmetic import find_equations
    from deepcritic.data.loaders import load_solutions

    sols, report = load_solutions("gsm8k-perturbed:test", limit=40)
    assert len(sols) == 40 and report.kept == 40
    assert sum(s.label == -1 for s in sols) == 20
    for s in sols:
        if s.label != -1:
            assert any(not eq.holds for eq in find_equations(s.steps[s.label]))
            assert s.id.startswith("gsm8k-test-") and s.id.endswith(f"-err{s.label}")
    # pairs: every problem gives its clean and its wrong solution, next to each other
    assert [s.problem for s in sols[::2]] == [s.problem for s in sols[1::2]]
    train, _ = load_solutions("gsm8k-perturbed:train", limit=10)
    assert not {s.problem for s in train} & {s.problem for s in sols}
    with pytest.raises(ValueError, match="train or test"):
        load_solutions("gsm8k-perturbed:dev")
