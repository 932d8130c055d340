"""The run volume: one ReadWriteMany claim every task (and every TrainJob pod) mounts.

Layout (``$DEEPCRITIC_RUN_VOLUME``, on the cluster the claim mounted at :data:`MOUNT_PATH`)::

    cache/<scheme>/<...>/       inputs fetched once per volume (models, data), shared by all runs
    runs/<run id>/<stage>/      a run's working files: seed shards, checkpoints, ZeRO states

A retry of a task (or a KFP "retry run", which keeps the run id) finds its own folder again and
resumes; large files stay on the volume, and only final checkpoints travel as KFP/MLflow artifacts.
The local runner sets ``$DEEPCRITIC_RUN_VOLUME`` to a folder standing in for the claim.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepcritic.platform.cluster import Cluster

RUN_VOLUME_ENV = "DEEPCRITIC_RUN_VOLUME"
RUN_ID_ENV = "KFP_RUN_ID"  # the pipeline sets it from the pod label pipeline/runid
MOUNT_PATH = "/mnt/deepcritic-run"  # where the pipeline mounts the claim in every task
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RunVolumeError(RuntimeError):
    """The run volume is not mounted (or the run id is unknown)."""


def run_volume() -> Path:
    """The volume's root: ``$DEEPCRITIC_RUN_VOLUME``, else the pipeline's mount path if mounted."""
    env = os.environ.get(RUN_VOLUME_ENV)
    if env:
        return Path(env)
    if Path(MOUNT_PATH).is_dir():
        return Path(MOUNT_PATH)
    raise RunVolumeError(
        f"no run volume: set ${RUN_VOLUME_ENV} or mount the run volume claim at {MOUNT_PATH} "
        "(pipeline parameter run_volume_claim)"
    )


def has_run_volume() -> bool:
    try:
        run_volume()
    except RunVolumeError:
        return False
    return True


def safe_name(value: str) -> str:
    """``value`` as one folder name."""
    return _SAFE.sub("-", value)


def run_id() -> str:
    """This pipeline run's id (``$KFP_RUN_ID``), safe as a folder name."""
    rid = os.environ.get(RUN_ID_ENV, "")
    if not rid:
        raise RunVolumeError(f"${RUN_ID_ENV} is not set (the pipeline sets it from the pod label)")
    return _SAFE.sub("-", rid)


def run_dir(*parts: str) -> Path:
    """``<volume>/runs/<run id>/<parts...>``, created."""
    path = run_volume() / "runs" / run_id()
    for part in parts:
        path = path / _SAFE.sub("-", part)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    """``<volume>/cache/<parts...>``, created: inputs shared by every run on this volume."""
    path = run_volume() / "cache"
    for part in parts:
        path = path / _SAFE.sub("-", part)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------- inputs by URI

SCHEMES = ("hf://", "s3://", "gs://", "https://", "http://", "file://")
# Model files fetched from a hub: weights as safetensors only (never pickles), config, tokenizer.
HF_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model",
               "*.tiktoken", "*.jinja"]  # fmt: skip


def is_uri(value: str) -> bool:
    return value.startswith(SCHEMES)


def fetch(uri: str, *, cache: Path | None = None) -> Path:
    """A local path for ``uri``, downloaded once into the run volume's cache (or ``cache``).

    * ``hf://<org>/<repo>[@<revision>]``: a model snapshot (safetensors, config, tokenizer);
      ``hf://datasets/<org>/<repo>/<file>[@<revision>]``: one file of a dataset repo.
      Token: ``$HF_TOKEN`` (the pipeline maps it from the Secret named by ``hf_token_secret``).
    * ``s3://``, ``gs://``: a file or prefix, through MLflow's artifact repositories (boto3 /
      google-cloud-storage credentials from the environment).
    * ``http(s)://``: one file.   * ``file://`` or a plain path: used in place (must exist).

    Concurrent tasks (8 seed shards) share one download: a file lock per entry, and a
    ``.complete`` marker written last, so a crashed download is redone, never half-used.
    """
    if uri.startswith("file://") or not is_uri(uri):
        path = Path(uri.removeprefix("file://"))
        if not path.exists():
            raise FileNotFoundError(f"{uri}: no such file or folder (is its volume mounted?)")
        return path
    scheme, _, rest = uri.partition("://")
    root = cache if cache is not None else _input_cache(scheme)
    target = root / _SAFE.sub("-", rest.strip("/"))
    done = target.with_name(target.name + ".complete")
    if done.is_file():
        return _entry(target)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if not done.is_file():
            _download(scheme, rest, target)
            done.write_text(uri)
    return _entry(target)


