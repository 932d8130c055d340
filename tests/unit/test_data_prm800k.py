"""PRM800K raw-label JSONL -> step-labelled solutions (fixture in the openai/prm800k schema)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from deepcritic.data.loaders import detect_format, load_solutions
from deepcritic.data.prm800k import load_prm800k
from deepcritic.records import DataError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "prm800k_sample.jsonl"


def _rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines()]


def _write(tmp_path: Path, rows: list[Any]) -> Path:
    path = tmp_path / "phase2_test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_fixture_labels_and_counts() -> None:
    assert detect_format(FIXTURE) == "prm800k"
    sols, report = load_solutions(f"prm800k:{FIXTURE}")
    assert (report.read, report.kept, report.skipped) == (6, 3, 3)
    assert report.reasons == {
        "finish_reason give_up": 1,
        "finish_reason bad_problem": 1,
        "initial screening question": 1,
    }
    solved, found, phase1_error = sols
    # chosen completions, then the human completion (all completions were -1), then the answer
    assert solved.steps == [
        "Multiplication comes first: $3\\cdot 4=12$.",
        "Then I add 2.",
        "$2+12=14$.",
        "# Answer\n\n14",
    ]
    assert solved.label == -1 and solved.final_answer_correct is True
    assert solved.meta["human_steps"] == 1 and solved.gold_answer == "14"
    assert solved.id == "prm800k-prm800k_sample-1" and solved.source == "prm800k:prm800k_sample"


def test_found_error_keeps_full_phase2_solution() -> None:
    found = load_prm800k(FIXTURE)[0][1]
    question = _rows()[1]["question"]
    assert found.steps == question["pre_generated_steps"]  # the labelled steps are its prefix
    assert found.label == 1  # second step: chosen null, its completion rated -1
    assert found.meta["labelled_steps"] == 2
    assert found.final_answer_correct is False  # pre_generated_answer 3 != ground truth 6


def test_chosen_minus_one_is_the_first_error_and_truncates() -> None:
    phase1_error = load_prm800k(FIXTURE)[0][2]
    assert phase1_error.steps == ["Subtract 1 from both sides.", "$x = 4$."]
    assert phase1_error.label == 1 and phase1_error.final_answer_correct is None


def test_rating_zero_counts_as_correct(tmp_path: Path) -> None:
    row = _rows()[0]
    for step in row["label"]["steps"]:
        for c in step["completions"]:
            c["rating"] = 0 if c["rating"] == 1 else c["rating"]
    sols, _ = load_prm800k(_write(tmp_path, [row]))
    assert sols[0].label == -1


def test_limit_stops_reading() -> None:
    sols, report = load_prm800k(FIXTURE, limit=2)
    assert len(sols) == 2 and report.read == 2


def _mutate(path: list[Any], value: Any) -> dict[str, Any]:
    row = copy.deepcopy(_rows()[1])
    obj: Any = row
    for key in path[:-1]:
        obj = obj[key]
    if value is KeyError:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value
    return row


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["question", "problem"], KeyError, "question.problem"),
        (["question"], "text", "question"),
        (["question", "ground_truth_answer"], 6, "question.ground_truth_answer"),
        (["label", "finish_reason"], KeyError, "label.finish_reason"),
        (["label", "finish_reason"], "done", "label.finish_reason"),
        (["label", "finish_reason"], "solution", "label.finish_reason"),
        (["label", "steps"], [], "label.steps"),
        (["label", "steps", 0], "step", "label.steps[0]"),
        (["label", "steps", 0, "chosen_completion"], 3, "label.steps[0].chosen_completion"),
        (
            ["label", "steps", 0, "completions", 0, "rating"],
            2,
            "label.steps[0].completions[0].rating",
        ),
        (
            ["label", "steps", 0, "completions", 0, "rating"],
            None,
            "label.steps[0].completions[0].rating",
        ),
        (["label", "steps", 0, "completions", 0, "text"], 5, "label.steps[0].completions[0].text"),
        (["label", "steps", 1, "completions", 0, "rating"], 0, "label.steps[1].chosen_completion"),
        (
            ["label", "steps", 1, "human_completion"],
            {"text": ""},
            "label.steps[1].human_completion",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(
    tmp_path: Path, path: list[Any], value: Any, field: str
) -> None:
    good = _rows()[2]
    file = _write(tmp_path, [good, _mutate(path, value)])
    with pytest.raises(DataError) as err:
        load_prm800k(file)
    assert err.value.field == field
    assert f"{file}:2: field '{field}'" in str(err.value)
    sols, report = load_prm800k(file, skip_invalid=True)
    assert len(sols) == 1 and report.reasons == {f"invalid {field}": 1}


def test_found_error_without_minus_one_is_rejected(tmp_path: Path) -> None:
    row = _rows()[2]
    row["label"]["steps"][1]["chosen_completion"] = 1  # the +1 alternative
    with pytest.raises(DataError, match="'found_error' but no step is rated -1"):
        load_prm800k(_write(tmp_path, [row]))


def test_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(FIXTURE.read_text(encoding="utf-8") + "{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"p\.jsonl:7: invalid JSON"):
        load_prm800k(path)
    sols, report = load_prm800k(path, skip_invalid=True)
    assert len(sols) == 3 and report.reasons["invalid JSON"] == 1 and report.read == 7
