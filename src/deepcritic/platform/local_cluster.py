"""The rehearsal's API server: Kubernetes objects as JSON files, operators as local controllers.

Objects live under ``root/objects/<kind>/<name>.json`` (shared by every task of a local run, as
the API server is shared by every pod); a :class:`Controller` per kind plays the cluster's operator
(:mod:`~deepcritic.platform.local_trainer` for TrainJobs, :mod:`~deepcritic.platform.local_serving`
for InferenceServices). :func:`deepcritic.platform.connect.current` wires the default controllers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from deepcritic.platform.cluster import Conflict, NotFound, Obj, merge_patch

log = logging.getLogger(__name__)


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
        self.controllers = {} if controllers is None else controllers

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
