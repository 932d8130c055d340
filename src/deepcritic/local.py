"""Run the compiled pipeline end to end on this machine, and the runtime helpers its components use.

``deepcritic local [--tiny]`` runs ``pipelines/deepcritic.yaml`` with KFP's local runner
(``kfp.local.SubprocessRunner(use_venv=False)``: every component runs as a subprocess of this
Python, no Docker, no cluster; components are compiled with ``install_kfp_package=False`` and no
``packages_to_install``, so nothing is pip-installed, and ``base_image`` is ignored locally).
MLflow logs to a local SQLite store; one parent run per pipeline run, stage runs nested under it
(``$DEEPCRITIC_PARENT_RUN_ID``). At the end it prints where everything landed.

Component helpers (imported inside the KFP component bodies; this module never imports kfp at
import time): :func:`stage_config` builds a stage config from a preset + overrides,
:func:`ensure_parent_run` finds or creates the pipeline's parent MLflow run on a cluster, and
:func:`trainjob_manifest` / :func:`launch_trainjob` run SFT/GRPO as a Kubeflow Trainer TrainJob.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
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


def trainjob_manifest(
    name: str, stage: str, config_yaml: str, *, image: str, runtime: str = "deepcritic-deepspeed",
    num_nodes: int = 1, gpus_per_node: int = 8,
) -> dict[str, Any]:  # fmt: skip
    """A Kubeflow Trainer v2 TrainJob running ``deepcritic <stage> --config <file>`` via torchrun."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "deepcritic"}},
        "spec": {
            "runtimeRef": {"name": runtime, "kind": "TrainingRuntime",
                           "apiGroup": "trainer.kubeflow.org"},
            "trainer": {
                "image": image,
                "numNodes": num_nodes,
                "resourcesPerNode": {"limits": {"nvidia.com/gpu": str(gpus_per_node)}},
                "command": ["bash", "-c"],
                "args": [
                    f"cat > /tmp/{stage}.yaml <<'EOF'\n{config_yaml}\nEOF\n"
                    f"torchrun --nproc-per-node={gpus_per_node} -m deepcritic.cli {stage} "
                    f"--config /tmp/{stage}.yaml"
                ],
            },
        },
    }  # fmt: skip


def launch_trainjob(manifest: dict[str, Any], namespace: str, timeout_s: float = 7 * 86400) -> str:
    """Create the TrainJob and wait for Complete/Failed (needs in-cluster credentials)."""
    from kubernetes import client, config

    config.load_incluster_config()
    api = client.CustomObjectsApi()
    group, version = manifest["apiVersion"].split("/")
    name = manifest["metadata"]["name"]
    api.create_namespaced_custom_object(group, version, namespace, "trainjobs", manifest)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obj = api.get_namespaced_custom_object(group, version, namespace, "trainjobs", name)
        for cond in obj.get("status", {}).get("conditions", []):
            if cond.get("status") == "True" and cond.get("type") in ("Complete", "Failed"):
                if cond["type"] == "Failed":
                    raise RuntimeError(f"TrainJob {name} failed: {cond.get('message')}")
                return name
        time.sleep(30)
    raise TimeoutError(f"TrainJob {name} did not finish in {timeout_s}s")


# ---------------------------------------------------------------- the local run


@dataclass
class LocalConfig:
    profile: str = "local"  # tiny (random model, ~1 min) | local (SmolLM2-135M, <= 15 min)
    pipeline: str = "pipelines/deepcritic.yaml"  # the compiled pipeline (run as compiled)
    work_dir: str = "outputs/local"  # pipeline root, MLflow store and artifacts go under here
    tracking_uri: str | None = None  # None = sqlite:///<work_dir>/mlflow.db
    arguments: dict[str, Any] = field(default_factory=dict)  # override pipeline parameters


@dataclass
class LocalResult:
    parent_run_id: str
    tracking_uri: str
    pipeline_root: str
    seconds: float
    arguments: dict[str, Any]
    model_version: str | None = None
    champion_version: str | None = None


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


