"""deepcritic.platform: the local stand-in API server, the run volume and input fetching, the exit
handler's cleanup, and the InferenceService rollout (create, canary, promote, roll back) against a
real MLflow registry. Every object the code creates is validated against its schema."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deepcritic.platform import cleanup as cleanup_mod
from deepcritic.platform import deploy, storage
from deepcritic.platform.cluster import Conflict, NotFound, merge_patch
from deepcritic.platform.local_cluster import LocalCluster
from support.k8s_schemas import validate

# ---------------------------------------------------------------- the local API server


def test_merge_patch_is_rfc7386() -> None:
    target = {"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]}
    assert merge_patch(target, {"b": {"c": None, "e": 4}, "l": [3]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "l": [3],
    }
    assert target["b"] == {"c": 2, "d": 3}  # not mutated


def _pvc(name: str = "claim") -> dict[str, Any]:
    return storage.claim_manifest(name, "10Gi", storage_class="rwx")


def test_local_cluster_crud_and_labels(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, controllers={})
    obj = _pvc()
    obj["metadata"]["labels"]["run"] = "r1"
    created = cluster.create(obj)
    assert created["metadata"]["generation"] == 1
    with pytest.raises(Conflict):
        cluster.create(obj)
    patched = cluster.patch("v1", "PersistentVolumeClaim", "claim",
                            {"spec": {"resources": {"requests": {"storage": "20Gi"}}}})  # fmt: skip
    assert patched["metadata"]["generation"] == 2
    assert patched["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert [
        o["metadata"]["name"] for o in cluster.list("v1", "PersistentVolumeClaim", {"run": "r1"})
    ] == ["claim"]
    assert cluster.list("v1", "PersistentVolumeClaim", {"run": "r2"}) == []
    assert cluster.delete("v1", "PersistentVolumeClaim", "claim") is True
    assert cluster.delete("v1", "PersistentVolumeClaim", "claim") is False
    with pytest.raises(NotFound):
        cluster.patch("v1", "PersistentVolumeClaim", "claim", {})


def test_claim_manifest_validates_and_wait_for_claim(tmp_path: Path) -> None:
    validate(_pvc())
    validate(storage.claim_manifest("deepcritic-run", "4Ti"))
    cluster = LocalCluster(tmp_path, controllers={})
    with pytest.raises(TimeoutError, match="create_run_volume"):
        storage.wait_for_claim(cluster, "claim", timeout_s=0.2, poll_s=0.05)
    cluster.create({**_pvc(), "status": {"phase": "Bound"}})
    assert storage.wait_for_claim(cluster, "claim", timeout_s=1, poll_s=0.05) == "Bound"


# ---------------------------------------------------------------- the run volume and inputs


def test_run_dir_needs_volume_and_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(storage.RUN_VOLUME_ENV, raising=False)
    monkeypatch.setattr(storage, "MOUNT_PATH", str(tmp_path / "not-mounted"))
    with pytest.raises(storage.RunVolumeError, match="run_volume_claim"):
        storage.run_dir("seed")
    monkeypatch.setenv(storage.RUN_VOLUME_ENV, str(tmp_path / "vol"))
    monkeypatch.delenv(storage.RUN_ID_ENV, raising=False)
    with pytest.raises(storage.RunVolumeError, match="KFP_RUN_ID"):
        storage.run_dir("seed")
    monkeypatch.setenv(storage.RUN_ID_ENV, "run/1 x")
    path = storage.run_dir("seed", "0/4")
    assert path == tmp_path / "vol" / "runs" / "run-1-x" / "seed" / "0-4" and path.is_dir()


@pytest.fixture()
def http_files(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server over tmp_path/www; yields (base URL, request paths seen)."""
    www = tmp_path / "www"
    www.mkdir()
    (www / "data.jsonl").write_text('{"a": 1}\n')
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, directory=str(www), **kw)

        def log_message(self, *args: Any) -> None:
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()


