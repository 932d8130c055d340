"""MLflow tracking shared by every stage: one run per stage, nested under a pipeline parent run.

* Tracking URI: the stage config's ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a local
  SQLite store ``./mlflow.db`` (artifacts under ``./mlartifacts``). ``tracking_uri="off"`` disables.
* Parent run: when ``$DEEPCRITIC_PARENT_RUN_ID`` is set (the pipeline sets it), stage runs nest
  under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deepcritic.config import flatten, to_dict

log = logging.getLogger(__name__)

EXPERIMENT = "deepcritic"
PARENT_ENV = "DEEPCRITIC_PARENT_RUN_ID"
OFF = ("off", "none", "false", "0")


def resolve_tracking_uri(uri: str | None = None) -> str | None:
    """The URI to log to, or None when tracking is off."""
    uri = uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI")
    if uri is not None and uri.strip().lower() in OFF:
        return None
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def _artifact_location(mlflow: Any) -> str | None:
    """Where a new experiment keeps artifacts.

    A tracking *server* (``http(s)://``) decides itself: its ``--default-artifact-root`` or its
    proxied store (``mlflow-artifacts:/``), so every pod and KServe read the same bytes. Never a
    ``file://`` path of the client's own disk. Only a local store (SQLite/file, the laptop) gets
    ``$DEEPCRITIC_ARTIFACT_ROOT`` or ``./mlartifacts``.
    """
    explicit = os.environ.get("DEEPCRITIC_ARTIFACT_ROOT")
    if str(mlflow.get_tracking_uri()).startswith(("http://", "https://", "databricks")):
        return explicit if explicit and "://" in explicit else None
    root = explicit or str(Path.cwd() / "mlartifacts")
    return root if "://" in root else Path(root).resolve().as_uri()


def _experiment_id(mlflow: Any, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(mlflow.create_experiment(name, artifact_location=_artifact_location(mlflow)))
    except Exception:  # created concurrently by another stage
        return str(mlflow.get_experiment_by_name(name).experiment_id)


class Tracker:
    """Thin facade over the active MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, mlflow: Any | None, run_id: str | None):
        self._mlflow = mlflow
        self.run_id = run_id

    @property
    def enabled(self) -> bool:
        return self._mlflow is not None

    def log_params(self, params: Mapping[str, Any]) -> None:
        if self._mlflow:
            flat = {k: str(v)[:500] for k, v in flatten(dict(params)).items()}
            self._mlflow.log_params(flat)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self._mlflow:
            clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self._mlflow.log_metrics(clean, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self._mlflow:
            self._mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, obj: Any, name: str) -> None:
        if self._mlflow:
            self._mlflow.log_dict(obj, name)

    def log_text(self, text: str, name: str) -> None:
        if self._mlflow:
            self._mlflow.log_text(text, name)

    def log_figure(self, fig: Any, name: str) -> None:
        if self._mlflow:
            self._mlflow.log_figure(fig, name)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._mlflow:
            p = Path(path)
            if p.is_dir():
                self._mlflow.log_artifacts(str(p), artifact_path)
            else:
                self._mlflow.log_artifact(str(p), artifact_path)

    def log_table(self, rows: list[dict[str, Any]], name: str) -> None:
        """A small table as JSON (MLflow renders it in the artifact view)."""
        if self._mlflow and rows:
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / Path(name).name
                path.write_text(json.dumps(rows, indent=1, ensure_ascii=False))
                self._mlflow.log_artifact(str(path), str(Path(name).parent) or None)


@contextlib.contextmanager
def stage_run(
    stage: str,
    config: Any = None,
    *,
    tracking_uri: str | None = None,
    run_id: str | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run for one stage (nested under the pipeline parent, if any); ``run_id``
    reopens a run this process opened before (to log results after its nested runs ended)."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri is None:
        yield Tracker(None, None)
        return
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp_id = _experiment_id(mlflow, os.environ.get("MLFLOW_EXPERIMENT_NAME", EXPERIMENT))
    parent = os.environ.get(PARENT_ENV)
    tags = {"deepcritic.stage": stage}
    if parent:
        tags["mlflow.parentRunId"] = parent
    if run_id:
        with mlflow.start_run(run_id=run_id) as run:
            yield Tracker(mlflow, run.info.run_id)
        return
    with mlflow.start_run(experiment_id=exp_id, run_name=stage, tags=tags) as run:
        tracker = Tracker(mlflow, run.info.run_id)
        if config is not None:
            tracker.log_params(to_dict(config))
        log.info("MLflow run %s (%s) at %s", run.info.run_id, stage, uri)
        yield tracker


@contextlib.contextmanager
def nested_under(run_id: str | None) -> Iterator[None]:
    """Stage runs opened inside this block nest under ``run_id`` (no-op when None)."""
    old = os.environ.get(PARENT_ENV)
    if run_id:
        os.environ[PARENT_ENV] = run_id
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(PARENT_ENV, None)
        else:
            os.environ[PARENT_ENV] = old


def registry_client(uri: str | None = None) -> Any:
    """An ``MlflowClient`` for tracking and the model registry (same server)."""
    resolved = resolve_tracking_uri(uri)
    if resolved is None:
        raise RuntimeError("tracking_uri: the model registry needs MLflow tracking (it is 'off')")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=resolved, registry_uri=resolved)
