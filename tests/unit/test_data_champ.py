"""CHAMP first-wrong-step annotations: the real package file and hand-made bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deepcritic.data.champ import (
    _read_problems,
    default_path,
    load_champ,
    paragraph_spans,
    span_to_step,
)
from deepcritic.data.loaders import detect_format, load_solutions
from deepcritic.records import DataError


@pytest.fixture(scope="module")
def champ() -> list[Any]:
    return load_solutions("champ")[0]


def test_real_file_counts(champ: list[Any]) -> None:
    assert len(champ) == 540
    assert sum(s.label == -1 for s in champ) == 96
    assert all(-1 <= s.label < len(s.steps) for s in champ)
    assert len({s.id for s in champ}) == 540
    assert len({s.problem for s in champ}) == 270
    assert all(s.steps and all(step.strip() == step and step for step in s.steps) for s in champ)
    assert all("@@" not in s.problem for s in champ)
    assert {s.generator for s in champ} == {"GPT-3.5", "GPT-4", "GPT-4 Turbo", "PaLM 2 Medium"}


def test_real_spans_land_in_their_step(champ: list[Any]) -> None:
    path = default_path()
    raw = _read_problems(str(path), path.stat().st_mtime_ns, path.stat().st_size)
    for s in champ:
        if s.label == -1:
            continue
        start, end = s.meta["span"]
        pid, key = s.meta["problem_id"], s.meta["annotation"]
        text = raw[pid]["fws_annotations"][key]["text"]
        first_words = text[start:end].strip().split("\n")[0][:20].strip()
        assert first_words in s.steps[s.label], s.id
    assert champ[0].gold_answer == raw["P_Combinatorics_1"]["_answer"]


def test_report_and_limit() -> None:
    path = default_path()
    assert detect_format(path) == "champ"
    sols, report = load_champ(limit=5)
    assert len(sols) == 5 and report.read == 5 and report.skipped == 0
    assert sols[0].id == "champ-P_Combinatorics_1-GPT-3.5|No C w/o H"


def test_paragraph_rule() -> None:
    text = "First step.\nstill first.\n\n  \nSecond step.\n\n\nThird."
    spans = paragraph_spans(text)
    assert [text[s:e].strip() for s, e in spans] == [
        "First step.\nstill first.",
        "Second step.",
        "Third.",
    ]
    assert span_to_step(spans, text.index("still")) == 0
    assert span_to_step(spans, text.index("\n\n  ")) == 1  # a gap belongs to the next step
    assert span_to_step(spans, text.index("Third")) == 2
    assert span_to_step(spans, len(text)) is None
    assert span_to_step(spans, -1) is None


def _champ_file(tmp_path: Path, annotations: dict[str, Any]) -> Path:
    data = {
        "problems": {"P_1": {"_text": "Find x.", "_answer": "2", "fws_annotations": annotations}}
    }
    path = tmp_path / "v0.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("ann", "field"),
    [
        ({"start_idx": None, "end_idx": None, "author": "m"}, "text"),
        ({"text": "a\n\nb", "start_idx": 1, "end_idx": None, "author": "m"}, "end_idx"),
        ({"text": "a\n\nb", "start_idx": "3", "end_idx": 4, "author": "m"}, "start_idx"),
        ({"text": "a\n\nb", "start_idx": 40, "end_idx": 44, "author": "m"}, "start_idx"),
        ({"text": "a\n\nb", "start_idx": 3, "end_idx": 1, "author": "m"}, "end_idx"),
        ({"text": "a\n\nb", "start_idx": None, "end_idx": None}, "author"),
        ({"text": " \n\n ", "start_idx": None, "end_idx": None, "author": "m"}, "text"),
    ],
)
def test_bad_annotations(tmp_path: Path, ann: dict[str, Any], field: str) -> None:
    good = {"text": "x = 1.\n\nSo x = 2.", "start_idx": 8, "end_idx": 16, "author": "m"}
    path = _champ_file(tmp_path, {"ok": good, "bad": ann})
    with pytest.raises(DataError) as err:
        load_champ(path)
    assert err.value.field == field
    assert "problems[P_1].fws_annotations[bad]" in str(err.value) and str(path) in str(err.value)
    sols, report = load_champ(path, skip_invalid=True)
    assert [s.label for s in sols] == [1]
    assert report.reasons == {f"invalid {field}": 1} and report.read == 2


def test_bad_problem_and_file(tmp_path: Path) -> None:
    path = tmp_path / "v0.json"
    path.write_text(json.dumps({"problems": {"P_1": {"fws_annotations": {}}}}), encoding="utf-8")
    with pytest.raises(DataError, match=r"problems\[P_1\]: field '_text' is missing"):
        load_champ(path)
    path.write_text("{broken", encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        load_champ(path)
