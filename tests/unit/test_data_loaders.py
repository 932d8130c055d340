"""Loaders for ProcessBench, MR-GSM8K and canonical JSONL, and the ``load_solutions`` dispatch."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from deepcritic.data import mrgsm8k, processbench
from deepcritic.data.loaders import PROCESSBENCH_DIR_ENV, detect_format, load_solutions
from deepcritic.records import DataError, write_jsonl

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _pb_item(i: int, **over: Any) -> dict[str, Any]:
    item = {
        "id": f"t-{i}",
        "generator": "m",
        "problem": "What is 1+1?",
        "steps": ["1+1=2.", "So the answer is 2."],
        "final_answer_correct": True,
        "label": -1,
    }
    item.update(over)
    return item


def _write_array(tmp_path: Path, items: list[Any], name: str = "bench.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_processbench_shared_files(processbench_dir: Path) -> None:
    for split, n in (("gsm8k", 400), ("math", 1000)):
        sols, report = load_solutions(f"processbench:{processbench_dir / f'{split}.json'}")
        assert (report.read, report.kept, report.skipped) == (n, n, 0)
        assert len(sols) == n and len({s.id for s in sols}) == n
        assert {s.source for s in sols} == {f"processbench:{split}"}
        assert all(-1 <= s.label < len(s.steps) for s in sols)
        assert 0 < sum(s.has_error for s in sols) < n
        assert all(isinstance(s.final_answer_correct, bool) for s in sols)


def test_processbench_split_spec_uses_env_dir(
    processbench_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PROCESSBENCH_DIR_ENV, str(processbench_dir))
    sols, report = load_solutions("processbench:gsm8k", limit=5)
    assert [s.id for s in sols] == [f"gsm8k-{i}" for i in range(5)]
    assert report.read == 5 and report.source.endswith("gsm8k.json")


def test_bare_json_path_is_detected_as_processbench(processbench_dir: Path) -> None:
    path = processbench_dir / "gsm8k.json"
    assert detect_format(path) == "processbench"
    sols, _ = load_solutions(str(path), limit=3)
    assert [s.source for s in sols] == ["processbench:gsm8k"] * 3


def test_hub_split_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown ProcessBench split"):
        processbench.load_hub("nope")


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"problem": None}, "problem", "missing"),
        ({"steps": "one step"}, "steps", "must be a list"),
        ({"steps": ["ok", 3]}, "steps[1]", "must be a string"),
        ({"label": 2}, "label", "outside [-1, 1]"),
        ({"label": "0"}, "label", "must be an integer"),
        ({"final_answer_correct": "yes"}, "final_answer_correct", "must be bool"),
    ],
)
def test_processbench_bad_rows_name_item_and_field(
    tmp_path: Path, over: dict[str, Any], field: str, reason: str
) -> None:
    item = _pb_item(1, **over)
    if over.get("problem", 0) is None:
        item.pop("problem")
    path = _write_array(tmp_path, [_pb_item(0), item])
    with pytest.raises(DataError) as err:
        processbench.load_file(path)
    assert str(path) in str(err.value) and "item 1" in str(err.value)
    assert err.value.field == field and reason in str(err.value)

    sols, report = processbench.load_file(path, skip_invalid=True)
    assert [s.id for s in sols] == ["t-0"]
    assert (report.read, report.kept, report.skipped) == (2, 1, 1)
    assert report.reasons == {f"invalid {field}": 1}


def test_processbench_jsonl_bad_json_line(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(
        json.dumps(_pb_item(0)) + "\n{not json\n" + json.dumps(_pb_item(2)) + "\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"gsm8k\.jsonl:2: invalid JSON"):
        processbench.load_file(path)
    sols, report = processbench.load_file(path, skip_invalid=True)
    assert [s.id for s in sols] == ["t-0", "t-2"]
    assert report.reasons == {"invalid JSON": 1} and report.read == 3


def test_mrgsm8k_fixture_strips_step_prefix() -> None:
    path = FIXTURES / "mrgsm8k_sample.json"
    assert detect_format(path) == "mrgsm8k"
    sols, report = load_solutions(f"mrgsm8k:{path}")
    assert report.kept == 3 and report.skipped == 0
    assert [s.id for s in sols] == ["mrgsm8k-0", "mrgsm8k-1", "mrgsm8k-2"]
    assert sols[0].steps == [
        "Tom starts with 3 apples.",
        "He buys 4 more, so 3 + 4 = <<3+4=7>>7.",
        "#### 7",
    ]
    assert [s.label for s in sols] == [-1, 1, -1]
    assert sols[1].final_answer_correct is False
    assert sols[2].problem.startswith("Sam reads")  # "question" accepted for "problem"
    assert all(s.source == "mrgsm8k" for s in sols)
    assert load_solutions(str(path))[0] == sols  # auto-detected


def test_mrgsm8k_bad_rows(tmp_path: Path) -> None:
    items = [
        {"id": 0, "problem": "p", "steps": ["Step 1: a", 7], "label": -1},
        {"id": 1, "problem": "p", "steps": ["Step 1: a"], "label": 1},
        {"id": 2, "steps": ["Step 1: a"], "label": 0},
    ]
    path = _write_array(tmp_path, items, "mr.json")
    with pytest.raises(DataError) as err:
        mrgsm8k.load_mrgsm8k(path)
    assert "item 0" in str(err.value) and err.value.field == "steps[1]"
    sols, report = mrgsm8k.load_mrgsm8k(path, skip_invalid=True)
    assert sols == []
    assert report.reasons == {"invalid steps[1]": 1, "invalid label": 1, "invalid problem": 1}


def test_mrgsm8k_released_format_keeps_an_empty_step() -> None:
    """The file as released (JSON array, int ids, ``Step i:`` prefixes); item 4 mirrors item 98 of
    the real file, whose first step is empty once ``Step 1:`` is removed. Labels index steps by
    position, so the empty step stays and the label (2 = third step) is untouched."""
    path = FIXTURES / "mrgsm8k_released_format.json"
    raw = json.loads(path.read_text())
    assert detect_format(path) == "mrgsm8k"
    sols, report = load_solutions(str(path))
    assert report.kept == len(raw) == 12 and report.skipped == 0
    empty = sols[4]
    assert empty.steps[0] == "" and len(empty.steps) == len(raw[4]["steps"]) == 5
    assert empty.label == 2 and empty.steps[2].startswith("In a year there are 12 months")
    assert empty.meta == {"empty_steps": [0], "raw_steps": raw[4]["steps"]}
    assert [s.label for s in sols] == [r["label"] for r in raw]
    assert all("empty_steps" not in s.meta for i, s in enumerate(sols) if i != 4)
    # the released bytes stay available (the reference prompt numbers those, as eval.py does)
    assert [s.meta["raw_steps"] for s in sols] == [r["steps"] for r in raw]


def test_canonical_jsonl_roundtrip_and_limit(tmp_path: Path, processbench_dir: Path) -> None:
    sols, _ = load_solutions(f"processbench:{processbench_dir / 'math.json'}", limit=20)
    path = tmp_path / "canon.jsonl"
    write_jsonl(path, sols)
    assert detect_format(path) == "jsonl"
    again, report = load_solutions(f"jsonl:{path}")
    assert again == sols and report.kept == 20
    first, report = load_solutions(str(path), limit=7)
    assert first == sols[:7] and report.read == 7


def test_canonical_jsonl_bad_row_reports_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [_pb_item(0) | {"source": "x"}, _pb_item(1, label=5) | {"source": "x"}]
    write_jsonl(path, rows)
    with pytest.raises(DataError, match=r"c\.jsonl:2: field 'label'"):
        load_solutions(f"jsonl:{path}")
    sols, report = load_solutions(f"jsonl:{path}", skip_invalid=True)
    assert len(sols) == 1 and report.reasons == {"invalid label": 1}


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_solutions(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="needs a path"):
        load_solutions("prm800k")
    with pytest.raises(ValueError, match="split"):
        load_solutions("processbench")
    with pytest.raises(FileNotFoundError):
        load_solutions(f"processbench:{tmp_path / 'nope.json'}")
    assert load_solutions(f"jsonl:{_write_array(tmp_path, [])}", limit=0)[0] == []


def test_detect_format_skips_a_broken_first_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text("{oops\n" + json.dumps(_pb_item(1) | {"source": "x"}) + "\n", encoding="utf-8")
    assert detect_format(path) == "jsonl"
    sols, report = load_solutions(str(path), skip_invalid=True)
    assert [s.id for s in sols] == ["t-1"] and report.reasons == {"invalid JSON": 1}
    empty = tmp_path / "empty.json"
    empty.write_text("{not json at all", encoding="utf-8")
    with pytest.raises(DataError, match="invalid JSON"):
        detect_format(empty)


def test_hub_path_maps_rows(processbench_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HF hub branch, with ``datasets.load_dataset`` replaced by the local copy (no network)."""
    calls: list[tuple[Any, ...]] = []
    items = json.loads((processbench_dir / "gsm8k.json").read_text(encoding="utf-8"))[:4]
    items[2] = _pb_item(2, label=9)

    def load_dataset(name: str, split: str, revision: str | None = None) -> list[dict[str, Any]]:
        calls.append((name, split, revision))
        return items

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.delenv(PROCESSBENCH_DIR_ENV, raising=False)
    with pytest.raises(DataError, match=r"hf:Qwen/ProcessBench/gsm8k item 2: field 'label'"):
        load_solutions("processbench:gsm8k")
    sols, report = load_solutions("processbench:gsm8k", skip_invalid=True, limit=2)
    assert calls[-1] == ("Qwen/ProcessBench", "gsm8k", None)
    assert [s.id for s in sols] == ["gsm8k-0", "gsm8k-1"] and report.read == 2
    assert sols[0].source == "processbench:gsm8k"


def test_bundled_processbench_slices_load_offline() -> None:
    for split in ("gsm8k", "math"):
        recs, report = load_solutions(f"processbench-slice:{split}")
        assert len(recs) == 24 and report.skipped == 0
        assert sum(r.label == -1 for r in recs) == 12
        assert all(r.source == f"processbench:{split}" for r in recs)
    with pytest.raises(FileNotFoundError, match="olympiadbench"):
        load_solutions("processbench-slice:olympiadbench")
