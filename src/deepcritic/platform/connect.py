"""Which cluster a task talks to, with the rehearsal's operators wired in.

``$DEEPCRITIC_CLUSTER`` = ``kubernetes`` (default: the in-cluster API) or ``local:<folder>`` (the
rehearsal: a :class:`~deepcritic.platform.local_cluster.LocalCluster` whose controllers are the
local Kubeflow Trainer and KServe stand-ins).
"""

from __future__ import annotations

import os

from deepcritic.platform.cluster import CLUSTER_ENV, Cluster, KubernetesCluster
from deepcritic.platform.local_cluster import Controller, LocalCluster


def default_controllers() -> dict[str, Controller]:
    """The rehearsal's operators: KServe (``deepcritic serve``) and Kubeflow Trainer (workers)."""
    from deepcritic.platform.local_serving import LocalKServe

    controllers: dict[str, Controller] = {"InferenceService": LocalKServe()}
    try:
        from deepcritic.platform.local_trainer import LocalTrainer  # type: ignore[import-not-found,unused-ignore]

        controllers["TrainJob"] = LocalTrainer()
    except ImportError:
        pass
    return controllers


def current(namespace: str | None = None) -> Cluster:
    """The cluster this task talks to: ``$DEEPCRITIC_CLUSTER`` (default: the in-cluster API)."""
    spec = os.environ.get(CLUSTER_ENV, "kubernetes")
    if spec == "kubernetes":
        return KubernetesCluster(namespace)
    if spec.startswith("local:"):
        return LocalCluster(
            spec.removeprefix("local:"), default_controllers(), namespace=namespace or "local"
        )
    raise ValueError(f"${CLUSTER_ENV} must be 'kubernetes' or 'local:<folder>', got {spec!r}")
