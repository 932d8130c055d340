"""The run's exit handler: delete what the run created, whatever happened to it.

* TrainJobs labelled with the run id (a failed or cancelled run must not keep 16 GPUs busy);
* the run's folder on the run volume, when the run succeeded (a failed run keeps it, so that
  KFP's "retry run", which keeps the run id, resumes from it) or when asked;
* the run volume claim itself, only when asked (the pipeline created it for this run).
The InferenceService is the product, not a by-product: it stays.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field

from deepcritic.platform import storage
from deepcritic.platform.cluster import Cluster

log = logging.getLogger(__name__)

RUN_LABEL = "deepcritic.dev/run-id"  # on every object a run creates (TrainJobs)
TRAINJOB_API = ("trainer.kubeflow.org/v1alpha1", "TrainJob")


@dataclass
class CleanupResult:
    state: str
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def run_label_value(run_id: str) -> str:
    """A label value (<= 63 chars, alphanumeric ends) for a run id."""
    return run_id[:63].strip("-_.") or "unknown"


def cleanup(
    cluster: Cluster, *, run_id: str, state: str, delete_run_files: bool = False,
    delete_claim: str = "",
) -> CleanupResult:  # fmt: skip
    """Remove the run's TrainJobs, its run-volume folder (on success or when asked), the claim."""
    result = CleanupResult(state=state)
    for job in cluster.list(*TRAINJOB_API, {RUN_LABEL: run_label_value(run_id)}):
        name = job["metadata"]["name"]
        if cluster.delete(*TRAINJOB_API, name):
            result.deleted.append(f"TrainJob/{name}")
    if storage.has_run_volume():
        folder = storage.run_volume() / "runs" / storage.safe_name(run_id)
        if folder.is_dir() and (state == "SUCCEEDED" or delete_run_files):
            shutil.rmtree(folder, ignore_errors=True)
            result.deleted.append(str(folder))
        elif folder.is_dir():
            result.kept.append(f"{folder} (run {state}: kept so a retry resumes)")
    if delete_claim and cluster.delete("v1", "PersistentVolumeClaim", delete_claim):
        result.deleted.append(f"PersistentVolumeClaim/{delete_claim}")
    log.info("cleanup after %s: deleted %s; kept %s", state, result.deleted, result.kept)
    return result
