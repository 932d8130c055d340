"""The paper-numbers file and the comparison beside it: sources, rows, n/a (never 0), bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deepcritic.config import load_config, presets_dir
from deepcritic.stages import paper_compare as pc
from deepcritic.stages.evaluate import EvalConfig

PACKAGED = "paper/results.yaml"
COLUMNS = ["mrgsm8k", "prm800k-test", "processbench-gsm8k", "processbench-math",
           "processbench-olympiadbench", "processbench-omnimath"]  # fmt: skip


def test_the_packaged_file_names_its_source_and_the_known_averages() -> None:
    data = pc.load_results(PACKAGED)
    assert data["source"]["arxiv"] == "2505.00662" and data["source"]["version"] == "v1"
    assert "Table" in data["source"]["table"]
    assert list(data["columns"]) == COLUMNS
    avg = {(r, s): c["avg"] for r, row in data["rows"].items() for s, c in row["settings"].items()}
    assert avg[("qwen2.5-7b-instruct", "single")] == 34.1
    assert avg[("deepcritic-7b-sft", "single")] == 54.1
    assert avg[("deepcritic-7b-rl-prm800k", "single")] == 67.1
    assert avg[("deepcritic-7b-rl-prm800k", "maj@8")] == 70.5
    for row in data["rows"].values():  # every cell present: a number or an explicit null
        for cells in row["settings"].values():
            assert sorted(cells["f1"]) == sorted(COLUMNS)


def test_the_paper_reference_preset_points_at_the_packaged_file() -> None:
    cfg = load_config(EvalConfig, presets_dir() / "evaluate.paper-reference.yaml")
    assert cfg.paper_results == PACKAGED and pc.results_path(cfg.paper_results).is_file()
    assert set(b.name for b in cfg.suite()) == set(COLUMNS)
    assert (cfg.parser, cfg.prompt_set, cfg.generation.kind) == ("official", "reference", "vllm")
    s = cfg.sampling()
    assert (s.n, s.temperature, s.top_p, s.max_tokens, s.seed) == (1, 0.6, 0.9, 32768, 42)
    cfg.samples = 8
    s = cfg.sampling()
    assert (s.n, s.temperature, s.top_p, s.max_tokens, s.seed) == (8, 1.0, 0.9, 32768, 42)


@pytest.mark.parametrize(
    ("model", "row"),
    [
        ("Keven16/DeepCritic-7B-RL-PRM800K", "deepcritic-7b-rl-prm800k"),
        ("hf://Keven16/DeepCritic-7B-SFT", "deepcritic-7b-sft"),
        ("/models/deepcritic-7b-rl-numina/", "deepcritic-7b-rl-numina"),
        ("Qwen/Qwen2.5-7B-Instruct", "qwen2.5-7b-instruct"),
        ("models:/deepcritic@champion", None),
        ("tiny", None),
    ],
)
def test_rows_are_picked_by_model_id(model: str, row: str | None) -> None:
    assert pc.pick_row(pc.load_results(PACKAGED), model) == row


def test_an_unknown_row_is_an_error_listing_the_rows() -> None:
    with pytest.raises(ValueError, match=r"paper_row: 'nope'.*deepcritic-7b-sft"):
        pc.pick_row(pc.load_results(PACKAGED), "x", "nope")
    with pytest.raises(ValueError, match="paper_row: set paper_results"):
        EvalConfig(paper_row="deepcritic-7b-sft")


def _reference(
    tmp_path: Path, cells: dict[str, float | None], avg: float | None
) -> pc.PaperReference:
    data = {"source": {"arxiv": "x"}, "columns": {c: c.upper() for c in COLUMNS},
            "rows": {"r": {"label": "R", "models": ["o/m"],
                           "settings": {"single": {"f1": cells, "avg": avg}}}}}  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    ref = pc.paper_reference(str(path), "o/m", 1)
    assert ref is not None
    return ref


def test_diffs_where_the_paper_has_a_number_and_na_elsewhere(tmp_path: Path) -> None:
    ref = _reference(tmp_path, {"mrgsm8k": 60.0, "processbench-math": None}, 50.0)
    scored = [("mrgsm8k", "mrgsm8k:/d/test.json", 10, 62.5),
              ("processbench-slice-math", "processbench-slice:math", 4, 0.0),
              ("own", "gsm8k-perturbed:test", 4, 30.0)]  # fmt: skip
    cmp = ref.compare(scored, ours_avg=30.8)
    by = {x.benchmark: x for x in cmp.lines}
    assert by["mrgsm8k"].diff == 2.5 and by["processbench-slice-math"].column == "processbench-math"
    assert by["processbench-slice-math"].paper is None and by["own"].column is None
    assert cmp.avg_diff is None and not cmp.avg_comparable  # 2 of the 6 columns only
    assert cmp.metrics() == {"paper/mrgsm8k": 60.0, "paper_diff/mrgsm8k": 2.5, "paper/avg_f1": 50.0}
    text = cmp.table()
    row = next(ln for ln in text.splitlines() if ln.startswith("processbench-slice-math"))
    assert row.split()[-2:] == ["n/a", "n/a"]  # the paper's cell and the diff: never 0
    assert "+2.5" in text and "50.0 (of 6)" in text
    assert cmp.to_dict()["benchmarks"][1]["diff"] is None


def test_the_average_is_compared_when_all_six_ran(tmp_path: Path) -> None:
    ref = _reference(tmp_path, dict.fromkeys(COLUMNS, 50.0), 50.0)
    cmp = ref.compare([(c, c, 5, 40.0) for c in COLUMNS], ours_avg=40.0)
    assert cmp.avg_comparable and cmp.avg_diff == -10.0
    assert cmp.metrics()["paper_diff/avg_f1"] == -10.0


def test_a_setting_the_paper_lacks_is_all_na_with_a_note(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    _reference(tmp_path, {"mrgsm8k": 60.0}, 50.0)
    ref = pc.paper_reference(str(path), "o/m", 4)
    assert ref is not None and ref.setting == "maj@4"
    cmp = ref.compare([("mrgsm8k", "mrgsm8k:x", 3, 10.0)], 10.0)
    assert cmp.lines[0].paper is None and cmp.metrics() == {}
    assert any("no maj@4" in n for n in cmp.notes)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["rows"]["r"]["settings"]["single"]["f1"].update(mrgsm8k="67"), "f1.mrgsm8k"),
        (lambda d: d["rows"]["r"]["settings"]["single"].update(avg=True), "single.avg"),
        (lambda d: d["rows"]["r"]["settings"]["single"]["f1"].update(gsm8k=1.0), "not in columns"),
        (lambda d: d.pop("rows"), "'rows'"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, edit: object, message: str) -> None:
    data = {"columns": {"mrgsm8k": "MR-GSM8K"},
            "rows": {"r": {"models": [], "settings": {"single": {"f1": {}, "avg": None}}}}}  # fmt: skip
    edit(data)  # type: ignore[operator]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=message):
        pc.load_results(str(path))
    with pytest.raises(FileNotFoundError, match="paper_results"):
        pc.load_results(str(tmp_path / "missing.yaml"))
