"""Runtime helpers the KFP components call inside their bodies (this package never imports kfp).

:func:`stage_config` builds a stage config from a preset (``configs/<stage>.<preset>.yaml``) plus
``key=value`` overrides; :func:`pipeline_arguments` reads a pipeline profile
(``configs/pipeline.<profile>.yaml``); :func:`ensure_parent_run` finds or creates the pipeline's
parent MLflow run. SFT/GRPO run as Kubeflow Trainer TrainJobs through
:mod:`deepcritic.platform.trainjob`; the rest of the cluster side (run volume, Kubernetes objects,
the InferenceService rollout) is :mod:`deepcritic.platform`.
The local end-to-end run itself is ``pipelines/run_local.py``.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

from deepcritic import tracking
from deepcritic.config import ConfigError, load_config

log = logging.getLogger(__name__)
T = TypeVar("T")
PROFILES = ("tiny", "local", "paper")
KFP_RUN_ENV = "KFP_RUN_ID"  # set from the pod label pipeline/runid by the pipeline (cluster)


# ---------------------------------------------------------------- component helpers


def preset_path(stage: str, preset: str) -> Path | None:
    """``src/deepcritic/configs/<stage>.<preset>.yaml`` when it exists (packaged with the wheel)."""
    if not preset:
        return None
    path = Path(str(importlib.resources.files("deepcritic") / "configs" / f"{stage}.{preset}.yaml"))
    return path if path.is_file() else None


def preset_gpus(stage: str, profile: str = "paper") -> int:
    """GPUs one task of ``stage`` needs: its preset's ``generation.tensor_parallel_size`` (>= 1)."""
    path = preset_path(stage, profile)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else None
    generation = (data or {}).get("generation") or {}
    return max(1, int(generation.get("tensor_parallel_size", 1)))


def stage_config(cls: type[T], stage: str, preset: str, overrides: list[str]) -> T:
    """Dataclass defaults < the stage's preset YAML (if it has one) < ``key=value`` overrides."""
    path = preset_path(stage, preset)
    if path is None and preset:
        log.info("no %s.%s.yaml preset: %s uses its defaults + overrides", stage, preset, stage)
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"{stage} overrides must look like key=value, got {bad}")
    return load_config(cls, path, list(overrides))


def ensure_parent_run(pipeline: str = "deepcritic") -> str | None:
    """The pipeline's parent MLflow run id; sets ``$DEEPCRITIC_PARENT_RUN_ID`` for the stage.

    Locally the runner sets the env var before starting. On a cluster each pod has
    ``$KFP_RUN_ID``; the first stage creates a run tagged with it, later stages find it.
    """
    if os.environ.get(tracking.PARENT_ENV):
        return os.environ[tracking.PARENT_ENV]
    kfp_run = os.environ.get(KFP_RUN_ENV)
    uri = tracking.resolve_tracking_uri()
    if not kfp_run or uri is None:
        return None
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp_id = tracking._experiment_id(
        mlflow, os.environ.get("MLFLOW_EXPERIMENT_NAME", tracking.EXPERIMENT)
    )
    found = client.search_runs([exp_id], f"tags.`kfp.run_id` = '{kfp_run}'", max_results=1)
    if found:
        run_id = str(found[0].info.run_id)
    else:
        run = client.create_run(exp_id, run_name=pipeline, tags={"kfp.run_id": kfp_run})
        run_id = str(run.info.run_id)
    os.environ[tracking.PARENT_ENV] = run_id
    return run_id


def write_json(path: str, obj: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")


# ---------------------------------------------------------------- the local run


def pipeline_arguments(profile: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The pipeline parameters for a profile: configs/pipeline.<profile>.yaml + ``extra``."""
    path = preset_path("pipeline", profile)
    if path is None:
        raise ConfigError(f"profile: no pipeline.{profile}.yaml preset (choose from {PROFILES})")
    args = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {**args, **(extra or {})}
