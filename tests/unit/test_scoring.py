"""ProcessBench formula, voting, predictions files and the `deepcritic score` command."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepcritic.records import DataError, Solution
from deepcritic.scoring import (
    compute_metrics,
    harmonic_f1,
    majority_vote,
    match_predictions,
    read_predictions,
    score_records,
    vote_outputs,
)


def test_metrics_by_hand() -> None:
    labels = [2, 0, -1, -1, 1]
    preds = [2, 1, -1, None, 1]
    m = compute_metrics(labels, preds)
    assert (m.n, m.n_error, m.n_correct) == (5, 3, 2)
    assert m.acc_error == pytest.approx(200 / 3)
    assert m.acc_correct == pytest.approx(50.0)
    assert m.f1 == pytest.approx(2 * (200 / 3) * 50 / (200 / 3 + 50))


def test_f1_zero_when_either_is_zero() -> None:
    assert compute_metrics([-1, 2], [-1, None]).f1 == 0.0
    assert harmonic_f1(0.0, 100.0) == 0.0


@given(
    st.lists(st.tuples(st.integers(-1, 5), st.one_of(st.none(), st.integers(-1, 5))), min_size=1)
)
def test_metrics_bounds(pairs: list[tuple[int, int | None]]) -> None:
    m = compute_metrics([y for y, _ in pairs], [p for _, p in pairs])
    assert 0 <= m.acc_error <= 100 and 0 <= m.acc_correct <= 100
    assert min(m.acc_error, m.acc_correct) <= m.f1 + 1e-9 <= max(m.acc_error, m.acc_correct) + 2e-9


def test_majority_vote_ties_go_to_first_seen() -> None:
    assert majority_vote([3, -1, -1, 3]) == 3
    assert majority_vote([-1, 3, 3, -1]) == -1
    assert majority_vote([None, None, 2]) == 2
    assert majority_vote([None]) is None
    assert majority_vote([1, 2, 2]) == 2


def test_vote_outputs_drops_unparsable_and_optionally_unmarked() -> None:
    outs = ["**Answer**: \\boxed{2}", "no box", "\\boxed{3}", "\\boxed{3}"]
    assert vote_outputs(outs) == 2  # labels 1, 2, 2 -> 2 (0-based of step 3)
    assert vote_outputs(outs, require_marker=True) == 1


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_read_predictions_all_three_shapes(tmp_path: Path) -> None:
    p = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "prediction": 2},
            {"id": "b", "prediction": None},
            {"id": "c", "output": "**Answer**: \\boxed{1}"},
            {"id": "d", "outputs": ["**Answer**: \\boxed{-1}", "x", "**Answer**: \\boxed{-1}"]},
        ],
    )
    assert read_predictions(p) == {"a": 2, "b": None, "c": 0, "d": -1}


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"prediction": 1}, "id"),
        ({"id": "a", "prediction": "2"}, "prediction"),
        ({"id": "a", "prediction": 1.5}, "prediction"),
        ({"id": "a", "output": 3}, "output"),
        ({"id": "a", "outputs": "x"}, "outputs"),
        ({"id": "a"}, "prediction"),
    ],
)
def test_bad_prediction_rows_name_line_and_field(tmp_path: Path, row: dict, field: str) -> None:
    p = _write(tmp_path / "p.jsonl", [{"id": "ok", "prediction": 0}, row])
    with pytest.raises(DataError) as e:
        read_predictions(p)
    assert e.value.line == 2 and e.value.field == field and "p.jsonl:2" in str(e.value)


def test_duplicate_id_is_an_error(tmp_path: Path) -> None:
    p = _write(tmp_path / "p.jsonl", [{"id": "a", "prediction": 0}, {"id": "a", "prediction": 1}])
    with pytest.raises(DataError, match="duplicate"):
        read_predictions(p)


def test_missing_ids_count_as_wrong() -> None:
    recs = [
        Solution(id=str(i), problem="p", steps=["a", "b"], label=lab)
        for i, lab in enumerate([1, -1])
    ]
    m = score_records(recs, {"0": 1})
    assert m.acc_error == 100.0 and m.acc_correct == 0.0 and m.f1 == 0.0


def test_score_cli_official_parser_reads_as_eval_py(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepcritic.cli import main

    bench = tmp_path / "bench.json"
    items = [
        {
            "id": "a",
            "generator": "",
            "problem": "p",
            "steps": ["s1", "s2", "s3"],
            "final_answer_correct": False,
            "label": 2,
        },
        {
            "id": "b",
            "generator": "",
            "problem": "p",
            "steps": ["s1", "s2"],
            "final_answer_correct": True,
            "label": -1,
        },
    ]
    bench.write_text(json.dumps(items))
    preds = tmp_path / "preds.jsonl"
    rows = [
        {"id": "a", "output": "**Answer**: \\boxed{3} ... \\boxed{2}"},  # official: 2 (wrong)
        {"id": "b", "outputs": ["\\boxed{-1}", "\\boxed{ -1 }", "\\boxed{$-1$}"]},
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["score", "--benchmark", str(bench), "--predictions", str(preds)]
    assert main([*args, "--parser", "strict"]) == 0
    strict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert strict["acc_error"] == 100.0 and strict["acc_correct"] == 100.0
    assert main([*args, "--parser", "official"]) == 0
    official = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert official["acc_error"] == 0.0 and official["acc_correct"] == 100.0


MRGSM8K_RELEASED = Path(__file__).parents[1] / "fixtures" / "data" / "mrgsm8k_released_format.json"


def _released_preds(tmp_path: Path, key: Callable[[dict[str, Any]], Any]) -> Path:
    items = json.loads(MRGSM8K_RELEASED.read_text())
    preds = tmp_path / "preds.jsonl"
    preds.write_text(
        "".join(json.dumps({"id": key(it), "prediction": it["label"]}) + "\n" for it in items)
    )
    return preds


@pytest.mark.parametrize("key", [lambda it: it["id"], lambda it: f"mrgsm8k-{it['id']}"])
def test_mrgsm8k_predictions_keyed_by_the_files_own_ids_score_in_full(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: Callable[[dict[str, Any]], Any]
) -> None:
    from deepcritic.cli import main

    preds = _released_preds(tmp_path, key)
    args = ["score", "--benchmark", f"mrgsm8k:{MRGSM8K_RELEASED}", "--predictions", str(preds)]
    assert main(args) == 0
    out = capsys.readouterr()
    got = json.loads(out.out.strip().splitlines()[-1])
    assert got["n"] == 12 and got["f1"] == 100.0
    assert "missing" not in out.err


def test_no_overlap_is_an_error_naming_expected_and_given_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepcritic.cli import main

    preds = _released_preds(tmp_path, lambda it: f"gsm8k-{it['id']}")
    args = ["score", "--benchmark", f"mrgsm8k:{MRGSM8K_RELEASED}", "--predictions", str(preds)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no prediction id matches" in err and "'mrgsm8k-0'" in err and "'0'" in err
    assert "'gsm8k-0'" in err and "(12 in all)" in err


def test_partial_overlap_is_reported_with_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepcritic.cli import main

    items = json.loads(MRGSM8K_RELEASED.read_text())
    preds = tmp_path / "preds.jsonl"
    rows = [{"id": it["id"], "prediction": it["label"]} for it in items[:9]] + [
        {"id": "nope", "prediction": 1}
    ]
    preds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["score", "--benchmark", f"mrgsm8k:{MRGSM8K_RELEASED}", "--predictions", str(preds)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert (
        "9 of 12 items have a prediction (3 missing" in err and "1 predictions name no item" in err
    )


def test_shared_aliases_are_ignored_but_own_ids_still_match() -> None:
    recs = [
        Solution(id="a-1", problem="p", steps=["s"], label=-1, source="a"),
        Solution(id="b-1", problem="p", steps=["s"], label=0, source="b"),
    ]
    preds, cov = match_predictions(recs, {"1": -1, "b-1": 0})
    assert preds == [None, 0] and cov.matched == 1 and cov.extra == 1


def _f1_by_hand(labels: list[int], preds: list[int | None]) -> float:
    """ProcessBench's formula, written out independently of scoring.compute_metrics."""
    err = [p == y for y, p in zip(labels, preds, strict=True) if y != -1]
    cor = [p == -1 for y, p in zip(labels, preds, strict=True) if y == -1]
    a, b = 100 * sum(err) / len(err), 100 * sum(cor) / len(cor)
    return 0.0 if a == 0 or b == 0 else 2 * a * b / (a + b)


