"""LocalTrainer: the rehearsal's Trainer controller runs a TrainJob object's command as detached node
processes with the Trainer's PET_* env and only the object's env, reports conditions, and stops."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from deepcritic.platform.cluster import condition, is_true
from deepcritic.platform.local_cluster import LocalCluster
from deepcritic.platform.local_trainer import LocalTrainer

API = "trainer.kubeflow.org/v1alpha1"


def job(name: str, code: str, tmp_path: Path, nodes: int = 2, **spec: Any) -> dict[str, Any]:
    (tmp_path / "volume").mkdir(exist_ok=True)
    patch = {"manager": "test", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": "node", "template": {"spec": {"template": {"spec": {"containers": [
            {"name": "node", "volumeMounts": [
                {"name": "run-volume", "mountPath": str(tmp_path / "volume")}]}]}}}}}]}}}}  # fmt: skip
    return {
        "apiVersion": API, "kind": "TrainJob", "metadata": {"name": name},
        "spec": {"runtimeRef": {"name": "rt"}, "runtimePatches": [patch], **spec, "trainer": {
            "command": ["python", "-c", code], "numNodes": nodes, "numProcPerNode": 3,
            "env": [{"name": "FROM_JOB", "value": "yes"},
                    {"name": "TOKEN", "valueFrom": {"secretKeyRef": {
                        "name": "creds", "key": "TOKEN", "optional": True}}}]}},
    }  # fmt: skip


def wait_done(cluster: LocalCluster, name: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        obj = cluster.get(API, "TrainJob", name) or {}
        if is_true(obj, "Complete") or is_true(obj, "Failed"):
            return obj
        time.sleep(0.3)
    raise AssertionError(f"{name} did not finish")


def test_nodes_get_pet_env_and_only_the_objects_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAUNCHER_SECRET", "must-not-leak")
    cluster = LocalCluster(tmp_path / "cluster", controllers={"TrainJob": LocalTrainer()})
    out = tmp_path / "volume"
    code = ("import json, os; r = os.environ['PET_NODE_RANK']; "
            f"open(f'{out}/env-{{r}}.json', 'w').write(json.dumps(dict(os.environ))); "
            "open('cwd-marker', 'w').write(os.getcwd())")  # fmt: skip
    cluster.create(job("envjob", code, tmp_path))
    obj = wait_done(cluster, "envjob")
    assert is_true(obj, "Complete") and is_true(obj, "Created")
    envs = [json.loads((out / f"env-{r}.json").read_text()) for r in (0, 1)]
    for rank, env in enumerate(envs):
        assert env["PET_NODE_RANK"] == str(rank) and env["PET_NNODES"] == "2"
        assert env["PET_NPROC_PER_NODE"] == "3" and env["PET_MASTER_ADDR"] == "127.0.0.1"
        assert env["FROM_JOB"] == "yes" and "TOKEN" not in env  # optional secret absent
        assert "LAUNCHER_SECRET" not in env
    assert envs[0]["PET_MASTER_PORT"] == envs[1]["PET_MASTER_PORT"]
    work = cluster.root / "work" / "trainjob" / "envjob"
    assert (work / "node-0" / "cwd-marker").is_file() and (work / "node-1" / "cwd-marker").is_file()


def test_secret_values_come_from_secret_objects(tmp_path: Path) -> None:
    import base64

    cluster = LocalCluster(tmp_path / "cluster", controllers={"TrainJob": LocalTrainer()})
    cluster.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                    "data": {"TOKEN": base64.b64encode(b"s3cret").decode()}})  # fmt: skip
    code = f"import os; open('{tmp_path}/volume/t', 'w').write(os.environ['TOKEN'])"
    cluster.create(job("secretjob", code, tmp_path, nodes=1))
    assert is_true(wait_done(cluster, "secretjob"), "Complete")
    assert (tmp_path / "volume" / "t").read_text() == "s3cret"


def test_a_failing_node_fails_the_job_with_its_message(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", controllers={"TrainJob": LocalTrainer()})
    code = ("import os, sys, time\nif os.environ['PET_NODE_RANK'] == '1':\n"
            "    sys.exit('ValueError: data: /x.jsonl does not exist')\ntime.sleep(60)")  # fmt: skip
    cluster.create(job("failjob", code, tmp_path))
    obj = wait_done(cluster, "failjob")
    cond = condition(obj, "Failed") or {}
    assert "node 1 exited with 1" in cond["message"] and "/x.jsonl" in cond["message"]
    assert "--- node-1.log" in cluster.logs({"jobset.sigs.k8s.io/jobset-name": "failjob"})


def test_missing_volume_and_deadline(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", controllers={"TrainJob": LocalTrainer()})
    bad = job("novol", "pass", tmp_path, nodes=1)
    bad["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"][0]["mountPath"] = str(tmp_path / "absent")  # fmt: skip
    cluster.create(bad)
    assert "mountPath" in (condition(wait_done(cluster, "novol"), "Failed") or {})["message"]
    cluster.create(job("slow", "import time; time.sleep(60)", tmp_path, nodes=1,
                       activeDeadlineSeconds=1))  # fmt: skip
    cond = condition(wait_done(cluster, "slow"), "Failed") or {}
    assert cond["reason"] == "DeadlineExceeded"


def test_delete_stops_the_nodes_and_frees_the_name(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "cluster", controllers={"TrainJob": LocalTrainer()})
    code = f"import time; open('{tmp_path}/volume/started', 'w').write('1'); time.sleep(120)"
    cluster.create(job("longjob", code, tmp_path, nodes=1))
    deadline = time.monotonic() + 30
    while not (tmp_path / "volume" / "started").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    obj = cluster.get(API, "TrainJob", "longjob")
    assert is_true(obj, "Running")
    status = json.loads((cluster.root / "work/trainjob/longjob/status.json").read_text())
    assert cluster.delete(API, "TrainJob", "longjob")
    from deepcritic.platform.processes import pid_alive

    assert not pid_alive(status["supervisor_pid"]) and not pid_alive(status["node_pids"][0])
    cluster.create(job("longjob", "pass", tmp_path, nodes=1))  # the name is free again
    assert is_true(wait_done(cluster, "longjob"), "Complete")
