"""SFT and GRPO as Kubeflow Trainer v2 TrainJobs: the object, its name, and following it to the end.

The launcher (a CPU-only pipeline task) never trains. It puts the stage's inputs and its config
YAML on the run volume (:func:`stage_files`), submits a TrainJob whose every node runs
``python -m deepcritic.launch --launcher accelerate --accelerate-config zero3.yaml <stage>
--config <file on the volume>`` (:func:`deepcritic.launch.trainer_command`; topology from the
Trainer's ``PET_*`` env, ZeRO-3 from the stage config), follows it (:func:`run_trainjob`) and hands
back the final checkpoint, which the trainer wrote on the volume.

* Name: :func:`trainjob_name` of the run id and the task, so a retried task finds and follows the
  job its first attempt created instead of starting a second one.
* Volume: the run volume claim is mounted in every trainer pod at the launcher's own mount path,
  so every path in the config means the same file on both sides.
* Env: ``DEEPCRITIC_RUN_VOLUME``, ``KFP_RUN_ID``, ``MLFLOW_TRACKING_URI``,
  ``DEEPCRITIC_PARENT_RUN_ID`` (and a few more, :data:`PASSED_ENV`) copied from the launcher;
  MLflow credentials from the Secret named by ``$DEEPCRITIC_MLFLOW_SECRET`` (optional keys: the
  TrainJob API has no ``envFrom``, so each credential is a ``secretKeyRef``, :data:`SECRET_KEYS`).
* End: the job is deleted on success, failure, timeout and cancellation (SIGTERM); a failure
  raises with the Trainer's condition message and the tail of the trainer's log.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml

from deepcritic.launch import DEFAULT_ACCELERATE_CONFIG, trainer_command
from deepcritic.platform.cluster import Cluster, Conflict, Obj, condition, is_true
from deepcritic.platform.storage import MOUNT_PATH, RUN_VOLUME_ENV, run_dir, run_volume

log = logging.getLogger(__name__)

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
DEFAULT_RUNTIME = "deepcritic-deepspeed"  # manifests/base/training/runtime.yaml
CONTAINER = "node"  # the Trainer's node container (replicated job "node")
PATCH_MANAGER = "deepcritic.dev/launcher"
VOLUME_NAME = "run-volume"
RUN_LABEL = "deepcritic.dev/run-id"  # the exit handler deletes TrainJobs by it
TASK_LABEL = "deepcritic.dev/task"
JOB_LABEL = "jobset.sigs.k8s.io/jobset-name"  # on every pod of the TrainJob's JobSet
MLFLOW_SECRET_ENV = "DEEPCRITIC_MLFLOW_SECRET"
PASSED_ENV = ("KFP_RUN_ID", "MLFLOW_TRACKING_URI", "DEEPCRITIC_PARENT_RUN_ID",
              "MLFLOW_EXPERIMENT_NAME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")  # fmt: skip
# env var <- key of the MLflow credentials Secret: the same keys the pipeline's tasks and the
# ServingRuntime read from it (manifests/base/mlflow: username, password)
SECRET_KEYS = {"MLFLOW_TRACKING_USERNAME": "username", "MLFLOW_TRACKING_PASSWORD": "password"}
if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")
Stage = Literal["sft", "grpo"]
_DNS = re.compile(r"[^a-z0-9-]+")
_LABEL = re.compile(r"[^A-Za-z0-9._-]+")


class TrainJobFailed(RuntimeError):
    """The TrainJob ended Failed; the message holds the Trainer's reason and the log tail."""


@dataclass
class TrainJobSpec:
    """Everything the TrainJob object is built from (pure data: no cluster access)."""

    stage: Stage
    config: dict[str, Any]  # the stage config as a plain dict (config.to_dict)
    config_file: str  # where the config YAML lies on the run volume (the trainer reads it)
    image: str
    name: str
    run_id: str = ""
    task: str = ""
    runtime: str = DEFAULT_RUNTIME
    num_nodes: int = 1
    gpus_per_node: int = 8  # 0: no GPU request (the CPU rehearsal)
    procs_per_node: int | None = None  # None or 0 (a pipeline parameter's "unset"): gpus_per_node
    volume_claim: str = ""  # the run volume's PersistentVolumeClaim ("": the runtime mounts it)
    mount_path: str = MOUNT_PATH
    accelerate_config: str = DEFAULT_ACCELERATE_CONFIG
    node_selector: dict[str, str] | None = None  # overrides the runtime's when non-empty
    tolerations: list[dict[str, Any]] | None = None  # overrides the runtime's when non-empty
    env: dict[str, str] = field(default_factory=dict)
    mlflow_secret: str | None = None
    deadline_s: int | None = None  # activeDeadlineSeconds: the Trainer stops the job after it

    def __post_init__(self) -> None:
        if self.stage not in ("sft", "grpo"):
            raise ValueError(f"stage must be sft or grpo, got {self.stage!r}")
        if self.num_nodes < 1:
            raise ValueError(f"num_nodes must be >= 1, got {self.num_nodes}")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.processes < 1:
            raise ValueError("procs_per_node must be >= 1 (or gpus_per_node >= 1)")
        if not self.mount_path.startswith("/"):
            raise ValueError(f"mount_path must be absolute, got {self.mount_path!r}")

    @property
    def processes(self) -> int:
        return self.procs_per_node or self.gpus_per_node


