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
