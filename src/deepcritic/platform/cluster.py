"""One small interface to the Kubernetes objects the pipeline creates, with two implementations.

* :class:`KubernetesCluster`: the in-cluster API (the pod's service account), through the
  ``kubernetes`` client's dynamic client, so any kind (TrainJob, InferenceService, PVC) works.
* :class:`~deepcritic.platform.local_cluster.LocalCluster`: the rehearsal. Objects are JSON files under a folder (the stand-in for the
  API server, shared by every task of a local run like the API server is shared by every pod);
  *controllers* play the cluster's operators for the kinds that must do something (the Trainer
  controller runs a TrainJob's command as worker processes, the KServe controller starts
  ``deepcritic serve``). Controllers run their work as separate processes in their own folders, so
  the rehearsal exercises the exact objects the cluster gets.

:func:`deepcritic.platform.connect.current` picks the implementation from ``$DEEPCRITIC_CLUSTER`` (``kubernetes`` by default,
``local:<folder>`` in the rehearsal). Objects are plain dicts (the YAML a user would ``kubectl
apply``); builders live next to the code that needs them (``trainjob.py``, ``deploy.py``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

CLUSTER_ENV = "DEEPCRITIC_CLUSTER"  # "kubernetes" (default) | "local:<folder>"
NAMESPACE_ENV = "DEEPCRITIC_NAMESPACE"
Obj = dict[str, Any]


class NotFound(LookupError):
    """The object does not exist."""


class Conflict(RuntimeError):
    """The object already exists (create) or changed underneath (patch)."""


@runtime_checkable
class Cluster(Protocol):
    """What the pipeline's tasks do with Kubernetes objects (one namespace)."""

    namespace: str

    def create(self, obj: Obj) -> Obj: ...  # raises Conflict when it exists

    def get(self, api_version: str, kind: str, name: str) -> Obj | None: ...

    def patch(self, api_version: str, kind: str, name: str, patch: Obj) -> Obj: ...  # merge patch

    def delete(self, api_version: str, kind: str, name: str) -> bool: ...  # False: was absent

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[Obj]: ...

    def logs(self, selector: dict[str, str], tail: int = 200) -> str: ...  # pods' recent logs


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (what ``kubectl patch --type merge`` does): None deletes a key."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def condition(obj: Obj | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind`` (``Ready``, ``Complete``, ``Failed``...), if any."""
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def is_true(obj: Obj | None, kind: str) -> bool:
    cond = condition(obj, kind)
    return bool(cond and str(cond.get("status")) == "True")


def wait_for(check: Callable[[], Any], *, timeout_s: float, poll_s: float, what: str) -> Any:
    """Poll ``check`` until it returns a truthy value; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not done after {timeout_s:.0f} s")
        time.sleep(poll_s)


# ---------------------------------------------------------------- in-cluster


class KubernetesCluster:
    """The real API server, with the pod's service account (or ``~/.kube/config`` off-cluster)."""

    def __init__(self, namespace: str | None = None) -> None:
        from kubernetes import client, config, dynamic

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self._core = client.CoreV1Api()
        self._dyn = dynamic.DynamicClient(client.ApiClient())
        self.namespace = namespace or _pod_namespace()

    def _api(self, api_version: str, kind: str) -> Any:
        return self._dyn.resources.get(api_version=api_version, kind=kind)

    def create(self, obj: Obj) -> Obj:
        from kubernetes.client.exceptions import ApiException

        api = self._api(obj["apiVersion"], obj["kind"])
        try:
            return dict(api.create(body=obj, namespace=self.namespace).to_dict())
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{obj['kind']} {obj['metadata']['name']} exists") from exc
            raise

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        from kubernetes.client.exceptions import ApiException

        try:
            got = self._api(api_version, kind).get(name=name, namespace=self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(got.to_dict())

    def patch(self, api_version: str, kind: str, name: str, patch: Obj) -> Obj:
        api = self._api(api_version, kind)
        got = api.patch(
            name=name, namespace=self.namespace, body=patch,
            content_type="application/merge-patch+json",
        )  # fmt: skip
        return dict(got.to_dict())

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        from kubernetes.client.exceptions import ApiException

        try:
            self._api(api_version, kind).delete(
                name=name, namespace=self.namespace, propagation_policy="Foreground"
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[Obj]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        got = self._api(api_version, kind).get(namespace=self.namespace, label_selector=selector)
        return [dict(item.to_dict()) for item in got.items]

    def logs(self, selector: dict[str, str], tail: int = 200) -> str:
        label = ",".join(f"{k}={v}" for k, v in selector.items())
        pods = self._core.list_namespaced_pod(self.namespace, label_selector=label).items
        parts = []
        for pod in pods:
            text = self._core.read_namespaced_pod_log(
                pod.metadata.name, self.namespace, tail_lines=tail
            )
            parts.append(f"--- {pod.metadata.name}\n{text}")
        return "\n".join(parts)


def _pod_namespace() -> str:
    if os.environ.get(NAMESPACE_ENV):
        return os.environ[NAMESPACE_ENV]
    sa = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return sa.read_text().strip() if sa.is_file() else "default"