@dataclass
class TrainJobResult:
    name: str
    checkpoint: str  # <out_dir>/final on the run volume
    seconds: float
    followed_existing: bool = False
    log_tail: str = ""


# ---------------------------------------------------------------- the object


def trainjob_name(run_id: str, task: str) -> str:
    """``dc-<task>-<run id prefix>-<hash>``: DNS-1035, <= 40 characters, the same on every retry."""
    if not run_id or not task:
        raise ValueError("trainjob_name needs a run id and a task name")
    digest = hashlib.sha256(f"{run_id}\0{task}".encode()).hexdigest()[:8]
    parts = [_DNS.sub("-", p.lower()).strip("-")[:12].strip("-") for p in (task, run_id)]
    return "-".join(["dc", *[p for p in parts if p], digest])


def _label_value(value: str) -> str:
    return _LABEL.sub("-", value)[:63].strip("-_.") or "unknown"


def trainjob_env(spec: TrainJobSpec) -> list[dict[str, Any]]:
    """The trainer pods' env: run volume, run identity, MLflow, credentials by secretKeyRef."""
    env = {RUN_VOLUME_ENV: spec.mount_path, **spec.env}
    out: list[dict[str, Any]] = [{"name": k, "value": str(v)} for k, v in sorted(env.items())]
    if spec.mlflow_secret:
        out += [
            {"name": var, "valueFrom": {"secretKeyRef": {
                "name": spec.mlflow_secret, "key": key, "optional": True}}}
            for var, key in SECRET_KEYS.items()
        ]  # fmt: skip
    return out


def _pod_patch(spec: TrainJobSpec) -> dict[str, Any]:
    pod: dict[str, Any] = {}
    if spec.volume_claim:
        pod["volumes"] = [{"name": VOLUME_NAME,
                           "persistentVolumeClaim": {"claimName": spec.volume_claim}}]  # fmt: skip
        pod["containers"] = [{"name": CONTAINER,
                              "volumeMounts": [{"name": VOLUME_NAME,
                                                "mountPath": spec.mount_path}]}]  # fmt: skip
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    return pod


def _resources(spec: TrainJobSpec) -> dict[str, Any]:
    if spec.gpus_per_node == 0:
        return {}
    gpus = str(spec.gpus_per_node)
    return {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}}


def trainjob_manifest(spec: TrainJobSpec) -> Obj:
    """The TrainJob (``trainer.kubeflow.org/v1alpha1``) the launcher submits for ``spec``."""
    trainer: dict[str, Any] = {
        "image": spec.image,
        "command": trainer_command(spec.stage, spec.config_file, spec.accelerate_config),
        "numNodes": spec.num_nodes,
        "numProcPerNode": spec.processes,
        "env": trainjob_env(spec),
    }
    if _resources(spec):
        trainer["resourcesPerNode"] = _resources(spec)
    body: dict[str, Any] = {
        "runtimeRef": {"name": spec.runtime, "kind": "TrainingRuntime",
                       "apiGroup": "trainer.kubeflow.org"},
        "trainer": trainer,
    }  # fmt: skip
    if spec.deadline_s:
        body["activeDeadlineSeconds"] = int(spec.deadline_s)
    pod = _pod_patch(spec)
    if pod:
        replicated = {"name": CONTAINER, "template": {"spec": {"template": {"spec": pod}}}}
        body["runtimePatches"] = [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [replicated]}}},
        }]  # fmt: skip
    labels = {"app.kubernetes.io/part-of": "deepcritic", "app.kubernetes.io/component": "trainer",
              TASK_LABEL: _label_value(spec.task or spec.stage)}  # fmt: skip
    if spec.run_id:
        labels[RUN_LABEL] = _label_value(spec.run_id)
    return {"apiVersion": API_VERSION, "kind": KIND,
            "metadata": {"name": spec.name, "labels": labels}, "spec": body}  # fmt: skip


# ---------------------------------------------------------------- the launcher's side


def launcher_env() -> dict[str, str]:
    """The env the launcher hands to its trainer pods (what is set of :data:`PASSED_ENV`)."""
    return {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}


