"""MLflow tracking: one run per stage, nested under the pipeline parent; off means off."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from deepcritic.tracking import PARENT_ENV, resolve_tracking_uri, stage_run


@dataclass
class Cfg:
    lr: float = 0.1
    name: str = "x"


def test_off_is_a_noop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri("off") is None
    with stage_run("s", Cfg(), tracking_uri="off") as t:
        t.log_metrics({"a": 1.0})
        assert not t.enabled and t.run_id is None
    assert not (tmp_path / "mlflow.db").exists()


def test_default_is_local_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_nested_stage_runs(
    local_mlflow: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    with stage_run("pipeline") as parent:
        pass
    monkeypatch.setenv(PARENT_ENV, parent.run_id or "")
    with stage_run("train", Cfg(lr=0.5)) as t:
        t.log_metrics({"loss": 2.0}, step=1)
        t.log_table([{"a": 1}], "tables/t.json")
        fig, _ = plt.subplots()
        t.log_figure(fig, "plots/p.png")
    run = mlflow.get_run(t.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params == {"lr": "0.5", "name": "x"} and run.data.metrics["loss"] == 2.0
    paths = {a.path for a in mlflow.MlflowClient().list_artifacts(t.run_id, "tables")}
    assert paths == {"tables/t.json"}