def _pipeline_file(path: str) -> Path:
    p = Path(path)
    if p.is_file():
        return p.resolve()
    repo = Path(__file__).resolve().parents[2] / path  # an editable install: the repo root
    if repo.is_file():
        return repo
    raise FileNotFoundError(
        f"pipeline: {path} not found (compile it: python pipelines/deepcritic.py)"
    )


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(config: LocalConfig) -> LocalResult:
    """Run the compiled pipeline with kfp.local under one parent MLflow run."""
    from kfp import components, local

    pipeline = _pipeline_file(config.pipeline)
    work = Path(config.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = config.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"
    args = pipeline_arguments(config.profile, config.arguments)
    env = {"MLFLOW_TRACKING_URI": uri, "DEEPCRITIC_ARTIFACT_ROOT": str(work / "mlartifacts"),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}  # fmt: skip
    start = time.monotonic()
    with _env(env):
        os.environ.pop(tracking.PARENT_ENV, None)
        with tracking.stage_run("pipeline", tracking_uri=uri) as parent:
            parent.log_params({"profile": config.profile, **args})
            parent.log_artifact(pipeline, "pipeline")
            parent.set_tags({"deepcritic.pipeline": str(pipeline)})
            with _env({tracking.PARENT_ENV: str(parent.run_id)}), warnings.catch_warnings():
                # base_image is for the cluster; the local runner uses this Python on purpose
                warnings.filterwarnings("ignore", message=".*non-Python base image.*")
                local.init(
                    runner=local.SubprocessRunner(use_venv=False),
                    pipeline_root=str(work / "pipeline_root"),
                    raise_on_error=True,
                )
                components.load_component_from_file(str(pipeline))(**args)
            seconds = time.monotonic() - start
            parent.log_metrics({"pipeline_seconds": seconds})
        version, champion = _registry_state(uri, str(args.get("registry_model_name", "deepcritic")))
    return LocalResult(str(parent.run_id), uri, str(work / "pipeline_root"), seconds, args,
                       version, champion)  # fmt: skip


def _registry_state(uri: str, name: str) -> tuple[str | None, str | None]:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(uri, uri)
    versions = client.search_model_versions(f"name='{name}'", max_results=1000)
    latest = str(max(int(v.version) for v in versions)) if versions else None
    try:
        champion = str(client.get_model_version_by_alias(name, "champion").version)
    except MlflowException:
        champion = None
    return latest, champion


def _endpoint(pipeline_root: str) -> str | None:
    outs = sorted(Path(pipeline_root).glob("*/deploy/executor_output.json"), key=os.path.getmtime)
    if not outs:
        return None
    params = json.loads(outs[-1].read_text()).get("parameterValues", {})
    answer = params.get("Output")
    return str(json.loads(answer)["endpoint"]) if answer else None


def summary(result: LocalResult) -> str:
    name = result.arguments.get("registry_model_name", "deepcritic")
    store = result.tracking_uri
    lines = [
        f"pipeline finished in {result.seconds:.0f} s (profile {result.arguments.get('profile')})",
        f"MLflow store:      {store}   (browse: mlflow ui --backend-store-uri {store})",
        f"parent run:        {result.parent_run_id} (stage runs nested under it)",
        f"pipeline outputs:  {result.pipeline_root}",
        f"model version:     {name} v{result.model_version}",
        f"@champion:         v{result.champion_version}  (models:/{name}@champion)",
        f"served endpoint:   {_endpoint(result.pipeline_root) or 'not deployed (not promoted)'}",
    ]
    return "\n".join(lines)


def _cli(args: argparse.Namespace) -> int:
    extra = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like key=value")
        extra[key] = yaml.safe_load(value)
    profile = "tiny" if args.tiny else args.profile
    result = run(LocalConfig(profile=profile, pipeline=args.pipeline, work_dir=args.work_dir,
                             tracking_uri=args.tracking_uri, arguments=extra))  # fmt: skip
    print(summary(result), flush=True)
    return 0


def register_cli(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "local", help="run the whole compiled pipeline here (kfp.local, no Docker, SQLite MLflow)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="random tiny model: the fast wiring check CI runs"
    )
    p.add_argument("--profile", default="local", choices=PROFILES, help="pipeline.<profile>.yaml")
    p.add_argument("--pipeline", default="pipelines/deepcritic.yaml", help="compiled pipeline")
    p.add_argument("--work-dir", default="outputs/local", help="pipeline root + MLflow store")
    p.add_argument("--tracking-uri", default=None, help="default: sqlite:///<work-dir>/mlflow.db")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a parameter")
    p.set_defaults(func=_cli)