def put_on_volume(src: str | Path, dest: Path) -> Path:
    """Copy a file or folder (a KFP input artifact) to ``dest`` on the run volume; a retry reuses
    a complete earlier copy (written under a temporary name, then renamed)."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    if src.is_dir():
        shutil.copytree(src, tmp)
    else:
        shutil.copy2(src, tmp)
    tmp.replace(dest)
    return dest


def stage_files(task: str) -> Path:
    """``<run volume>/runs/<run id>/<task>``: the stage's inputs, config and outputs."""
    return run_dir(task)


def write_stage_config(config: dict[str, Any], folder: Path, stage: str) -> Path:
    path = folder / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def spec_for_stage(
    stage: Stage, config: dict[str, Any], task: str, image: str, **kw: Any
) -> TrainJobSpec:
    """A spec for this pipeline run: config YAML written on the volume, env from the launcher."""
    from deepcritic.platform.storage import run_id

    folder = stage_files(task)
    rid = run_id()
    env = {**launcher_env(), **kw.pop("env", {})}
    return TrainJobSpec(
        stage=stage, config=config, config_file=str(write_stage_config(config, folder, stage)),
        image=image, name=trainjob_name(rid, task), run_id=rid, task=task,
        mount_path=str(run_volume()), env=env,
        mlflow_secret=os.environ.get(MLFLOW_SECRET_ENV) or None, **kw,
    )  # fmt: skip


def final_checkpoint(spec: TrainJobSpec) -> Path:
    out_dir = spec.config.get("out_dir")
    if not out_dir:
        raise ValueError("the stage config has no out_dir")
    return Path(out_dir) / "final"


# ---------------------------------------------------------------- following the job


def _split_pods(text: str) -> dict[str, list[str]]:
    """``--- <pod>`` sections of :meth:`Cluster.logs` -> lines per pod."""
    pods: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("--- "):
            current = line[4:].strip()
            pods.setdefault(current, [])
        else:
            pods.setdefault(current, []).append(line)
    return pods


def new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of ``after`` (a later tail of the same log) that ``before`` did not show."""
    for k in range(min(len(before), len(after)), 0, -1):
        if before[-k:] == after[:k]:
            return after[k:]
    return after


class LogFollower:
    """Prints what is new in the trainer pods' logs at each poll (a stream, by polling)."""

    def __init__(self, cluster: Cluster, name: str, tail: int = 200) -> None:
        self.cluster, self.selector, self.tail = cluster, {JOB_LABEL: name}, tail
        self.seen: dict[str, list[str]] = {}
        self.text = ""

    def poll(self) -> None:
        try:
            self.text = self.cluster.logs(self.selector, tail=self.tail)
        except Exception as exc:  # logs are best effort (pods may be gone or not yet started)
            log.debug("no trainer logs yet: %s", exc)
            return
        for pod, lines in _split_pods(self.text).items():
            for line in new_lines(self.seen.get(pod, []), lines):
                print(f"[{pod or 'trainer'}] {line}", flush=True)
            self.seen[pod] = lines


