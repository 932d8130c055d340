"""The learning benchmark's chaining and reporting, on the random tiny model (the figures are
meaningless here; the benchmark itself runs `benchmarks/bench_learning.py`, not a test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic.stages.learning import LearningConfig, format_report, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_base_sft_grpo_are_chained_evaluated_on_the_same_items_and_reported(
    tmp_path: Path, processbench_dir: Path
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = LearningConfig(
        model="tiny", work_dir=str(tmp_path / "work"), sft_examples=6, grpo_examples=2,
        eval_perturbed=4, processbench_dir=str(processbench_dir), processbench_splits=["gsm8k"],
        eval_processbench=4, max_tokens=12, sft_max_steps=1, sft_batch_size=2, grpo_steps=1,
        grpo_generations=2, grpo_batch_size=2, tracking_uri=uri,
    )  # fmt: skip
    result = run(config)
    assert [s.stage for s in result.stages] == ["base", "sft", "grpo"]
    base, sft, grpo = result.stages
    assert base.model == "tiny" and sft.model.endswith("sft/final")
    assert grpo.model.endswith("grpo/final") and grpo.train["steps"] == 1
    for stage in result.stages:
        assert set(stage.benchmarks) == {"gsm8k-perturbed", "processbench-gsm8k"}
        for m in stage.benchmarks.values():
            assert m["n"] == 4 and sum(m["histogram"].values()) == 4
            assert {"f1", "acc_error", "acc_correct", "answer_rate", "truncation_rate"} <= set(m)
    # balanced held-out slices; the training data never shares a problem with them
    assert base.benchmarks["processbench-gsm8k"]["label_histogram"]["-1"] == 2
    work = Path(config.work_dir)
    held = {json.loads(x)["problem"] for x in (work / "data/gsm8k-perturbed.jsonl").open()}
    for name in ("sft_train", "grpo_train"):
        assert not held & {json.loads(x)["problem"] for x in (work / f"data/{name}.jsonl").open()}
    assert result.data["sft_examples"] == 6 and result.data["grpo_prompts"] == 2
    baselines = result.baselines["gsm8k-perturbed"]
    assert "always_-1" in baselines and len(baselines) == 2
    assert baselines["always_-1"]["acc_correct"] == 100.0 and baselines["always_-1"]["f1"] == 0.0
    report = json.loads(Path(result.report_path).read_text())
    assert [s["stage"] for s in report["stages"]] == ["base", "sft", "grpo"]
    assert Path(result.plot_path).stat().st_size > 1000
    table = format_report(result)
    assert "baseline always_-1" in table and table.count("gsm8k-perturbed") >= 4

    client = MlflowClient(uri)
    parent = client.get_run(str(result.run_id))
    assert (
        parent.data.metrics["grpo.gsm8k-perturbed.f1"] == grpo.benchmarks["gsm8k-perturbed"]["f1"]
    )
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'"
    )
    stages = sorted(r.data.tags["deepcritic.stage"] for r in children)
    assert stages == ["evaluate", "evaluate", "evaluate", "grpo", "seed", "sft"]
    assert "learning.png" in {a.path for a in client.list_artifacts(str(result.run_id))}

    again = run(config)  # finished stages are reused, the same predictions are read back
    assert again.stages[1].train == {**again.stages[1].train, "reused": True}
    assert again.stages[2].benchmarks == grpo.benchmarks