def test_fetch_downloads_once_into_the_volume_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_files: tuple[str, list[str]]
) -> None:
    base, seen = http_files
    monkeypatch.setenv(storage.RUN_VOLUME_ENV, str(tmp_path / "vol"))
    first = storage.fetch(f"{base}/data.jsonl")
    assert first.read_text() == '{"a": 1}\n'
    assert (tmp_path / "vol" / "cache" / "http") in first.parents
    assert storage.fetch(f"{base}/data.jsonl") == first
    assert len(seen) == 1  # the second task found the complete copy
    with pytest.raises(Exception, match="404"):
        storage.fetch(f"{base}/missing.jsonl")
    local = tmp_path / "x.jsonl"
    local.write_text("{}")
    assert storage.fetch(str(local)) == local and storage.fetch(f"file://{local}") == local
    with pytest.raises(FileNotFoundError, match="mounted"):
        storage.fetch("/no/such/file")


def test_data_spec_accepts_a_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_files: tuple[str, list[str]]
) -> None:
    from deepcritic.data.loaders import load_solutions

    base, _ = http_files
    src = Path(__file__).resolve().parents[1] / "fixtures" / "data"
    prm = next(src.glob("prm800k*.jsonl"), None)
    if prm is None:
        pytest.skip("no PRM800K fixture")
    (tmp_path / "www" / "prm.jsonl").write_bytes(prm.read_bytes())
    monkeypatch.setenv(storage.RUN_VOLUME_ENV, str(tmp_path / "vol"))
    via_uri, _ = load_solutions(f"prm800k:{base}/prm.jsonl", skip_invalid=True)
    direct, _ = load_solutions(f"prm800k:{prm}", skip_invalid=True)
    assert via_uri and [s.steps for s in via_uri] == [s.steps for s in direct]


# ---------------------------------------------------------------- the exit handler


def test_cleanup_deletes_trainjobs_and_keeps_a_failed_runs_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(storage.RUN_VOLUME_ENV, str(tmp_path / "vol"))
    monkeypatch.setenv(storage.RUN_ID_ENV, "run-1")
    cluster = LocalCluster(tmp_path / "api", controllers={})
    for name, run in (("sft-a", "run-1"), ("grpo-a", "run-1"), ("sft-other", "run-2")):
        cluster.create({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
                        "metadata": {"name": name, "labels": {cleanup_mod.RUN_LABEL: run}},
                        "spec": {"runtimeRef": {"name": "deepcritic-deepspeed"}}})  # fmt: skip
    folder = storage.run_dir("seed")
    failed = cleanup_mod.cleanup(cluster, run_id="run-1", state="FAILED")
    assert sorted(failed.deleted) == ["TrainJob/grpo-a", "TrainJob/sft-a"]
    assert folder.is_dir() and "retry resumes" in failed.kept[0]
    assert [
        j["metadata"]["name"] for j in cluster.list("trainer.kubeflow.org/v1alpha1", "TrainJob", {})
    ] == ["sft-other"]
    cluster.create(_pvc("deepcritic-run"))
    done = cleanup_mod.cleanup(
        cluster, run_id="run-1", state="SUCCEEDED", delete_claim="deepcritic-run"
    )
    assert not folder.exists() and "PersistentVolumeClaim/deepcritic-run" in done.deleted


# ---------------------------------------------------------------- the rollout


class ScriptedKServe:
    """A stand-in KServe controller for the rollout's own logic: a revision is Ready unless its
    model URI is listed in ``broken`` (then it fails like a crash-looping predictor)."""

    def __init__(self, broken: set[str]) -> None:
        self.broken = broken
        self.seen: list[dict[str, Any]] = []

    def reconcile(self, cluster: LocalCluster, obj: dict[str, Any]) -> None:
        validate(obj)  # every object the rollout creates or patches is a valid InferenceService
        self.seen.append(obj)

    def observe(self, cluster: LocalCluster, obj: dict[str, Any]) -> dict[str, Any]:
        uri = deploy.served_uri(obj)
        ok = uri not in self.broken
        gen = obj["metadata"]["generation"]
        obj = dict(obj)
        obj["status"] = {
            "observedGeneration": gen, "url": f"http://critic.local/{gen}",
            "conditions": [{"type": "Ready", "status": str(ok),
                            "reason": "Ready" if ok else "RevisionFailed",
                            "message": "" if ok else "CrashLoopBackOff"}],
            "components": {"predictor": {"latestCreatedRevision": f"r{gen}",
                                         "latestReadyRevision": f"r{gen}" if ok else None}},
        }  # fmt: skip
        return obj

    def stop(self, cluster: LocalCluster, obj: dict[str, Any]) -> None:
        pass