class Cancelled(RuntimeError):
    """The launcher was asked to stop (SIGTERM: the run was cancelled)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception so the ``finally`` that deletes the job runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Cancelled("SIGTERM: the run was cancelled")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _submit(cluster: Cluster, manifest: Obj) -> bool:
    """Create the job, or find the one a previous attempt created; True when following it."""
    name = manifest["metadata"]["name"]
    found = cluster.get(API_VERSION, KIND, name)
    if found is not None and is_true(found, "Failed"):
        log.warning(
            "TrainJob %s failed in an earlier attempt: deleting it and starting again", name
        )
        cluster.delete(API_VERSION, KIND, name)
        wait_gone(cluster, name)
        found = None
    if found is not None:
        log.info("following TrainJob %s created by an earlier attempt", name)
        return True
    try:
        cluster.create(manifest)
    except Conflict:
        log.info("TrainJob %s was created concurrently: following it", name)
        return True
    log.info("created TrainJob %s in %s", name, cluster.namespace)
    return False


def wait_gone(cluster: Cluster, name: str, timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while cluster.get(API_VERSION, KIND, name) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"TrainJob {name} still exists {timeout_s:.0f} s after delete")
        time.sleep(2)


def _outcome(obj: Obj | None) -> str | None:
    """ "Complete", "Failed", or None while running; a vanished job is a failure."""
    if obj is None:
        return "Gone"
    if is_true(obj, "Failed"):
        return "Failed"
    if is_true(obj, "Complete"):
        return "Complete"
    return None


def _failure_message(obj: Obj | None, name: str, follower: LogFollower) -> str:
    if obj is None:
        head = f"TrainJob {name} disappeared while the launcher waited (deleted from outside?)"
    else:
        cond = condition(obj, "Failed") or {}
        head = f"TrainJob {name} failed: {cond.get('reason', '')}: {cond.get('message', '')}"
    follower.poll()
    tail = "\n".join(follower.text.splitlines()[-60:])
    return f"{head}\n--- trainer log tail ---\n{tail}" if tail else head


def run_trainjob(
    cluster: Cluster, spec: TrainJobSpec, timeout_s: float, poll_s: float = 30.0
) -> TrainJobResult:
    """Create (or follow) the TrainJob, wait for it, delete it; the final checkpoint's path.

    Raises :class:`TrainJobFailed` with the Trainer's message and log tail, ``TimeoutError``
    after ``timeout_s``; the job is deleted in every case (also on SIGTERM).
    """
    manifest = trainjob_manifest(spec)
    name = spec.name
    follower = LogFollower(cluster, name)
    start = time.monotonic()
    with _sigterm_raises():
        followed = _submit(cluster, manifest)
        print(f"TrainJob {name}: kubectl -n {cluster.namespace} logs -f "
              f"-l {JOB_LABEL}={name} --prefix", flush=True)  # fmt: skip
        try:
            obj = _wait(cluster, name, follower, timeout_s, poll_s)
            if _outcome(obj) != "Complete":
                raise TrainJobFailed(_failure_message(obj, name, follower))
            follower.poll()
        finally:
            deleted = cluster.delete(API_VERSION, KIND, name)
            log.info("TrainJob %s %s", name, "deleted" if deleted else "already gone")
    checkpoint = final_checkpoint(spec)
    if not (checkpoint / "config.json").is_file():
        raise TrainJobFailed(
            f"TrainJob {name} completed but {checkpoint} holds no checkpoint (config.json)"
        )
    return TrainJobResult(name=name, checkpoint=str(checkpoint),
                          seconds=time.monotonic() - start, followed_existing=followed,
                          log_tail="\n".join(follower.text.splitlines()[-60:]))  # fmt: skip


def _wait(
    cluster: Cluster, name: str, follower: LogFollower, timeout_s: float, poll_s: float
) -> Obj | None:
    deadline = time.monotonic() + timeout_s
    while True:
        obj = cluster.get(API_VERSION, KIND, name)
        follower.poll()
        if _outcome(obj) is not None:
            return obj
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"TrainJob {name} not finished after {timeout_s:.0f} s (deleting it); "
                f"last log lines:\n" + "\n".join(follower.text.splitlines()[-30:])
            )
        time.sleep(poll_s)


def run_stage(
    stage: Stage, config: dict[str, Any], *, task: str, image: str, timeout_s: float,
    poll_s: float = 30.0, cluster: Cluster | None = None, namespace: str | None = None,
    **spec_kw: Any,
) -> TrainJobResult:  # fmt: skip
    """The launcher task's whole job: config on the volume, TrainJob, wait, checkpoint path.

    ``cluster`` defaults to the one this task talks to, in ``namespace`` ("": its own)."""
    from deepcritic.platform.connect import current

    spec = spec_for_stage(stage, config, task, image, deadline_s=int(timeout_s), **spec_kw)
    return run_trainjob(cluster or current(namespace), spec, timeout_s, poll_s)


@dataclass(frozen=True)
class Launch:
    """Where and on what a stage's TrainJob runs: the sft/grpo components' cluster parameters."""

    namespace: str  # "": the namespace this task runs in
    num_nodes: int
    gpus_per_node: int  # 0: no GPU request (the CPU rehearsal)
    procs_per_node: int  # ranks per node, 0: one per GPU
    volume_claim: str  # the run volume's PersistentVolumeClaim ("": the runtime mounts it)
    timeout_s: int  # the job's deadline, and how long this task follows it
    node_selector: dict[str, str] | None = None  # overrides the runtime's when non-empty
    tolerations: list[dict[str, Any]] | None = None  # overrides the runtime's when non-empty


def train(stage: Stage, config: Any, read_result: Callable[[str], R], launch: Launch) -> R:
    """A component's TrainJob: ``config`` (its ``out_dir`` on the run volume) trained on the train
    image; the result the stage left there, ``checkpoint`` = the job's final checkpoint."""
    from deepcritic.config import to_dict
    from deepcritic.platform.images import image

    job = run_stage(
        stage, to_dict(config), task=stage, image=image("train"), timeout_s=launch.timeout_s,
        namespace=launch.namespace, num_nodes=launch.num_nodes,
        gpus_per_node=launch.gpus_per_node, procs_per_node=launch.procs_per_node,
        volume_claim=launch.volume_claim, node_selector=launch.node_selector,
        tolerations=launch.tolerations,
    )  # fmt: skip
    return replace(read_result(config.out_dir), checkpoint=job.checkpoint)
