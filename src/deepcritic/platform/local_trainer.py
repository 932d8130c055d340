"""The rehearsal's Kubeflow Trainer: runs a TrainJob object's command as local worker processes.

:class:`LocalTrainer` is the :class:`~deepcritic.platform.cluster.Controller` that
:class:`~deepcritic.platform.local_cluster.LocalCluster` calls for the ``TrainJob`` kind. It takes the
exact object the launcher submitted and does what the Trainer's torch runtime does on a cluster:
``numNodes`` node processes (one per pod), each running ``spec.trainer.command`` with the
Trainer's ``PET_NNODES`` / ``PET_NPROC_PER_NODE`` / ``PET_NODE_RANK`` / ``PET_MASTER_ADDR`` /
``PET_MASTER_PORT`` env, so the command itself starts ``numProcPerNode`` ranks per node.

* Env: only the object's ``spec.trainer.env`` (``secretKeyRef`` values from a ``Secret`` object
  stored in the local cluster; optional ones may be missing) plus the machine basics ``PATH``,
  ``PYTHONPATH``, ``HOME``, ``LANG``, ``TMPDIR``.
* Files: every node starts in a fresh folder of its own; the only shared disk is the run volume,
  which must exist locally at the ``mountPath`` the object mounts the claim at.
* Local mappings: the image's ``python`` is this machine's interpreter; GPU requests are ignored
  (the rehearsal runs on CPU: DeepSpeed over gloo, see :func:`deepcritic.launch.join_deepspeed`).
* Detached: a supervisor process (``python -m deepcritic.platform.local_trainer <work dir>``)
  starts the nodes, enforces ``activeDeadlineSeconds``, stops the other nodes when one fails (the
  JobSet's failure policy) and writes ``status.json``; :meth:`LocalTrainer.observe` turns it into
  the ``Created`` / ``Running`` / ``Complete`` / ``Failed`` conditions, with the trainer's own
  error line in the message; :meth:`LocalTrainer.stop` kills it all.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from deepcritic.platform.cluster import Obj
from deepcritic.platform.local_cluster import LocalCluster
from deepcritic.platform.processes import free_port, pid_alive, signal_group

log = logging.getLogger(__name__)

KIND = "TrainJob"
BASIC_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
STATUS_FILE = "status.json"
JOB_FILE = "trainjob.json"
SUPERVISOR_LOG = "controller.log"
_PYTHONS = ("python", "python3")
_CONDITIONS = {  # phase -> (condition type, reason)
    "Created": ("Created", "JobSetCreated"),
    "Running": ("Running", "NodesRunning"),
    "Complete": ("Complete", "JobSetCompleted"),
    "Failed": ("Failed", "JobSetFailed"),
}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------- the object -> processes


def _secret_value(cluster: LocalCluster | None, ref: dict[str, Any]) -> str | None:
    secret = cluster.get("v1", "Secret", ref["name"]) if cluster else None
    data = (secret or {}).get("data") or {}
    if ref["key"] in data:
        return base64.b64decode(data[ref["key"]]).decode()
    string_data = (secret or {}).get("stringData") or {}
    return string_data.get(ref["key"])


def job_env(job: Obj, cluster: LocalCluster | None = None) -> dict[str, str]:
    """The env every node gets: the object's env and the machine basics, nothing else."""
    env = {k: os.environ[k] for k in BASIC_ENV if k in os.environ}
    for item in job["spec"]["trainer"].get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        ref = (item.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            raise ValueError(f"env {item['name']}: only value and secretKeyRef are rehearsed")
        value = _secret_value(cluster, ref)
        if value is not None:
            env[item["name"]] = value
        elif not ref.get("optional"):
            raise ValueError(f"env {item['name']}: Secret {ref['name']}/{ref['key']} not found")
    return env


def node_env(base: dict[str, str], job: Obj, rank: int, port: int) -> dict[str, str]:
    trainer = job["spec"]["trainer"]
    pet = {"PET_NNODES": trainer.get("numNodes", 1), "PET_NPROC_PER_NODE": trainer.get(
        "numProcPerNode", 1), "PET_NODE_RANK": rank, "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": port}  # fmt: skip
    return {**base, **{k: str(v) for k, v in pet.items()}}


def job_command(job: Obj) -> list[str]:
    trainer = job["spec"]["trainer"]
    cmd = [*(trainer.get("command") or []), *(trainer.get("args") or [])]
    if not cmd:
        raise ValueError("spec.trainer.command: empty (the runtime's default is not rehearsed)")
    return [sys.executable if cmd[0] in _PYTHONS else cmd[0], *cmd[1:]]


def check_volumes(job: Obj) -> None:
    """Every claim the object mounts must exist locally at its mount path (the stand-in PVC)."""
    for patch in job["spec"].get("runtimePatches") or []:
        jobs = patch.get("trainingRuntimeSpec", {}).get("template", {}).get("spec", {})
        for rj in jobs.get("replicatedJobs") or []:
            pod = rj.get("template", {}).get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers") or []:
                for m in c.get("volumeMounts") or []:
                    if not Path(m["mountPath"]).is_dir():
                        raise FileNotFoundError(
                            f"volume {m['name']}: nothing at mountPath {m['mountPath']} (the "
                            "rehearsal mounts the run volume at the path the launcher sees)"
                        )


# ---------------------------------------------------------------- the supervisor process


def _last_error(log_file: Path) -> str:
    """The trainer's own message: the last error-looking line of a node's log."""
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    keys = ("Error", "error:", "Exception", "Traceback")
    for line in reversed(lines[-400:]):
        if any(k in line for k in keys) and "Traceback" not in line:
            return line.strip()[:500]
    return lines[-1].strip()[:500] if lines else ""


class Supervisor:
    """Runs the nodes of one TrainJob and records their fate in ``status.json``."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.job: Obj = json.loads((work / JOB_FILE).read_text())
        self.procs: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def status(self, phase: str, message: str, **extra: Any) -> None:
        old = _read_json(self.work / STATUS_FILE)
        _write_json(self.work / STATUS_FILE, {**old, "phase": phase, "message": message,
                                               "time": _now(), **extra})  # fmt: skip

    def start_nodes(self) -> None:
        check_volumes(self.job)
        base = job_env(self.job, _cluster_of(self.work))
        cmd, port = job_command(self.job), free_port()
        for rank in range(int(self.job["spec"]["trainer"].get("numNodes", 1))):
            folder = self.work / f"node-{rank}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            with (self.work / f"node-{rank}.log").open("wb") as out:
                self.procs.append(subprocess.Popen(
                    cmd, cwd=folder, env=node_env(base, self.job, rank, port), stdout=out,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                ))  # fmt: skip
        self.status("Running", f"{len(self.procs)} node(s) running: {' '.join(cmd[1:])}",
                    node_pids=[p.pid for p in self.procs])  # fmt: skip

    def kill_nodes(self) -> None:
        for p in self.procs:
            signal_group(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(p.pid, signal.SIGKILL)
                p.wait()

    def wait(self) -> None:
        limit = self.job["spec"].get("activeDeadlineSeconds")
        deadline = time.monotonic() + float(limit) if limit else None
        while True:
            codes = [p.poll() for p in self.procs]
            bad = [(r, c) for r, c in enumerate(codes) if c not in (None, 0)]
            if bad:
                rank, code = bad[0]
                self.kill_nodes()
                msg = _last_error(self.work / f"node-{rank}.log")
                self.status("Failed", f"node {rank} exited with {code}: {msg}", reason="Error")
                return
            if all(c == 0 for c in codes):
                self.status("Complete", f"{len(codes)} node(s) succeeded")
                return
            if deadline is not None and time.monotonic() > deadline:
                self.kill_nodes()
                self.status("Failed", f"active deadline of {limit} s exceeded",
                            reason="DeadlineExceeded")  # fmt: skip
                return
            time.sleep(1.0)

    def run(self) -> int:
        def on_term(signum: int, frame: Any) -> None:
            self.kill_nodes()
            self.status("Failed", "stopped (TrainJob deleted)", reason="Stopped")
            os._exit(1)

        signal.signal(signal.SIGTERM, on_term)
        try:
            self.start_nodes()
            self.wait()
        except Exception as exc:  # a bad object: the job fails with the reason, like a webhook
            self.kill_nodes()
            self.status("Failed", f"{type(exc).__name__}: {exc}", reason="InvalidSpec")
        return 0


def _cluster_of(work: Path) -> LocalCluster | None:
    """The local cluster whose ``work/trainjob/<name>`` folder this is (for Secrets)."""
    root = work.parent.parent.parent
    return LocalCluster(root, controllers={}) if (root / "objects").is_dir() else None


# ---------------------------------------------------------------- the controller


class LocalTrainer:
    """The Trainer controller of the rehearsal (see the module docstring)."""

    def reconcile(self, cluster: LocalCluster, obj: Obj) -> None:
        work = cluster.work_dir(KIND, obj["metadata"]["name"])
        if (work / JOB_FILE).is_file():
            return  # started already: a TrainJob's trainer spec is immutable
        _write_json(work / JOB_FILE, obj)
        _write_json(work / STATUS_FILE, {"phase": "Created", "message": "nodes starting",
                                         "time": _now()})  # fmt: skip
        with (work / SUPERVISOR_LOG).open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deepcritic.platform.local_trainer", str(work)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={k: os.environ[k] for k in BASIC_ENV if k in os.environ},
            )  # fmt: skip
        status = _read_json(work / STATUS_FILE)
        _write_json(work / STATUS_FILE, {**status, "supervisor_pid": proc.pid})

    def observe(self, cluster: LocalCluster, obj: Obj) -> Obj:
        work = cluster.work_dir(KIND, obj["metadata"]["name"])
        status = _read_json(work / STATUS_FILE)
        phase = status.get("phase", "Created")
        pid = status.get("supervisor_pid")
        if phase in ("Created", "Running") and pid and not pid_alive(int(pid)):
            status = _read_json(work / STATUS_FILE)  # it may have finished just now
            phase = status.get("phase", phase)
            if phase in ("Created", "Running"):
                phase, status["message"] = "Failed", "the local trainer controller died"
        return {**obj, "status": {"conditions": _conditions(phase, status)}}

    def stop(self, cluster: LocalCluster, obj: Obj) -> None:
        """Stop the supervisor (it stops its nodes) and forget the job, so the name can be reused."""
        work = cluster.work_dir(KIND, obj["metadata"]["name"])
        status = _read_json(work / STATUS_FILE)
        pid = status.get("supervisor_pid")
        if pid and pid_alive(int(pid)):
            signal_group(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + 30
            while pid_alive(int(pid)) and time.monotonic() < deadline:
                time.sleep(0.2)
            if pid_alive(int(pid)):  # it did not stop its nodes: kill what is still ours
                for node in [*_read_json(work / STATUS_FILE).get("node_pids", []), pid]:
                    if pid_alive(int(node)):
                        signal_group(int(node), signal.SIGKILL)
        (work / JOB_FILE).unlink(missing_ok=True)
        (work / STATUS_FILE).unlink(missing_ok=True)


def _conditions(phase: str, status: dict[str, Any]) -> list[dict[str, Any]]:
    """Trainer-style conditions: Created always, then the phase's own (status True)."""
    time_ = status.get("time") or _now()
    conds = [{"type": "Created", "status": "True", "reason": "JobSetCreated",
              "message": "TrainJob resources are created", "lastTransitionTime": time_}]  # fmt: skip
    if phase != "Created":
        ctype, reason = _CONDITIONS[phase]
        conds.append({"type": ctype, "status": "True", "reason": status.get("reason", reason),
                      "message": status.get("message", ""), "lastTransitionTime": time_})  # fmt: skip
    return conds


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m deepcritic.platform.local_trainer <work dir>", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO)
    return Supervisor(Path(args[0])).run()


if __name__ == "__main__":
    raise SystemExit(main())
