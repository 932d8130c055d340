"""The cluster's topology on one machine, for KFP's local runner (``run_local.py``).

What a pod on the cluster has, and nothing more:

* **MLflow only over HTTP**: a separate ``mlflow server`` process (SQLite backend, proxied
  artifact store in its own folder, ``--serve-artifacts``); tasks get ``MLFLOW_TRACKING_URI`` and
  never see its files, so a registered model can only be loaded through the server.
* **A fresh working directory and HOME per task**: kfp.local starts every task with
  ``sys.executable``; for the run that is a launcher script which makes a new folder, ``cd``s into
  it and sets ``HOME`` before exec'ing Python (as a pod starts in an empty container).
* **One shared disk, the run volume**: a folder standing in for the ReadWriteMany claim
  (``$DEEPCRITIC_RUN_VOLUME``), where model caches, shards and checkpoints live.
* **A stand-in API server** (:class:`deepcritic.platform.local_cluster.LocalCluster`) with the claim
  pre-provisioned and the local KServe / Trainer controllers, named by ``$DEEPCRITIC_CLUSTER``.

Not rehearsed: container images, GPU scheduling, Istio/JWT, object-store credentials, node loss.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

from deepcritic.platform.cluster import CLUSTER_ENV
from deepcritic.platform.connect import default_controllers
from deepcritic.platform.local_cluster import LocalCluster
from deepcritic.platform.processes import free_port
from deepcritic.platform.storage import RUN_ID_ENV, RUN_VOLUME_ENV, claim_manifest

CLAIM = "deepcritic-run"  # the pipeline's default run_volume_claim
LAUNCHER = """#!/bin/sh
# kfp.local task launcher: a fresh working directory and HOME for every task, like a new pod.
task_dir=$(mktemp -d "{tasks}/task-XXXXXX")
mkdir -p "$task_dir/home"
cd "$task_dir" || exit 1
HOME="$task_dir/home" exec "{python}" "$@"
"""


class LocalTopology:
    """Context manager: MLflow server, run volume, task launcher, local cluster; all stopped after."""

    def __init__(self, work: Path, tracking_uri: str | None = None) -> None:
        self.work = work
        self.run_id = f"local-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.mlflow_dir = work / "mlflow"
        self.run_volume = work / "run-volume"
        self.tasks = work / "tasks" / self.run_id
        self.pipeline_root = work / "pipeline_root"
        self.cluster = LocalCluster(work / "cluster", default_controllers())
        self._given_uri = tracking_uri
        self.tracking_uri = tracking_uri or ""
        self._server: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LocalTopology:
        for d in (self.mlflow_dir, self.run_volume, self.tasks, self.pipeline_root):
            d.mkdir(parents=True, exist_ok=True)
        if self.cluster.get("v1", "PersistentVolumeClaim", CLAIM) is None:
            claim = claim_manifest(CLAIM, "10Gi")
            claim["status"] = {"phase": "Bound"}  # pre-provisioned, as manifests/base/storage
            self.cluster.create(claim)
        if not self._given_uri:
            self.tracking_uri = self._start_mlflow()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.cluster.stop_all()
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()

    @property
    def store_uri(self) -> str:
        """The local server's backend store (read it after the server stopped)."""
        return (
            f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"
            if not self._given_uri
            else self.tracking_uri
        )

    def _server_args(self, port: int) -> list[str]:
        return ["server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.mlflow_dir / 'mlflow.db'}",
                "--artifacts-destination", str(self.mlflow_dir / "artifacts"),
                "--serve-artifacts"]  # fmt: skip

    def reopen_command(self) -> str:
        args = " ".join(self._server_args(5000))
        return f"mlflow {args}" if not self._given_uri else f"(your server {self._given_uri})"

    def _start_mlflow(self, timeout_s: float = 120.0) -> str:
        import httpx

        port = free_port()
        log = (self.mlflow_dir / "server.log").open("ab")
        self._server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", *self._server_args(port)],
            cwd=self.mlflow_dir, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.mlflow_dir / 'server.log'}")
            try:
                if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                    return uri
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"mlflow server not healthy in {timeout_s:.0f} s")

    def env(self) -> dict[str, str]:
        """What every task's environment gets (on the cluster: ConfigMap, field path, mount)."""
        return {
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            RUN_VOLUME_ENV: str(self.run_volume),
            RUN_ID_ENV: self.run_id,
            CLUSTER_ENV: f"local:{self.cluster.root}",
            "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        }

    def _launcher(self) -> Path:
        path = self.tasks / "python"
        path.write_text(LAUNCHER.format(tasks=self.tasks, python=sys.executable))
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return path

    def run_pipeline(self, pipeline: Path, args: dict[str, Any]) -> None:
        """The compiled pipeline with kfp.local, every task through the launcher."""
        from kfp import components, local

        real = sys.executable
        sys.executable = str(self._launcher())  # kfp.local starts tasks with sys.executable
        try:
            with warnings.catch_warnings():
                # base_image is for the cluster; the local runner uses this Python on purpose
                warnings.filterwarnings("ignore", message=".*non-Python base image.*")
                local.init(
                    runner=local.SubprocessRunner(use_venv=False),
                    pipeline_root=str(self.pipeline_root),
                    raise_on_error=True,
                )
                components.load_component_from_file(str(pipeline))(**args)
        finally:
            sys.executable = real
