"""Runtime helpers the KFP components call inside their bodies (this package never imports kfp).

:func:`stage_config` builds a stage config from a preset (``configs/<stage>.<preset>.yaml``) plus
``key=value`` overrides; :func:`pipeline_arguments` reads a pipeline profile
(``configs/pipeline.<profile>.yaml``); :func:`ensure_parent_run` finds or creates the pipeline's
parent MLflow run; :func:`deploy_local` / :func:`deploy_kserve` serve the champion. SFT/GRPO run as
Kubeflow Trainer TrainJobs through :mod:`deepcritic.platform.trainjob`.
The local end-to-end run itself is ``pipelines/run_local.py``.
"""

from __future__ import annotations

import importlib.resources
import json
import logging
import os
import time
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


SAMPLE_REQUEST = {
    "problem": "Tom has 3 apples and buys 2 more. How many apples does he have?",
    "steps": ["Tom starts with 3 apples.", "He buys 2 more, so 3 + 2 = 6.", "The answer is 6."],
}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def deploy_local(model_uri: str, serve_profile: str, timeout_s: float = 300.0) -> str:
    """Start ``deepcritic serve`` on a free local port, answer one critique request, stop it.

    Returns a JSON string: the endpoint, the request and the response.
    """
    import subprocess
    import sys

    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "deepcritic.cli", "serve", "--model-uri", model_uri,
           "--port", str(port), "--model-name", "deepcritic"]  # fmt: skip
    preset = preset_path("serve", serve_profile)
    cmd += ["--config", str(preset)] if preset else []
    base = f"http://127.0.0.1:{port}/v1/models/deepcritic"
    proc = subprocess.Popen(cmd)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"deepcritic serve exited with {proc.returncode}")
            try:
                if httpx.get(base, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise TimeoutError(f"{base} not ready in {timeout_s}s")
        resp = httpx.post(f"{base}:predict", json=SAMPLE_REQUEST, timeout=timeout_s)
        resp.raise_for_status()
        answer = resp.json()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    print(f"critique from {base}:predict ->\n{json.dumps(answer, indent=1)[:2000]}", flush=True)
    return json.dumps(
        {"endpoint": f"{base}:predict", "request": SAMPLE_REQUEST, "response": answer}
    )


def isvc_patch(model_uri: str, canary_percent: int) -> dict[str, Any]:
    """Merge patch rolling the critic InferenceService (manifests/base/serving) to ``model_uri``.

    KServe keeps the previous revision serving ``100 - canary_percent`` % of traffic until the
    new one is promoted (canary rollout of a new champion).
    """
    if not 0 <= canary_percent <= 100:
        raise ValueError(f"deploy_canary_percent must be in [0, 100], got {canary_percent}")
    return {
        "spec": {
            "predictor": {
                "canaryTrafficPercent": canary_percent,
                "model": {"args": [f"--model-uri={model_uri}"]},
            }
        }
    }


def deploy_kserve(
    model_uri: str, namespace: str, canary_percent: int, name: str = "deepcritic"
) -> str:
    """Roll the cluster's critic InferenceService to the champion's pinned version (canary)."""
    from kubernetes import client, config
    from mlflow import MlflowClient

    model_name, _, alias = model_uri.removeprefix("models:/").partition("@")
    version = MlflowClient().get_model_version_by_alias(model_name, alias or "champion").version
    pinned = f"models:/{model_name}/{version}"
    config.load_incluster_config()
    api = client.CustomObjectsApi()
    api.patch_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name,
        isvc_patch(pinned, canary_percent),
    )  # fmt: skip
    url = f"http://{name}.{namespace}.svc.cluster.local/v1/models/deepcritic:predict"
    log.info("rolled %s to %s (%d%% canary): %s", name, pinned, canary_percent, url)
    return url
