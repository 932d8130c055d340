"""The canonical record and its JSONL reader: bad input names file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic.records import DataError, LoadReport, Solution, read_solutions, write_jsonl

GOOD = {
    "id": "a",
    "problem": "1+1?",
    "steps": ["1+1=2", "so 2"],
    "label": -1,
    "final_answer_correct": True,
}


def test_roundtrip(tmp_path: Path) -> None:
    rec = Solution.from_dict({**GOOD, "gold_answer": 2, "source": "s", "meta": {"x": 1}})
    assert rec.gold_answer == "2" and not rec.has_error
    write_jsonl(tmp_path / "r.jsonl", [rec])
    assert read_solutions(tmp_path / "r.jsonl") == [rec]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"id": ""}, "id"),
        ({"problem": 3}, "problem"),
        ({"steps": []}, "steps"),
        ({"steps": ["a", 2]}, "steps[1]"),
        ({"label": 2}, "label"),
        ({"label": -2}, "label"),
        ({"label": True}, "label"),
        ({"final_answer_correct": "yes"}, "final_answer_correct"),
    ],
)
def test_bad_rows_raise_with_line_and_field(tmp_path: Path, patch: dict, field: str) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **patch}) + "\n")
    with pytest.raises(DataError) as e:
        read_solutions(p)
    assert (e.value.line, e.value.field) == (2, field)
    assert f"r.jsonl:2: field '{field}'" in str(e.value)


def test_missing_field_and_bad_json(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    row = dict(GOOD)
    del row["problem"]
    p.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match="'problem' is missing"):
        read_solutions(p)
    p.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(DataError, match=r"r\.jsonl:2: invalid JSON"):
        read_solutions(p)


def test_skip_invalid_counts_everything(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(
        "\n".join(
            [
                json.dumps(GOOD),
                "{bad",
                json.dumps({**GOOD, "label": 7}),
                json.dumps({**GOOD, "id": "b"}),
            ]
        )
    )
    report = LoadReport("r")
    recs = read_solutions(p, skip_invalid=True, report=report)
    assert [r.id for r in recs] == ["a", "b"]
    assert (report.read, report.kept, report.skipped) == (4, 2, 2)
    assert report.reasons == {"invalid JSON": 1, "invalid label": 1}
