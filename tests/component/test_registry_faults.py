"""The registry under faults, against a real ``mlflow server`` over HTTP: a promoter process is
killed with SIGKILL while it holds the alias lock (:mod:`deepcritic.registry.lease`). The next
promoter gets the lock once the dead holder's ttl has run out (not before: the dead lease is never
released) and within ttl + slack; the alias never points at a version the gate would reject
(a worse one, a tampered one), and moves to the better intact version once it is promoted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deepcritic.registry import PromoteConfig, PromoteResult, RegisterConfig, promote, register
from deepcritic.registry import store as registry_store
from deepcritic.registry.lease import Lease
from support.checkpoints import make_checkpoint, replace_weights, stored_folder
from support.mlflow_server import Server
from support.paths import ROOT

NAME = "faults"
FLOOR = 15.0
TTL_S = 5.0  # the lock ttl of every promoter here
SLACK_S = 5.0  # polling (<= 0.25 s) and a few HTTP calls on 2 shared cores


def _register(tmp: Path, seed: int, f1: float) -> str:
    cfg = RegisterConfig(checkpoint=str(make_checkpoint(tmp, seed)), model_name=NAME,
                         metrics={"avg_f1": f1, "avg_parse_rate": 90.0})  # fmt: skip
    return register(cfg).version


def _promote(server: Server, version: str, on_locked: Any = None) -> PromoteResult:
    cfg = PromoteConfig(model_name=NAME, version=version, floor_f1=FLOOR, tracking_uri=server.uri,
                        lock_ttl_s=TTL_S, lock_timeout_s=60.0)  # fmt: skip
    return promote(cfg, on_locked=on_locked)


def _spawn_paused(server: Server, version: str, flag: Path) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}"}
    cmd = [sys.executable, "-m", "support.paused_promoter", server.uri, NAME, version,
           str(TTL_S), str(flag), str(FLOOR)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert proc.poll() is None, f"the promoter exited ({proc.returncode}) before the lock"
        assert time.monotonic() < deadline, "the promoter never took the lock"
        time.sleep(0.05)
    return proc, json.loads(flag.read_text())


class _Observer(threading.Thread):
    """Reads the alias every 20 ms; ``seen`` is every value read."""

    def __init__(self, uri: str):
        super().__init__(daemon=True)
        self.uri, self.done = uri, threading.Event()
        self.seen: list[str | None] = []

    def run(self) -> None:
        client = registry_store.client(self.uri)
        while not self.done.is_set():
            holder = registry_store.alias_holder(client, NAME, "champion")
            self.seen.append(str(holder.version) if holder is not None else None)
            time.sleep(0.02)


def test_promoter_killed_holding_the_lock(
    mlflow_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "registry-faults")
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID", raising=False)
    client = MlflowClient(mlflow_server.uri, mlflow_server.uri)
    client.create_experiment("registry-faults")
    good, better = _register(tmp_path, 1, 50.0), _register(tmp_path, 2, 70.0)
    worse, tampered = _register(tmp_path, 3, 30.0), _register(tmp_path, 4, 90.0)
    replace_weights(stored_folder(client.get_model_version(NAME, tampered).source,
                                  mlflow_server.artifacts))  # fmt: skip
    assert _promote(mlflow_server, good).promoted
    observer = _Observer(mlflow_server.uri)
    observer.start()

    proc, held = _spawn_paused(mlflow_server, better, tmp_path / "locked.json")
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.time()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    dead = client.get_registered_model(held["lease"])
    assert dead.tags["state"] == "held", "the dead holder's lease must not look released"
    assert killed_at < held["expires"] - 1.0, "killed too late to tell waiting from not waiting"

    got: list[tuple[float, str]] = []

    def taken(lease: Lease) -> None:
        got.append((time.time(), lease.name))

    res = _promote(mlflow_server, worse, on_locked=taken)
    assert got, "the next promoter never took the lock"
    at, name = got[0]
    assert name > held["lease"], (name, held)
    assert at >= held["expires"], f"lock taken {held['expires'] - at:.2f}s before the ttl ran out"
    assert at - killed_at <= TTL_S + SLACK_S, f"lock taken {at - killed_at:.1f}s after the kill"
    assert not res.promoted and res.champion_version == good, res
    print(
        f"lock taken {at - killed_at:.2f}s after the kill, {at - held['expires']:.2f}s after expiry"
    )

    res = _promote(mlflow_server, tampered)
    assert not res.promoted and res.gate.startswith("failed: not intact"), res
    res = _promote(mlflow_server, better)
    assert res.promoted and res.changed, res
    observer.done.set()
    observer.join(10)
    moves = [v for k, v in enumerate(observer.seen) if k == 0 or observer.seen[k - 1] != v]
    assert moves == [good, better], f"the alias went through {moves}"
    holder = registry_store.alias_holder(client, NAME, "champion")
    assert holder is not None and str(holder.version) == better
