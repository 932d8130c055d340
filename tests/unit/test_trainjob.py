"""The TrainJob path: the object validates against the Trainer v2 CRD, a deterministic name, and
run_trainjob's lifecycle (create or follow, wait, fail with the trainer's message, always delete)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepcritic.launch import trainer_command
from deepcritic.platform import trainjob
from deepcritic.platform.cluster import Conflict, Obj
from deepcritic.platform.trainjob import (
    TrainJobFailed,
    TrainJobSpec,
    run_trainjob,
    trainjob_manifest,
    trainjob_name,
)
from support.trainer_crd import DNS_1035, validate


def spec(tmp_path: Path, **kw: Any) -> TrainJobSpec:
    base: dict[str, Any] = {
        "stage": "sft",
        "config": {"out_dir": str(tmp_path / "out"), "deepspeed": "zero3"},
        "config_file": str(tmp_path / "sft.yaml"),
        "image": "ghcr.io/deepcritic/train:0.1.0-cu128",
        "name": trainjob_name("3f1c9a2e-7b6d-4e21-9c55-0a1b2c3d4e5f", "sft"),
        "run_id": "3f1c9a2e-7b6d-4e21-9c55-0a1b2c3d4e5f",
        "task": "sft",
        "num_nodes": 2,
        "gpus_per_node": 8,
        "volume_claim": "deepcritic-run",
        "mount_path": "/mnt/deepcritic-run",
        "env": {"KFP_RUN_ID": "3f1c9a2e", "MLFLOW_TRACKING_URI": "http://mlflow:5000"},
        "mlflow_secret": "mlflow-credentials",
    }
    return TrainJobSpec(**{**base, **kw})


def test_manifest_validates_against_the_trainjob_crd(tmp_path: Path) -> None:
    m = trainjob_manifest(spec(tmp_path, deadline_s=3600))
    validate(m)
    tr = m["spec"]["trainer"]
    assert (tr["numNodes"], tr["numProcPerNode"]) == (2, 8)
    assert tr["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert m["spec"]["runtimeRef"] == {"name": "deepcritic-deepspeed", "kind": "TrainingRuntime",
                                       "apiGroup": "trainer.kubeflow.org"}  # fmt: skip
    assert m["spec"]["activeDeadlineSeconds"] == 3600
    assert m["metadata"]["labels"]["deepcritic.dev/run-id"].startswith("3f1c9a2e")
    # CPU rehearsal shape: no GPU request, processes given explicitly
    cpu = trainjob_manifest(spec(tmp_path, gpus_per_node=0, procs_per_node=2, num_nodes=1))
    validate(cpu)
    assert "resourcesPerNode" not in cpu["spec"]["trainer"]
    assert cpu["spec"]["trainer"]["numProcPerNode"] == 2


def test_validator_rejects_a_broken_trainjob(tmp_path: Path) -> None:
    import jsonschema

    m = trainjob_manifest(spec(tmp_path))
    m["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate(m)
    m = trainjob_manifest(spec(tmp_path))
    m["spec"]["trainer"]["envFrom"] = [{"secretRef": {"name": "x"}}]  # not in the TrainJob API
    del m["spec"]["runtimeRef"]
    with pytest.raises(jsonschema.ValidationError):
        validate(m)


def test_command_is_accelerate_with_zero3_reading_the_config_on_the_volume(tmp_path: Path) -> None:
    m = trainjob_manifest(spec(tmp_path))
    cmd = m["spec"]["trainer"]["command"]
    assert cmd == trainer_command("sft", str(tmp_path / "sft.yaml"))
    assert cmd[:5] == ["python", "-m", "deepcritic.launch", "--launcher", "accelerate"]
    assert cmd[cmd.index("--accelerate-config") + 1] == "zero3.yaml"
    assert cmd[-3:] == ["sft", "--config", str(tmp_path / "sft.yaml")]
    assert "torchrun" not in " ".join(cmd) and "deepcritic.cli" not in cmd


def test_volume_env_and_credentials(tmp_path: Path) -> None:
    m = trainjob_manifest(spec(tmp_path, node_selector={"nvidia.com/gpu.product": "H100"}))
    env = {e["name"]: e for e in m["spec"]["trainer"]["env"]}
    assert env["DEEPCRITIC_RUN_VOLUME"]["value"] == "/mnt/deepcritic-run"
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000"
    ref = env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {
        "name": "mlflow-credentials",
        "key": "password",  # the Secret's keys are the pipeline's and the ServingRuntime's
        "optional": True,
    }
    (patch,) = m["spec"]["runtimePatches"]
    (rj,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = rj["template"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "run-volume",
                               "persistentVolumeClaim": {"claimName": "deepcritic-run"}}]  # fmt: skip
    assert pod["containers"] == [{"name": "node", "volumeMounts": [
        {"name": "run-volume", "mountPath": "/mnt/deepcritic-run"}]}]  # fmt: skip
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert "tolerations" not in pod  # the runtime's stay unless overridden
    bare = trainjob_manifest(spec(tmp_path, volume_claim="", mlflow_secret=None))
    assert "runtimePatches" not in bare["spec"]
    assert not [e for e in bare["spec"]["trainer"]["env"] if "valueFrom" in e]


def test_name_is_deterministic_dns1035_and_short() -> None:
    a = trainjob_name("3f1c9a2e-7b6d-4e21-9c55-0a1b2c3d4e5f", "sft")
    assert a == trainjob_name("3f1c9a2e-7b6d-4e21-9c55-0a1b2c3d4e5f", "sft")  # a retry: same job
    assert a != trainjob_name("3f1c9a2e-7b6d-4e21-9c55-0a1b2c3d4e5f", "grpo")
    assert a != trainjob_name("3f1c9a2e-7b6d-4e21-9c55-0a1b2c3d4e5e", "sft")
    for run, task in [("RUN_ID with spaces/ and UPPER" * 4, "Grpo_Task.1"), ("42", "x"),
                      ("---", "sft")]:  # fmt: skip
        name = trainjob_name(run, task)
        assert DNS_1035.match(name) and len(name) <= 40, name
    with pytest.raises(ValueError, match="run id"):
        trainjob_name("", "sft")


def test_spec_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stage"):
        spec(tmp_path, stage="dpo")
    with pytest.raises(ValueError, match="num_nodes"):
        spec(tmp_path, num_nodes=0)
    with pytest.raises(ValueError, match="procs_per_node"):
        spec(tmp_path, gpus_per_node=0)
    with pytest.raises(ValueError, match="mount_path"):
        spec(tmp_path, mount_path="relative/dir")


class FakeCluster:
    """A scripted API server: each get() advances the job through ``phases``."""

    namespace = "ns"

    def __init__(self, phases: list[str], logs: list[str] | None = None) -> None:
        self.phases, self.log_texts = list(phases), list(logs or [""])
        self.objects: dict[str, Obj] = {}
        self.created: list[Obj] = []
        self.deleted: list[str] = []

    def create(self, obj: Obj) -> Obj:
        if obj["metadata"]["name"] in self.objects:
            raise Conflict("exists")
        self.created.append(obj)
        self.objects[obj["metadata"]["name"]] = {**obj, "status": {}}
        return obj

    def get(self, api_version: str, kind: str, name: str) -> Obj | None:
        obj = self.objects.get(name)
        if obj is None:
            return None
        phase = self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]
        cond = {"type": phase, "status": "True", "reason": f"{phase}Reason",
                "message": f"trainer says {phase}"}  # fmt: skip
        obj["status"] = {"conditions": [cond]}
        return obj

    def patch(self, api_version: str, kind: str, name: str, patch: Obj) -> Obj:
        raise NotImplementedError

    def delete(self, api_version: str, kind: str, name: str) -> bool:
        self.deleted.append(name)
        return self.objects.pop(name, None) is not None

    def list(self, api_version: str, kind: str, labels: dict[str, str]) -> list[Obj]:
        return list(self.objects.values())

    def logs(self, selector: dict[str, str], tail: int = 200) -> str:
        return self.log_texts.pop(0) if len(self.log_texts) > 1 else self.log_texts[0]


def _checkpoint(tmp_path: Path) -> None:
    (tmp_path / "out" / "final").mkdir(parents=True)
    (tmp_path / "out" / "final" / "config.json").write_text("{}")


def test_run_trainjob_creates_waits_and_deletes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _checkpoint(tmp_path)
    s = spec(tmp_path)
    logs = ["--- pod-0\nstep 1", "--- pod-0\nstep 1\nstep 2", "--- pod-0\nstep 2\nstep 3"]
    cluster = FakeCluster(["Created", "Created", "Complete"], logs)
    result = run_trainjob(cluster, s, timeout_s=60, poll_s=0.01)
    assert result.checkpoint == str(tmp_path / "out" / "final") and not result.followed_existing
    assert [c["metadata"]["name"] for c in cluster.created] == [s.name]
    assert cluster.deleted == [s.name] and not cluster.objects
    out = capsys.readouterr().out
    assert out.count("[pod-0] step 1") == 1 and out.count("[pod-0] step 2") == 1  # streamed once
    assert f"jobset.sigs.k8s.io/jobset-name={s.name}" in out  # how to follow it with kubectl


def test_a_retry_follows_the_existing_job(tmp_path: Path) -> None:
    _checkpoint(tmp_path)
    s = spec(tmp_path)
    cluster = FakeCluster(["Created", "Complete"])
    cluster.objects[s.name] = trainjob_manifest(s)  # the first attempt's job
    result = run_trainjob(cluster, s, timeout_s=60, poll_s=0.01)
    assert result.followed_existing and cluster.created == [] and cluster.deleted == [s.name]


def test_failure_raises_with_the_trainers_message_and_deletes(tmp_path: Path) -> None:
    s = spec(tmp_path)
    cluster = FakeCluster(["Created", "Failed"], ["--- pod-0\nValueError: data: x.jsonl missing"])
    with pytest.raises(TrainJobFailed, match="trainer says Failed") as err:
        run_trainjob(cluster, s, timeout_s=60, poll_s=0.01)
    assert "ValueError: data: x.jsonl missing" in str(err.value)
    assert cluster.deleted == [s.name]


def test_timeout_deletes_the_job(tmp_path: Path) -> None:
    s = spec(tmp_path)
    cluster = FakeCluster(["Created"])
    with pytest.raises(TimeoutError, match=s.name):
        run_trainjob(cluster, s, timeout_s=0.05, poll_s=0.01)
    assert cluster.deleted == [s.name]


def test_complete_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    s = spec(tmp_path)
    with pytest.raises(TrainJobFailed, match="config.json"):
        run_trainjob(FakeCluster(["Complete"]), s, timeout_s=60, poll_s=0.01)


def test_an_earlier_failed_job_is_replaced(tmp_path: Path) -> None:
    _checkpoint(tmp_path)
    s = spec(tmp_path)
    cluster = FakeCluster(["Failed", "Complete"])
    cluster.objects[s.name] = trainjob_manifest(s)
    run_trainjob(cluster, s, timeout_s=60, poll_s=0.01)
    assert len(cluster.created) == 1 and cluster.deleted == [s.name, s.name]


def test_new_lines_overlap() -> None:
    assert trainjob.new_lines(["a", "b"], ["b", "c"]) == ["c"]
    assert trainjob.new_lines([], ["a"]) == ["a"]
    assert trainjob.new_lines(["a", "b"], ["a", "b"]) == []
    assert trainjob.new_lines(["x"], ["a", "b"]) == ["a", "b"]
