"""The rehearsal's KServe: an InferenceService becomes a ``deepcritic serve`` process.

Each spec generation is a *revision*: a separate server process in its own folder and HOME,
started with only the environment a predictor pod gets (the MLflow URI and credentials, offline
hub), loading its model through ``models:/`` from the tracking server. Like Knative, the revision
a generation asks for is reused when it already runs the same model (a rollback is instant), and
revisions stop once they carry no traffic. :meth:`LocalKServe.observe` reports KServe-shaped
status: ``Ready``/``PredictorReady`` conditions, ``url``, latest created/ready revisions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from deepcritic.platform.cluster import Obj
from deepcritic.platform.local_cluster import LocalCluster
from deepcritic.platform.processes import free_port, pid_alive, stop_group

KIND = "InferenceService"
MODEL_NAME = "deepcritic"
POD_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
           "MLFLOW_TRACKING_TOKEN", "PATH", "PYTHONPATH", "LANG", "TZ")  # fmt: skip


class LocalKServe:
    """Controller for ``InferenceService`` objects of a :class:`LocalCluster`."""

    def __init__(self, ready_path: str = f"/v1/models/{MODEL_NAME}") -> None:
        self.ready_path = ready_path

    # -- state: work/inferenceservice/<name>/state.json
    def _state_path(self, cluster: LocalCluster, name: str) -> Path:
        return cluster.work_dir(KIND, name) / "state.json"

    def _state(self, cluster: LocalCluster, name: str) -> dict[str, Any]:
        p = self._state_path(cluster, name)
        return json.loads(p.read_text()) if p.is_file() else {"revisions": {}}

    def _save(self, cluster: LocalCluster, name: str, state: dict[str, Any]) -> None:
        self._state_path(cluster, name).write_text(json.dumps(state, indent=1))

    def reconcile(self, cluster: LocalCluster, obj: Obj) -> None:
        from deepcritic.platform.deploy import served_uri

        name = obj["metadata"]["name"]
        uri = served_uri(obj)
        if uri is None:
            raise ValueError(
                f"InferenceService {name}: spec.predictor.model.args has no --model-uri"
            )
        state = self._state(cluster, name)
        revs = state["revisions"]
        reuse = [
            r
            for r, v in revs.items()
            if v["uri"] == uri and (pid_alive(int(v["pid"])) or v.get("stopped"))
        ]
        rev = reuse[0] if reuse else self._start(cluster, obj, uri, len(revs) + 1)
        if not reuse:
            revs[rev["name"]] = rev
            rev = rev["name"]
        state["latestCreated"] = rev
        state["generation"] = obj["metadata"].get("generation", 1)
        canary = (obj["spec"].get("predictor") or {}).get("canaryTrafficPercent")
        state["canary"] = canary
        if canary is None:  # all traffic to the latest revision: the others stop (scale to zero)
            for other, v in revs.items():
                if other != rev and pid_alive(int(v["pid"])):
                    stop_group(int(v["pid"]))
        self._save(cluster, name, state)

    def _start(self, cluster: LocalCluster, obj: Obj, uri: str, n: int) -> dict[str, Any]:
        from deepcritic.platform.deploy import PROFILE_ANNOTATION
        from deepcritic.runtime import preset_path

        name = obj["metadata"]["name"]
        rev = f"{name}-predictor-{n:05d}"
        folder = cluster.work_dir(KIND, name) / rev
        home = folder / "home"
        home.mkdir(parents=True, exist_ok=True)
        port = free_port()
        cmd = [sys.executable, "-m", "deepcritic.cli", "serve", "--model-uri", uri,
               "--port", str(port), "--model-name", MODEL_NAME,
               "--download-dir", str(folder / "models")]  # fmt: skip
        profile = (obj["metadata"].get("annotations") or {}).get(PROFILE_ANNOTATION, "")
        preset = preset_path("serve", profile)
        cmd += ["--config", str(preset)] if preset else []
        env = {k: os.environ[k] for k in POD_ENV if k in os.environ}
        env.update(HOME=str(home), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        with (folder / "server.log").open("ab") as log_file:
            proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        return {"name": rev, "uri": uri, "pid": proc.pid, "port": port, "dir": str(folder)}

    def observe(self, cluster: LocalCluster, obj: Obj) -> Obj:
        name = obj["metadata"]["name"]
        state = self._state(cluster, name)
        rev_name = state.get("latestCreated")
        if rev_name is None:
            return obj
        rev = state["revisions"][rev_name]
        if rev.get("stopped"):  # stopped with the last local run: start it again, as a pod would
            rev = self._start(cluster, obj, rev["uri"], int(rev_name.rsplit("-", 1)[1]))
            state["revisions"][rev_name] = rev
            self._save(cluster, name, state)
        ready, reason, message = self._probe(rev)
        url = f"http://127.0.0.1:{rev['port']}"
        ready_revs = [r for r, v in state["revisions"].items() if r == rev_name and ready]
        cond = [{"type": t, "status": "True" if ready else "False", "reason": reason,
                 "message": message} for t in ("PredictorReady", "Ready")]  # fmt: skip
        obj = dict(obj)
        obj["status"] = {
            "observedGeneration": state.get("generation", 1),
            "url": url, "address": {"url": url}, "conditions": cond,
            "components": {"predictor": {
                "latestCreatedRevision": rev_name,
                "latestReadyRevision": ready_revs[0] if ready_revs else None,
                "traffic": [{"revisionName": rev_name,
                             "percent": state.get("canary") or 100}]}},
        }  # fmt: skip
        return obj

    def _probe(self, rev: dict[str, Any]) -> tuple[bool, str, str]:
        import httpx

        if not pid_alive(int(rev["pid"])):
            tail = Path(rev["dir"], "server.log").read_text(errors="replace")[-2000:]
            return False, "RevisionFailed", f"server exited; log tail:\n{tail}"
        try:
            resp = httpx.get(f"http://127.0.0.1:{rev['port']}{self.ready_path}", timeout=2)
        except httpx.HTTPError as exc:
            return False, "RevisionNotReady", f"not answering yet ({type(exc).__name__})"
        if resp.status_code == 200:
            return True, "Ready", ""
        return False, "RevisionNotReady", f"readiness HTTP {resp.status_code}"

    def stop(self, cluster: LocalCluster, obj: Obj) -> None:
        name = obj["metadata"]["name"]
        state = self._state(cluster, name)
        for rev in state["revisions"].values():
            stop_group(int(rev["pid"]))
            rev["stopped"] = True
        self._save(cluster, name, state)
