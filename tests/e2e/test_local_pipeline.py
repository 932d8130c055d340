"""The compiled pipeline end to end with kfp.local on the tiny profile (`pipelines/run_local.py --tiny`),
in the cluster's topology (pipelines/local_topology.py): MLflow server over HTTP, a fresh folder and
HOME per task, the run volume as the only shared disk, deploy through the local KServe stand-in."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run_local(monkeypatch: pytest.MonkeyPatch) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_local", ROOT / "pipelines" / "run_local.py")
    assert spec is not None and spec.loader is not None
    run_local = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_local", run_local)  # dataclasses need the module
    spec.loader.exec_module(run_local)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID", raising=False)
    return run_local


def _validate_audit(work: Path) -> set[str]:
    """Every object the run sent to the (stand-in) API server is valid against its schema."""
    from deepcritic.platform.local_cluster import LocalCluster
    from support.k8s_schemas import validate

    audit = LocalCluster(work / "cluster", controllers={}).audit_log()
    for entry in audit:
        validate({k: v for k, v in entry["object"].items() if k != "status"})
    return {a["object"]["kind"] for a in audit}


@pytest.mark.e2e
def test_local_tiny_pipeline_registers_and_promotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    run_local = _run_local(monkeypatch)
    LocalConfig, run, summary = run_local.LocalConfig, run_local.run, run_local.summary
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    result = run(LocalConfig(profile="tiny", pipeline=str(ROOT / "pipelines" / "deepcritic.yaml"),
                             work_dir=str(tmp_path / "work")))  # fmt: skip
    assert result.model_version == "1"
    assert result.champion_version == "1"  # first version, no champion before: the alias moved

    client = MlflowClient(result.store_uri, result.store_uri)  # the server has stopped
    mv = client.get_model_version_by_alias("deepcritic", "champion")
    assert "metric.avg_f1" in mv.tags and mv.tags["base_model"] == "tiny"
    assert mv.tags["deepcritic.promotion.decision"] == "promoted"
    runs = client.search_runs(
        [client.get_experiment_by_name("deepcritic").experiment_id], max_results=100
    )
    stages = {r.data.tags.get("deepcritic.stage") for r in runs
              if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id}  # fmt: skip
    assert {"prepare", "seed", "sft", "grpo", "evaluate", "register"} <= stages

    # cluster topology: MLflow only over HTTP, its artifacts only in the server's own store
    assert result.tracking_uri.startswith("http://127.0.0.1:")
    work = Path(result.work_dir)
    assert list((work / "mlflow" / "artifacts").rglob("model.safetensors"))
    tasks = work / "tasks"
    assert not list(tasks.rglob("mlflow.db")) and not list(tasks.rglob("mlartifacts"))
    assert len(list(tasks.glob("*/task-*"))) >= 10  # a fresh folder (and HOME) per task
    # deploy pinned the version, a fresh `deepcritic serve` loaded it through models:/ and answered
    outs = list(Path(result.pipeline_root).glob("*/deploy*/executor_output.json"))
    assert len(outs) == 1
    served = json.loads(json.loads(outs[0].read_text())["parameterValues"]["Output"])
    assert served["model_uri"] == "models:/deepcritic/1" and served["previous_uri"] is None
    assert "first_error_step" in served["response"]
    isvc = json.loads(
        (work / "cluster" / "objects" / "inferenceservice" / "deepcritic.json").read_text()
    )
    assert isvc["spec"]["predictor"]["model"]["args"] == ["--model-uri=models:/deepcritic/1"]
    # every object the run sent to the (stand-in) API server is valid against its schema
    from deepcritic.platform.local_cluster import LocalCluster
    from support.k8s_schemas import validate

    audit = LocalCluster(work / "cluster", controllers={}).audit_log()
    assert {a["object"]["kind"] for a in audit} >= {"PersistentVolumeClaim", "InferenceService"}
    for entry in audit:
        validate({k: v for k, v in entry["object"].items() if k != "status"})
    text = summary(result)
    assert "@champion:         v1" in text and served["url"] in text
    # base vs trained on the same items, in the summary and on the parent run
    rows = {line[:18].strip(): line[18:].split() for line in text.splitlines()}
    assert len(rows["base model"]) == 2 and len(rows["trained critic"]) == 2
    assert "n/a" not in rows["base model"] + rows["trained critic"]
    parent = client.get_run(result.parent_run_id).data.metrics
    assert {"base.avg_f1", "base.avg_answer_rate", "trained.avg_f1"} <= set(parent)
    # the base model's predictions are cached on the run volume for the next run
    assert list((work / "run-volume" / "cache" / "base-eval").rglob("predictions/*.jsonl"))


@pytest.mark.e2e
def test_cluster_rehearsal_trains_through_trainjobs_on_the_mc_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make rehearse`: SFT (1 node x 2 ranks) and GRPO (2 nodes x 1 rank) as TrainJobs under
    ZeRO-3, run by the local Trainer stand-in from the exact objects the launcher submitted; RL data
    from Monte Carlo annotation; the version it registers is deployed and answers."""
    from mlflow import MlflowClient

    run_local = _run_local(monkeypatch)
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    result = run_local.run(run_local.LocalConfig(
        profile="tiny", pipeline=str(ROOT / "pipelines" / "deepcritic.yaml"),
        work_dir=str(work), arguments=run_local.rehearsal_arguments()))  # fmt: skip
    assert result.champion_version == "1"
    kinds = _validate_audit(work)
    assert {"TrainJob", "InferenceService", "PersistentVolumeClaim"} <= kinds
    # the TrainJobs were deleted after success (the exit handler found nothing left)
    assert not list((work / "cluster" / "objects" / "trainjob").glob("*.json"))
    client = MlflowClient(result.store_uri, result.store_uri)
    runs = client.search_runs([client.get_experiment_by_name("deepcritic").experiment_id],
                              max_results=200)  # fmt: skip
    by_stage = {r.data.tags.get("deepcritic.stage"): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == result.parent_run_id}  # fmt: skip
    assert {"mc", "sft", "grpo", "register"} <= set(by_stage)
    sft = by_stage["sft"]
    assert sft.data.params.get("zero_stage") == "3" and sft.data.params.get("world_size") == "2"
    losses = client.get_metric_history(sft.info.run_id, "train.loss")
    assert len(losses) >= 2  # a loss curve, logged by rank 0 of the TrainJob
    served = run_local.deploy_output(result.pipeline_root)
    assert served is not None and "first_error_step" in served["response"]
