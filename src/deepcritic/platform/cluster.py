"""One small interface to the Kubernetes objects the pipeline creates, with two implementations.

* :class:`KubernetesCluster`: the in-cluster API (the pod's service account), through the
  ``kubernetes`` client's dynamic client, so any kind (TrainJob, InferenceService, PVC) works.
* :class:`LocalCluster`: the rehearsal. Objects are JSON files under a folder (the stand-in for the
  API server, shared by every task of a local run like the API server is shared by every pod);
  *controllers* play the cluster's operators for the kinds that must do something (the Trainer
  controller runs a TrainJob's command as worker processes, the KServe controller starts
  ``deepcritic serve``). Controllers run their work as separate processes in their own folders, so
  the rehearsal exercises the exact objects the cluster gets.

:func:`current` picks the implementation from ``$DEEPCRITIC_CLUSTER`` (``kubernetes`` by default,
``local:<folder>`` in the rehearsal). Objects are plain dicts (the YAML a user would ``kubectl
apply``); builders live next to the code that needs them (``trainjob.py``, ``deploy.py``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# ---------------------------------------------------------------- the rehearsal


class Controller(Protocol):
    """A local stand-in for a cluster operator of one kind (Trainer, KServe)."""

    def reconcile(self, cluster: LocalCluster, obj: Obj) -> None: ...  # start/refresh the work

    def observe(self, cluster: LocalCluster, obj: Obj) -> Obj: ...  # obj with a fresh status

    def stop(self, cluster: LocalCluster, obj: Obj) -> None: ...  # stop the work (delete)


class LocalCluster:
    """Objects as JSON files under ``root/objects/<kind>/<name>.json``; controllers by kind.

    A file lock (``root/.lock``) serializes writers, as the API server does for concurrent pods.
    Each controller keeps its own work under ``root/work/<kind>/<name>/``.
    """

    def __init__(
        self, root: str | Path, controllers: dict[str, Controller] | None = None,
        namespace: str = "local",
    ) -> None:  # fmt: skip
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.namespace = namespace
        self.controllers = default_controllers() if controllers is None else controllers

    def path(self, kind: str, name: str) -> Path:
        return self.root / "objects" / kind.lower() / f"{name}.json"

    def work_dir(self, kind: str, name: str) -> Path:
        d = self.root / "work" / kind.lower() / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    @contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _read(self, kind: str, name: str) -> Obj | None:
        p = self.path(kind, name)
        return json.loads(p.read_text()) if p.is_file() else None

    def write(self, obj: Obj) -> None:
        """Store ``obj`` as is (controllers use it to record status)."""
        p = self.path(obj["kind"], obj["metadata"]["name"])
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
        tmp.replace(p)

    def _audit(self, verb: str, obj: Obj) -> None:
        """Append what a client sent (like the API server's audit log): tests validate each."""
        with (self.root / "audit.jsonl").open("a") as fh:
            fh.write(json.dumps({"verb": verb, "object": obj}) + "\n")

    def audit_log(self) -> list[dict[str, Any]]:
        path = self.root / "audit.jsonl"
        return (
            [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
        )

    def create(self, obj: Obj) -> Obj:
        with self._locked():
            if self._read(obj["kind"], obj["metadata"]["name"]) is not None:
                raise Conflict(f"{obj['kind']} {obj['metadata']['name']} exists")
            stored = json.loads(json.dumps(obj))
            stored["metadata"].setdefault("namespace", self.namespace)
            stored["metadata"]["generation"] = 1
            self._audit("create", obj)
            self.write(stored)
        self._reconcile(stored)
        return self.get(obj["apiVersion"], obj["kind"], obj["metadata"]["name"]) or stored

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        obj = self._read(kind, name)
        ctl = self.controllers.get(kind)
        if obj is not None and ctl is not None:
            obj = ctl.observe(self, obj)
        return obj

    def patch(self, api_version: str, kind: str, name: str, patch: Obj) -> Obj:
        with self._locked():
            obj = self._read(kind, name)
            if obj is None:
                raise NotFound(f"{kind} {name} not found")
            new = merge_patch(obj, patch)
            if new.get("spec") != obj.get("spec"):
                new["metadata"]["generation"] = int(obj["metadata"].get("generation", 1)) + 1
            self._audit("patch", {k: v for k, v in new.items() if k != "status"})
            self.write(new)
        self._reconcile(new)
        return self.get(api_version, kind, name) or new

    def _reconcile(self, obj: Obj) -> None:
        ctl = self.controllers.get(obj["kind"])
        if ctl is not None:
            ctl.reconcile(self, obj)

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        obj = self._read(kind, name)
        if obj is None:
            return False
        ctl = self.controllers.get(kind)
        if ctl is not None:
            ctl.stop(self, obj)
        self.path(kind, name).unlink(missing_ok=True)
        return True

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[Obj]:
        folder = self.root / "objects" / kind.lower()
        found = []
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            obj = json.loads(p.read_text())
            have = obj.get("metadata", {}).get("labels") or {}
            if all(have.get(k) == v for k, v in labels.items()):
                found.append(self.get(api_version, kind, obj["metadata"]["name"]) or obj)
        return found

    def logs(self, selector: dict[str, str], tail: int = 200) -> str:
        """The tail of every ``*.log`` a controller wrote for objects named in ``selector``."""
        name = selector.get("app.kubernetes.io/instance") or next(iter(selector.values()), "")
        lines: list[str] = []
        for log_file in sorted((self.root / "work").glob(f"*/{name}/*.log")):
            text = log_file.read_text(errors="replace").splitlines()[-tail:]
            lines += [f"--- {log_file.name}", *text]
        return "\n".join(lines)

    def stop_all(self) -> None:
        """Stop every controller's work (end of a local run)."""
        for kind, ctl in self.controllers.items():
            folder = self.root / "objects" / kind.lower()
            for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
                ctl.stop(self, json.loads(p.read_text()))


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
        return LocalCluster(spec.removeprefix("local:"), namespace=namespace or "local")
    raise ValueError(f"${CLUSTER_ENV} must be 'kubernetes' or 'local:<folder>', got {spec!r}")