@pytest.fixture()
def registry(local_mlflow: str, tmp_path: Path) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(local_mlflow, local_mlflow)
    client.create_registered_model("critic")
    for _ in range(3):
        client.create_model_version("critic", str(tmp_path), run_id=None)
    return client


def _spec(**kw: Any) -> deploy.DeploySpec:
    return deploy.DeploySpec(model_name="critic", poll_s=0.01, ready_timeout_s=2, **kw)


def test_rollout_creates_then_canaries_then_promotes(tmp_path: Path, registry: Any) -> None:
    ctl = ScriptedKServe(broken=set())
    cluster = LocalCluster(tmp_path / "api", controllers={"InferenceService": ctl})
    registry.set_registered_model_alias("critic", "champion", "1")
    first = deploy.rollout(cluster, _spec(), registry)
    assert (first.model_uri, first.previous_uri, first.created) == ("models:/critic/1", None, True)
    registry.set_registered_model_alias("critic", "champion", "2")
    second = deploy.rollout(cluster, _spec(canary_percent=10), registry)
    assert (second.model_uri, second.previous_uri) == ("models:/critic/2", "models:/critic/1")
    canary, promoted = ctl.seen[-2]["spec"]["predictor"], ctl.seen[-1]["spec"]["predictor"]
    assert canary["canaryTrafficPercent"] == 10 and "canaryTrafficPercent" not in promoted
    assert promoted["model"]["args"] == ["--model-uri=models:/critic/2"]  # pinned, not @champion
    again = deploy.rollout(cluster, _spec(), registry)  # idempotent: a retried task changes nothing
    assert again.previous_uri == "models:/critic/2" and len(ctl.seen) == 3


def test_failed_rollout_rolls_back_traffic_and_alias(tmp_path: Path, registry: Any) -> None:
    ctl = ScriptedKServe(broken={"models:/critic/3"})
    cluster = LocalCluster(tmp_path / "api", controllers={"InferenceService": ctl})
    registry.set_registered_model_alias("critic", "champion", "2")
    deploy.rollout(cluster, _spec(), registry)
    registry.set_registered_model_alias("critic", "champion", "3")
    with pytest.raises(deploy.DeployError, match="rolled back to models:/critic/2.*CrashLoop"):
        deploy.rollout(cluster, _spec(), registry)
    obj = cluster.get(deploy.API_VERSION, deploy.KIND, "deepcritic")
    assert deploy.served_uri(obj) == "models:/critic/2"
    assert "canaryTrafficPercent" not in obj["spec"]["predictor"]
    assert str(registry.get_model_version_by_alias("critic", "champion").version) == "2"
    assert registry.get_model_version("critic", "3").tags[deploy.FAILED_TAG] == "failed"


def test_failed_first_rollout_removes_service_and_alias(tmp_path: Path, registry: Any) -> None:
    from mlflow.exceptions import MlflowException

    ctl = ScriptedKServe(broken={"models:/critic/1"})
    cluster = LocalCluster(tmp_path / "api", controllers={"InferenceService": ctl})
    registry.set_registered_model_alias("critic", "champion", "1")
    with pytest.raises(deploy.DeployError):
        deploy.rollout(cluster, _spec(), registry)
    assert cluster.get(deploy.API_VERSION, deploy.KIND, "deepcritic") is None
    with pytest.raises(MlflowException):
        registry.get_model_version_by_alias("critic", "champion")


def test_deploy_spec_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="canary_percent"):
        deploy.DeploySpec(canary_percent=0)
    with pytest.raises(ValueError, match="ready_timeout_s"):
        deploy.DeploySpec(ready_timeout_s=0)