def test_score_cli_on_released_mrgsm8k_keyed_by_its_own_ids_gives_the_right_f1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Predictions as a user writes them from the released file: its int ids, some right, some
    wrong, one unreadable, one item without a prediction (wrong)."""
    from deepcritic.cli import main

    items = json.loads(MRGSM8K_RELEASED.read_text())
    labels = [it["label"] for it in items]
    preds: list[int | None] = [
        y if i % 3 else (0 if y == -1 else -1) for i, y in enumerate(labels)
    ]  # every third item wrong
    preds[1], preds[-1] = None, None
    rows = [{"id": it["id"], "prediction": p} for it, p in zip(items, preds, strict=True)][:-1]
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["score", "--benchmark", f"mrgsm8k:{MRGSM8K_RELEASED}", "--predictions", str(path)]
    assert main(args) == 0
    out = capsys.readouterr()
    got = json.loads(out.out.strip().splitlines()[-1])
    expected = _f1_by_hand(labels, preds)
    assert 0 < expected < 100 and got["f1"] == pytest.approx(expected)
    assert got["n"] == len(items)
    assert f"{len(items) - 1} of {len(items)} items have a prediction (1 missing" in out.err


def test_every_loader_accepts_its_files_own_ids(tmp_path: Path) -> None:
    """ProcessBench ids are kept; MR-GSM8K's int ids and CHAMP's ``<problem>-<annotation>`` are
    aliases of the package ids; PRM800K raw rows have no id of their own (line-based ids)."""
    from deepcritic.data.loaders import load_solutions
    from deepcritic.data.processbench import bundled_slice
    from deepcritic.scoring import record_keys

    own = [it["id"] for it in json.loads(bundled_slice("gsm8k").read_text())]
    pb, _ = load_solutions("processbench-slice:gsm8k")
    assert [r.id for r in pb] == own
    preds, cov = match_predictions(pb, {i: -1 for i in own})
    assert cov.matched == len(own) and cov.extra == 0
    champ, _ = load_solutions("champ", limit=3)
    keys = {f"{r.meta['problem_id']}-{r.meta['annotation']}": r.label for r in champ}
    preds, cov = match_predictions(champ, keys)
    assert cov.matched == 3 and preds == [r.label for r in champ]
    mr = Solution(id="mrgsm8k-7", problem="p", steps=["s"], source="mrgsm8k")
    assert record_keys(mr) == ("mrgsm8k-7", "7")
