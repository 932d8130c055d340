"""A real ``mlflow server`` for tests: SQLite backend, proxied artifacts, a free local port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Server:
    uri: str
    artifacts: Path  # where the server keeps proxied artifacts (mlflow-artifacts:/<path>)
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_mlflow_server(
    root: Path, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> Iterator[Server]:
    """Serve ``root/mlflow.db`` (created if missing) with artifacts under ``root/artifacts``."""
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
           f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts", "--artifacts-destination",
           str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
           *extra_args]  # fmt: skip
    full_env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    log_path = root / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        server = Server(f"http://127.0.0.1:{port}", root / "artifacts", log_path)
        try:
            _wait_healthy(server, proc, timeout_s=120)
            yield server
        finally:
            os.killpg(proc.pid, 15)  # the server and its workers: the group started here
            proc.wait(timeout=30)


def _wait_healthy(server: Server, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = server.log.read_text()[-2000:]
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"mlflow server at {server.uri} not healthy after {timeout_s}s")


def documented_auth_ini(deployment: Path) -> str:
    """The ``basic_auth.ini`` block documented in the comment of manifests/base/mlflow/deployment.yaml."""
    lines = deployment.read_text().splitlines()
    start = lines.index("#   [mlflow]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    return "\n".join(block) + "\n"
