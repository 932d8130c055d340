"""`deepcritic eval --preset paper-reference` end to end on CPU: the preset's benchmarks replaced by
the bundled slices, the tiny model on the hf backend. The authors' files come from an input cache
seeded from ``../shared/reference/deepcritic`` (any download fails the test); MLflow is a SQLite
store in tmp. Checks: the reference prompt and the official parser were used, the paper's settings
reached the run, and the table beside the paper's numbers (file, markdown, stdout, MLflow) has the
paper values and ours - paper, "n/a" where the paper has no number."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepcritic import reference
from deepcritic.cli import main
from deepcritic.config import presets_dir
from deepcritic.data.processbench import bundled_slice
from deepcritic.scoring import read_output
from deepcritic.stages import evaluate
from support.paths import REFERENCE_DIR
from support.reference_cache import seed_reference_cache

pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.skipif(not REFERENCE_DIR.is_dir(), reason=f"{REFERENCE_DIR} not present"),
]
ROW = "deepcritic-7b-rl-prm800k"
PAPER = {"processbench-gsm8k": 51.5, "processbench-math": 12.25}  # test values, not the paper's
TWO_BOXES = "**Answer**: \\boxed{3}\n\nOn reflection, step 2 is where it fails: \\boxed{2}"


@pytest.fixture()
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_reference_cache(tmp_path / "cache", monkeypatch)


def _paper_file(tmp_path: Path) -> Path:
    """The packaged paper-results file with two cells of the RL row filled with test values."""
    data = yaml.safe_load((presets_dir() / "paper" / "results.yaml").read_text())
    data["rows"][ROW]["settings"]["single"]["f1"].update(PAPER)
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _argv(model: str, out: Path, paper: str) -> list[str]:
    return ["eval", "--preset", "paper-reference", "--model", model, "--backend", "hf",
            "--generation.device", "cpu", "--benchmarks",
            "processbench-slice:gsm8k,processbench-slice:math", "--select", "balanced",
            "--limit", "4", "--max-tokens", "12", "--out", str(out),
            "--paper-results", paper, "--paper-row", ROW]  # fmt: skip


def test_eval_paper_reference_end_to_end(
    tmp_path: Path,
    tiny_model_path: str,
    seeded: None,
    local_mlflow: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sent: list[Any] = []
    real = evaluate.make_backend

    def recording(cfg: Any) -> Any:
        backend = real(cfg)
        generate = backend.generate

        def spy(prompts: Any, *a: Any, **kw: Any) -> Any:
            sent.extend(prompts)
            outs = generate(prompts, *a, **kw)  # the tiny model's (random) critiques, then
            # one critique the two parsers read differently: official 2 (last box), strict 3
            outs[0] = [dataclasses.replace(outs[0][0], text=TWO_BOXES)]
            return outs

        backend.generate = spy  # type: ignore[method-assign]
        return backend

    monkeypatch.setattr(evaluate, "make_backend", recording)
    out = tmp_path / "eval"
    assert main(_argv(tiny_model_path, out, str(_paper_file(tmp_path)))) == 0
    printed = capsys.readouterr().out

    # the authors' prompt: Qwen's system message + critique_template_new.txt, eval.py numbering
    assert len(sent) == 8
    assert all(p[0] == {"role": "system", "content": reference.QWEN_SYSTEM} for p in sent)
    items = [
        it for split in ("gsm8k", "math") for it in json.loads(bundled_slice(split).read_text())
    ]
    expected = {
        reference.reference_critique_messages(it["problem"], it["steps"])[1]["content"]
        for it in items
    }
    assert all(p[1]["content"] in expected for p in sent)

    # the official parser read every prediction (eval.py's extract_answer on the one sample)
    metrics = json.loads((out / "metrics.json").read_text())
    first = json.loads((out / "predictions" / "processbench-slice-gsm8k.jsonl").open().readline())
    assert first["outputs"] == [TWO_BOXES] and first["prediction"] == 1  # step 2, 0-based
    assert read_output(TWO_BOXES, parser="strict") == 2  # what the project's parser would say
    for name in metrics["benchmarks"]:
        for line in (out / "predictions" / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert row["prediction"] == read_output(row["outputs"][0], parser="official")

    # the comparison: paper values, ours - paper, n/a where the paper has no number
    cmp = metrics["paper_comparison"]
    assert json.loads((out / "paper_comparison.json").read_text()) == cmp
    assert (cmp["row"], cmp["setting"], cmp["source"]["arxiv"]) == (ROW, "single", "2505.00662")
    lines = {x["column"]: x for x in cmp["benchmarks"]}
    assert set(lines) == set(PAPER)
    for col, paper in PAPER.items():
        name = lines[col]["benchmark"]
        ours = metrics["benchmarks"][name]["f1"]
        assert lines[col]["paper"] == paper and lines[col]["diff"] == pytest.approx(ours - paper)
        assert f"{paper:.1f}" in printed and f"{ours - paper:+.1f}" in printed
    assert cmp["avg"]["paper"] == 67.1 and cmp["avg"]["diff"] is None  # 2 of the 6 benchmarks
    md = (out / "paper_comparison.md").read_text()
    assert "| average |" in md and "67.1 (of 6)" in md and "n/a" in md and "arxiv" in md.lower()

    import mlflow

    run = mlflow.get_run(metrics["run_id"])
    params = run.data.params
    assert params["prompt_set"] == "reference" and params["parser"] == "official"
    assert (params["temperature"], params["top_p"], params["seed"]) == ("0.6", "0.9", "42")
    assert params["paper_row"] == ROW and run.data.tags["paper.setting"] == "single"
    for col, paper in PAPER.items():
        name = lines[col]["benchmark"]
        assert run.data.metrics[f"paper/{name}"] == paper
        assert run.data.metrics[f"paper_diff/{name}"] == pytest.approx(lines[col]["diff"])
    assert "paper_diff/avg_f1" not in run.data.metrics
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"paper_comparison.json", "paper_comparison.md", "metrics.json"} <= arts

    # the packaged file (no per-benchmark cells yet): every cell n/a, never 0; no generation again
    monkeypatch.setattr(evaluate, "make_backend", lambda _c: pytest.fail("predictions are reused"))
    assert main(_argv(tiny_model_path, out, "paper/results.yaml")) == 0
    again = json.loads((out / "paper_comparison.json").read_text())
    assert [x["paper"] for x in again["benchmarks"]] == [None, None]
    assert [x["diff"] for x in again["benchmarks"]] == [None, None]
    table = capsys.readouterr().out.split("paper: DeepCritic-7B-RL-PRM800K")[1].splitlines()
    bench_lines = [ln for ln in table if ln.startswith("processbench-slice-")]
    assert len(bench_lines) == 2 and all(ln.split()[-2:] == ["n/a", "n/a"] for ln in bench_lines)
    md = (out / "paper_comparison.md").read_text()
    assert md.count("| n/a | n/a |") == 2