def model_cache() -> Path:
    """Where models (and inputs fetched outside a run) are cached: ``$DEEPCRITIC_CACHE``, else the
    run volume's model cache when one is mounted (every task and trainer pod of a run shares it),
    else ``~/.cache/deepcritic``."""
    if os.environ.get("DEEPCRITIC_CACHE"):
        return Path(os.environ["DEEPCRITIC_CACHE"])
    if has_run_volume():
        return run_volume() / "cache" / "models"
    return Path.home() / ".cache" / "deepcritic"


def seed(uri: str, source: Path, *, cache: Path | None = None) -> Path:
    """Place a local copy of a one-file ``http(s)://`` input where :func:`fetch` finds it (tests,
    air-gapped clusters): the same entry and ``.complete`` marker a download writes."""
    import shutil

    scheme, _, rest = uri.partition("://")
    if scheme not in ("http", "https"):
        raise ValueError(f"{uri}: only http(s) files can be seeded")
    root = cache if cache is not None else _input_cache(scheme)
    target = root / _SAFE.sub("-", rest.strip("/"))
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    dest = target / Path(rest.split("?")[0]).name
    shutil.copyfile(source, dest)
    target.with_name(target.name + ".complete").write_text(uri)
    return dest


def _input_cache(scheme: str) -> Path:
    """The run volume's cache when mounted, else ``$DEEPCRITIC_CACHE``/``~/.cache/deepcritic``."""
    if has_run_volume():
        return cache_dir(scheme)
    path = model_cache() / "inputs" / scheme
    path.mkdir(parents=True, exist_ok=True)
    return path


def _entry(target: Path) -> Path:
    """A folder holding a single downloaded file stands for that file."""
    if target.is_dir():
        files = [p for p in target.iterdir() if not p.name.startswith(".")]
        if len(files) == 1 and files[0].is_file():
            return files[0]
    return target


def _download(scheme: str, rest: str, target: Path) -> None:
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True, exist_ok=True)
    if scheme == "hf":
        _download_hf(rest, target)
    elif scheme in ("s3", "gs"):
        from mlflow.artifacts import download_artifacts

        download_artifacts(artifact_uri=f"{scheme}://{rest}", dst_path=str(target))
    else:
        _download_http(f"{scheme}://{rest}", target / Path(rest.split("?")[0]).name)


def _download_hf(rest: str, target: Path) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    ref, _, revision = rest.partition("@")
    token = os.environ.get("HF_TOKEN") or None
    if ref.startswith("datasets/"):
        parts = ref.split("/")
        if len(parts) < 4:
            raise ValueError(f"hf://{rest}: a dataset file is hf://datasets/<org>/<repo>/<file>")
        hf_hub_download(
            "/".join(parts[1:3]), "/".join(parts[3:]), repo_type="dataset",
            revision=revision or None, local_dir=str(target), token=token,
        )  # fmt: skip
        return
    snapshot_download(
        ref, revision=revision or None, local_dir=str(target), token=token,
        allow_patterns=HF_PATTERNS,
    )  # fmt: skip


def _download_http(url: str, dest: Path) -> None:
    import httpx

    with httpx.stream("GET", url, follow_redirects=True, timeout=60) as resp:
        resp.raise_for_status()
        with dest.open("wb") as fh:
            for chunk in resp.iter_bytes(1 << 20):
                fh.write(chunk)


# ---------------------------------------------------------------- the claim itself


def claim_manifest(name: str, size: str, storage_class: str = "") -> dict[str, object]:
    """The run volume claim: ReadWriteMany (shards and trainer pods on several nodes mount it)."""
    spec: dict[str, object] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": size}},
    }
    if storage_class:
        spec["storageClassName"] = storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "deepcritic"}},
            "spec": spec}  # fmt: skip


def wait_for_claim(cluster: Cluster, name: str, *, timeout_s: float, poll_s: float = 5.0) -> str:
    """Wait until claim ``name`` exists and is Bound (or Pending: WaitForFirstConsumer classes
    bind when the first pod mounts it); returns the phase."""
    from deepcritic.platform.cluster import wait_for

    def phase() -> str | None:
        obj = cluster.get("v1", "PersistentVolumeClaim", name)
        if obj is None:
            return None
        value = str((obj.get("status") or {}).get("phase") or "Pending")
        if value == "Lost":
            raise RunVolumeError(f"run volume claim {name} is Lost (its volume is gone)")
        return value

    return str(wait_for(phase, timeout_s=timeout_s, poll_s=poll_s,
                        what=f"run volume claim {name} (create it, or create_run_volume=true)"))  # fmt: skip
