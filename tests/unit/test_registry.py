"""Registry: register a checkpoint folder as a model version; gated, idempotent, race-safe promotion."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from deepcritic import registry
from deepcritic.registry import PromoteConfig, RegisterConfig, RegistryError, promote, register

NAME = "critic-test"


@pytest.fixture(scope="session")
def _migrated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One MLflow SQLite store with its schema migrated (migrations take seconds; copies do not)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}", f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def _fast_store(request: pytest.FixtureRequest, _migrated_db: Path) -> None:
    if "local_mlflow" in request.fixturenames:
        uri: str = request.getfixturevalue("local_mlflow")
        shutil.copy(_migrated_db, uri.removeprefix("sqlite:///"))


def _checkpoint(root: Path, seed: int) -> Path:
    import torch
    from safetensors.torch import save_file

    path = root / f"ckpt{seed}"
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    (path / "tokenizer.json").write_text("{}")
    save_file({"w": torch.full((4, 4), float(seed))}, str(path / "model.safetensors"))
    return path


def _register(tmp_path: Path, seed: int, f1: float, **kw: object) -> str:
    cfg = RegisterConfig(
        checkpoint=str(_checkpoint(tmp_path, seed)),
        model_name=NAME,
        base_model="tiny",
        data_hash="abc123",
        metrics={"avg_f1": f1},
        **kw,  # type: ignore[arg-type]
    )
    return register(cfg).version


def _champion(uri: str) -> str | None:
    from mlflow import MlflowClient

    try:
        return str(MlflowClient(uri, uri).get_model_version_by_alias(NAME, "champion").version)
    except Exception:
        return None


def test_register_logs_folder_and_tags_version(local_mlflow: str, tmp_path: Path) -> None:
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    ckpt = _checkpoint(tmp_path, 1)
    res = register(
        RegisterConfig(checkpoint=str(ckpt), model_name=NAME, base_model="tiny",
                       data_hash="abc123", metrics={"avg_f1": 0.4, "f1/gsm8k": 0.5})
    )  # fmt: skip
    assert res.version == "1" and not res.reused
    mv = MlflowClient(local_mlflow, local_mlflow).get_model_version(NAME, "1")
    assert mv.run_id == res.run_id and mv.source == res.source
    assert mv.tags["run_id"] == res.run_id
    assert mv.tags["base_model"] == "tiny" and mv.tags["data_hash"] == "abc123"
    assert float(mv.tags["metric.avg_f1"]) == pytest.approx(0.4)
    assert mv.tags["checkpoint_sha256"] == registry.hash_paths([ckpt])
    local = Path(download_artifacts(artifact_uri=res.source, dst_path=str(tmp_path / "dl")))
    assert sorted(p.name for p in local.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"
    ]  # fmt: skip
    run = MlflowClient(local_mlflow).get_run(res.run_id)
    assert run.data.metrics["avg_f1"] == pytest.approx(0.4)


def test_register_same_checkpoint_twice_reuses_version(local_mlflow: str, tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, 2)
    cfg = RegisterConfig(checkpoint=str(ckpt), model_name=NAME, metrics={"avg_f1": 0.1})
    first, second = register(cfg), register(cfg)
    assert (first.version, second.version) == ("1", "1") and second.reused
    assert second.metrics == {"avg_f1": pytest.approx(0.1)}


def test_register_reads_metrics_json(local_mlflow: str, tmp_path: Path) -> None:
    mj = tmp_path / "eval.json"
    mj.write_text(json.dumps({"avg_f1": 0.3, "gsm8k": {"f1": 0.2}, "name": "x", "ok": True}))
    res = register(
        RegisterConfig(checkpoint=str(_checkpoint(tmp_path, 3)), model_name=NAME,
                       metrics_json=str(mj))
    )  # fmt: skip
    assert res.metrics == {"avg_f1": pytest.approx(0.3), "f1/gsm8k": pytest.approx(0.2)}


def test_register_rejects_non_checkpoint(local_mlflow: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="config.json"):
        register(RegisterConfig(checkpoint=str(tmp_path / "empty"), model_name=NAME))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        register(RegisterConfig(checkpoint=str(tmp_path / "nope"), model_name=NAME))


def test_register_needs_tracking(no_mlflow: None, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="tracking_uri"):
        register(RegisterConfig(checkpoint=str(_checkpoint(tmp_path, 4)), model_name=NAME))


@pytest.mark.parametrize(
    ("cand", "champ", "margin", "expected", "word"),
    [
        (0.5, None, 0.0, True, "no champion"),
        (0.5, 0.4, 0.0, True, "better"),
        (0.3, 0.4, 0.0, False, "worse"),
        (0.4, 0.4, 0.0, False, "equal"),
        (0.42, 0.4, 0.05, False, "margin"),
        (0.46, 0.4, 0.05, True, "better"),
    ],
)
def test_decide(cand: float, champ: float | None, margin: float, expected: bool, word: str) -> None:
    ok, why = registry.decide(cand, champ, margin)
    assert ok is expected and word in why


def test_promote_gate_sequence(local_mlflow: str, tmp_path: Path) -> None:
    v1 = _register(tmp_path, 1, 0.40)
    r = promote(PromoteConfig(model_name=NAME, version=v1))
    assert r.promoted and r.changed and "no champion" in r.reason and _champion(local_mlflow) == v1

    v2 = _register(tmp_path, 2, 0.30)  # worse
    r = promote(PromoteConfig(model_name=NAME, version=v2))
    assert not r.promoted and not r.changed and "worse" in r.reason
    assert r.champion_version == v1 and r.champion_score == pytest.approx(0.4)

    v3 = _register(tmp_path, 3, 0.40)  # equal
    r = promote(PromoteConfig(model_name=NAME, version=v3))
    assert not r.promoted and "equal" in r.reason and _champion(local_mlflow) == v1

    v4 = _register(tmp_path, 4, 0.43)  # better but within margin
    r = promote(PromoteConfig(model_name=NAME, version=v4, margin=0.05))
    assert not r.promoted and "margin" in r.reason and _champion(local_mlflow) == v1

    r = promote(PromoteConfig(model_name=NAME, version=v4))  # strictly better, no margin
    assert r.promoted and r.changed and _champion(local_mlflow) == v4

    from mlflow import MlflowClient

    tags = MlflowClient(local_mlflow, local_mlflow).get_model_version(NAME, v2).tags
    assert tags["deepcritic.promotion.decision"] == "rejected"
    assert "worse" in tags["deepcritic.promotion.reason"]
    assert tags["deepcritic.promotion.compared_to"] == v1


def test_promote_rerun_is_idempotent(local_mlflow: str, tmp_path: Path) -> None:
    v1 = _register(tmp_path, 1, 0.5)
    v2 = _register(tmp_path, 2, 0.2)
    first = promote(PromoteConfig(model_name=NAME, version=v1))
    again = promote(PromoteConfig(model_name=NAME, version=v1))
    assert first.changed and again.promoted and not again.changed
    assert "already champion" in again.reason and _champion(local_mlflow) == v1
    rej1 = promote(PromoteConfig(model_name=NAME, version=v2))
    rej2 = promote(PromoteConfig(model_name=NAME, version=v2))
    assert (rej1.promoted, rej2.promoted) == (False, False) and rej1.reason == rej2.reason
    assert _champion(local_mlflow) == v1


def test_promote_latest_version_by_default_and_errors(local_mlflow: str, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no versions"):
        promote(PromoteConfig(model_name=NAME))
    _register(tmp_path, 1, 0.1)
    v2 = _register(tmp_path, 2, 0.2)
    assert promote(PromoteConfig(model_name=NAME)).version == v2
    with pytest.raises(RegistryError, match="not found"):
        promote(PromoteConfig(model_name=NAME, version="99"))
    v3 = register(
        RegisterConfig(checkpoint=str(_checkpoint(tmp_path, 3)), model_name=NAME)
    ).version  # no metrics
    with pytest.raises(RegistryError, match="avg_f1"):
        promote(PromoteConfig(model_name=NAME, version=v3))


@pytest.mark.parametrize("serialized", [True, False], ids=["file-lock", "remote-repair"])
def test_concurrent_promotions_end_with_better_champion(
    local_mlflow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serialized: bool
) -> None:
    if not serialized:  # behave as against a remote server: no file lock, repair after set
        monkeypatch.setattr(registry, "_lock_path", lambda uri: None)
        monkeypatch.setattr(registry, "_THREAD_LOCK", _NoLock())
    worse, better = _register(tmp_path, 1, 0.3), _register(tmp_path, 2, 0.6)
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, registry.PromoteResult] = {}
    errors: list[BaseException] = []

    def go(version: str) -> None:
        try:
            barrier.wait()
            results[version] = promote(PromoteConfig(model_name=NAME, version=version))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(v,)) for v in (worse, better)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert _champion(local_mlflow) == better
    assert results[better].promoted


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_cli_register_and_promote(
    local_mlflow: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepcritic.cli import main

    ckpt = _checkpoint(tmp_path, 7)
    rc = main(["register", "--checkpoint", str(ckpt), "--model-name", NAME,
               "--metrics", "{avg_f1: 0.25}"])  # fmt: skip
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == "1" and out["metrics"] == {"avg_f1": 0.25}
    assert main(["promote", "--model-name", NAME, "--version", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["promoted"] is True
    assert _champion(local_mlflow) == "1"
