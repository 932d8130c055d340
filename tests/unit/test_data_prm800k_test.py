"""``prm800k-test:``: PRM800K test as the DeepCritic authors evaluate it, from their processed file
(ProcessBench layout) or derived from OpenAI's raw ``phase2_test.jsonl`` (fixture rows in that
layout, one per rule of the derivation)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from deepcritic.data import prm800k_test
from deepcritic.data.loaders import load_solutions
from deepcritic.records import DataError
from deepcritic.scoring import read_predictions, score_with_coverage

FIXTURE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "data" / "prm800k_phase2_test_sample.jsonl"
)


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def test_raw_file_is_derived_as_the_authors_layout() -> None:
    sols, report = load_solutions(f"prm800k-test:{FIXTURE}")
    assert (report.read, report.kept, report.skipped) == (8, 3, 5)
    assert report.reasons == {
        "solution already labelled (another labeller)": 1,
        "quality-control question": 1,
        "initial screening question": 1,
        "no step rated -1 but the final answer is not the ground truth": 1,
        "finish_reason give_up": 1,
    }
    rows = _rows()
    first, correct, late = sols
    # the first labeller's trajectory (line 1), the whole pre-generated solution past the error
    assert first.steps == rows[0]["question"]["pre_generated_steps"] and first.label == 1
    assert first.meta["labeler"] == "labeler-a" and first.final_answer_correct is False
    assert correct.label == -1 and correct.final_answer_correct is True  # a 0 rating is correct
    assert late.label == 1 and late.final_answer_correct is True  # 0 then -1: the -1 step
    assert [s.id for s in sols] == [
        "prm800k-prm800k_phase2_test_sample-1",
        "prm800k-prm800k_phase2_test_sample-3",
        "prm800k-prm800k_phase2_test_sample-7",
    ]
    assert all(s.source == "prm800k-test" for s in sols)


def test_cut_at_error_keeps_the_steps_up_to_the_first_error() -> None:
    sols, _ = prm800k_test.load_prm800k_test(FIXTURE, cut_at_error=True)
    first, correct, late = sols
    assert first.steps == _rows()[0]["question"]["pre_generated_steps"][:2]
    assert len(correct.steps) == 4 and len(late.steps) == 2


def test_the_plain_prm800k_loader_keeps_what_the_test_mode_drops() -> None:
    sols, report = load_solutions(f"prm800k:{FIXTURE}")
    assert report.kept == 6  # the duplicate, the QC row and the wrong-answer row stay there


def _processed(tmp_path: Path, items: list[dict[str, Any]]) -> Path:
    path = tmp_path / "phase2_test.json"
    path.write_text(json.dumps(items, indent=2), encoding="utf-8")
    return path


ITEMS = [
    {"id": 0, "problem": "p0", "steps": ["a", "Step 2: b"], "label": 1},
    {"id": 1, "problem": "p1", "steps": ["a "], "label": -1, "final_answer_correct": True},
    {"id": 2, "problem": "p2", "steps": ["a", "b", "c"], "label": 0, "generator": "g"},
]


def test_the_authors_processed_file_is_read_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _processed(tmp_path, ITEMS)
    with caplog.at_level(logging.WARNING):
        sols, report = load_solutions(f"prm800k-test:{path}")
    assert "is not the authors'" in caplog.text  # provenance: a git blob id other than theirs
    assert report.kept == 3 and [s.label for s in sols] == [1, -1, 0]
    assert [s.steps for s in sols] == [it["steps"] for it in ITEMS]  # verbatim, no stripping
    assert [s.id for s in sols] == ["prm800k-test-0", "prm800k-test-1", "prm800k-test-2"]
    assert [s.meta["source_id"] for s in sols] == [0, 1, 2]
    assert [s.final_answer_correct for s in sols] == [None, True, None]
    assert sols[2].generator == "g"
    no_ids = _processed(tmp_path, [{k: v for k, v in it.items() if k != "id"} for it in ITEMS])
    assert [s.id for s in load_solutions(f"prm800k-test:{no_ids}")[0]] == [
        "prm800k-test-0",
        "prm800k-test-1",
        "prm800k-test-2",
    ]


def test_git_blob_id_is_gits(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"hello\n")  # `printf 'hello\n' | git hash-object --stdin`
    assert prm800k_test.git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_predictions_keyed_by_the_processed_files_own_ids_score(tmp_path: Path) -> None:
    path = _processed(tmp_path, ITEMS)
    sols, _ = load_solutions(f"prm800k-test:{path}")
    preds = tmp_path / "preds.jsonl"
    rows = [{"id": 0, "prediction": 1}, {"id": 1, "prediction": 0}, {"id": 2, "prediction": 0}]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics, cov = score_with_coverage(sols, read_predictions(preds))
    assert cov.matched == 3 and cov.extra == 0
    assert (metrics.acc_error, metrics.acc_correct) == (100.0, 0.0)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"id": 0, "steps": ["a"], "label": -1}, "problem"),
        ({"id": [0], "problem": "p", "steps": ["a"], "label": -1}, "id"),
        ({"id": 0, "problem": "p", "steps": ["a"], "label": 3}, "label"),
    ],
)
def test_bad_processed_items_name_the_field(
    tmp_path: Path, item: dict[str, Any], field: str
) -> None:
    with pytest.raises(DataError) as err:
        prm800k_test.load_prm800k_test(_processed(tmp_path, [item]))
    assert err.value.field == field and "item 0" in str(err.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="PRM800K test file"):
        load_solutions(f"prm800k-test:{tmp_path / 'none.json'}")
