"""Registry on a local SQLite store: registration, the promotion gate, integrity, pins, the lock.

Concurrency against a real remote ``mlflow server`` is in tests/component/test_registry_server.py.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest

from deepcritic import registry
from deepcritic.registry import (
    IntegrityError,
    OperatorConfig,
    PromoteConfig,
    RegisterConfig,
    RegistryError,
    lease,
    promote,
    register,
)
from support.checkpoints import (
    delete_artifacts,
    make_checkpoint,
    replace_weights,
    stored_folder,
)

NAME = "critic-test"
GOOD_PARSE = {"avg_parse_rate": 95.0}


def _register(tmp_path: Path, seed: int, f1: float, **metrics: float) -> str:
    cfg = RegisterConfig(
        checkpoint=str(make_checkpoint(tmp_path, seed)),
        model_name=NAME,
        base_model="tiny",
        data_hash="abc123",
        metrics={"avg_f1": f1, **GOOD_PARSE, **metrics},
    )
    return register(cfg).version


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(uri, uri)


def _champion(uri: str) -> str | None:
    try:
        return str(_client(uri).get_model_version_by_alias(NAME, "champion").version)
    except Exception:
        return None


def _folder(uri: str, version: str) -> Path:
    return stored_folder(_client(uri).get_model_version(NAME, version).source)


def _promote(version: str, **kw: object) -> registry.PromoteResult:
    return promote(PromoteConfig(model_name=NAME, version=version, **kw))  # type: ignore[arg-type]


# ---------------------------------------------------------------- register


def test_register_logs_folder_and_tags_version(local_mlflow: str, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts

    ckpt = make_checkpoint(tmp_path, 1)
    res = register(
        RegisterConfig(checkpoint=str(ckpt), model_name=NAME, base_model="tiny",
                       data_hash="abc123", metrics={"avg_f1": 40.0, "f1.gsm8k": 50.0})
    )  # fmt: skip
    assert res.version == "1" and not res.reused
    mv = _client(local_mlflow).get_model_version(NAME, "1")
    assert mv.run_id == res.run_id and mv.source == res.source
    assert mv.tags["run_id"] == res.run_id
    assert mv.tags["base_model"] == "tiny" and mv.tags["data_hash"] == "abc123"
    assert float(mv.tags["metric.avg_f1"]) == pytest.approx(40.0)
    assert mv.tags[registry.SHA256_TAG] == registry.hash_paths([ckpt])
    local = Path(download_artifacts(artifact_uri=res.source, dst_path=str(tmp_path / "dl")))
    assert sorted(p.name for p in local.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"
    ]  # fmt: skip
    assert registry.verify_checkpoint(local, res.checkpoint_sha256) == res.checkpoint_sha256
    assert _client(local_mlflow).get_run(res.run_id).data.metrics["avg_f1"] == pytest.approx(40.0)


def test_reregistering_reuses_the_version_and_reports_new_metrics(
    local_mlflow: str, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(tmp_path, 2)
    first = register(
        RegisterConfig(checkpoint=str(ckpt), model_name=NAME, metrics={"avg_f1": 10.0})
    )
    same = register(RegisterConfig(checkpoint=str(ckpt), model_name=NAME, metrics={"avg_f1": 10.0}))
    assert (first.version, same.version) == ("1", "1") and same.reused
    assert same.metrics_changed == {}
    new = register(RegisterConfig(checkpoint=str(ckpt), model_name=NAME, metrics={"avg_f1": 12.5}))
    assert new.reused and new.version == "1"
    assert new.metrics_changed == {"avg_f1": [pytest.approx(10.0), pytest.approx(12.5)]}
    mv = _client(local_mlflow).get_model_version(NAME, "1")
    assert float(mv.tags["metric.avg_f1"]) == pytest.approx(12.5)
    assert len(_client(local_mlflow).search_model_versions(f"name='{NAME}'")) == 1


def test_reregistering_a_broken_version_makes_a_new_one(local_mlflow: str, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, 3)
    cfg = RegisterConfig(checkpoint=str(ckpt), model_name=NAME, metrics={"avg_f1": 10.0})
    assert register(cfg).version == "1"
    delete_artifacts(_folder(local_mlflow, "1"))
    again = register(cfg)
    assert again.version == "2" and not again.reused
    tags = _client(local_mlflow).get_model_version(NAME, "1").tags
    assert tags["deepcritic.integrity"].startswith("failed")
    assert register(cfg).version == "2"  # and from then on the intact one is reused


def test_register_reads_metrics_json_and_parse_rates(local_mlflow: str, tmp_path: Path) -> None:
    ev = tmp_path / "eval"
    (ev / "predictions").mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps(
        {"avg_f1": 30.0, "benchmarks": {"gsm8k": {"f1": 20.0, "n": 4}}, "name": "x", "ok": True}
    ))  # fmt: skip
    rows = [{"id": i, "label": -1, "prediction": p} for i, p in enumerate([None, -1, 2, None])]
    (ev / "predictions" / "gsm8k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (ev / "predictions" / "math.jsonl").write_text(json.dumps({"id": 0, "prediction": 1}) + "\n")
    res = register(
        RegisterConfig(checkpoint=str(make_checkpoint(tmp_path, 3)), model_name=NAME,
                       metrics_json=str(ev / "metrics.json"))
    )  # fmt: skip
    assert res.metrics == {
        "avg_f1": 30.0, "f1.gsm8k": 20.0, "n.gsm8k": 4.0,
        "parse_rate.gsm8k": 50.0, "unparsed.gsm8k": 2.0,
        "parse_rate.math": 100.0, "unparsed.math": 0.0, "avg_parse_rate": 75.0,
    }  # fmt: skip
    run = _client(local_mlflow).get_run(res.run_id)
    assert run.data.metrics["unparsed.gsm8k"] == 2.0  # the unreadable critiques reach MLflow


@pytest.mark.parametrize(
    ("metrics", "metrics_json", "match"),
    [
        ({"avg_f1": math.nan}, None, "'avg_f1' is nan"),
        ({"avg_f1": "inf"}, None, "'avg_f1' is inf"),
        ({}, '{"avg_f1": NaN}', "metrics_json .*'avg_f1' is nan"),
        ({}, '{"gsm8k": {"f1": Infinity}}', "'f1.gsm8k' is inf"),
        ({"avg_f1": "high"}, None, "'avg_f1' is not a number"),
    ],
)
def test_register_refuses_non_finite_metrics(
    local_mlflow: str, tmp_path: Path, metrics: dict, metrics_json: str | None, match: str
) -> None:
    path = None
    if metrics_json is not None:
        path = tmp_path / "metrics.json"
        path.write_text(metrics_json)
    cfg = RegisterConfig(checkpoint=str(make_checkpoint(tmp_path, 1)), model_name=NAME,
                         metrics=metrics, metrics_json=str(path) if path else None)  # fmt: skip
    with pytest.raises(RegistryError, match=match):
        register(cfg)
    assert _client(local_mlflow).search_model_versions(f"name='{NAME}'") == []


def test_register_rejects_non_checkpoint_and_bad_rows(local_mlflow: str, tmp_path: Path) -> None:
    from deepcritic.records import DataError

    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="config.json"):
        register(RegisterConfig(checkpoint=str(tmp_path / "empty"), model_name=NAME))
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        register(RegisterConfig(checkpoint=str(tmp_path / "nope"), model_name=NAME))
    (tmp_path / "preds").mkdir()
    (tmp_path / "preds" / "b.jsonl").write_text('{"id": 1, "prediction": 0}\n{"id": 2}\n')
    with pytest.raises(DataError, match=r"b.jsonl.*2.*prediction"):
        registry.parse_rates(tmp_path / "preds")


def test_register_needs_tracking(no_mlflow: None, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="tracking_uri"):
        register(RegisterConfig(checkpoint=str(make_checkpoint(tmp_path, 4)), model_name=NAME))


# ---------------------------------------------------------------- promote: gate and comparison


@pytest.mark.parametrize(
    ("cand", "champ", "margin", "expected", "word"),
    [
        (0.5, None, 0.0, True, "no champion"),
        (0.5, 0.4, 0.0, True, "better"),
        (0.3, 0.4, 0.0, False, "worse"),
        (0.4, 0.4, 0.0, False, "equal"),
        (0.42, 0.4, 0.05, False, "margin"),
        (0.46, 0.4, 0.05, True, "better"),
        (math.nan, 0.4, 0.0, False, "nan"),
    ],
)
def test_decide(cand: float, champ: float | None, margin: float, expected: bool, word: str) -> None:
    ok, why = registry.decide(cand, champ, margin)
    assert ok is expected and word in why


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"margin": -0.1}, "margin: must be a finite number >= 0, got -0.1"),
        ({"margin": math.nan}, "margin"),
        ({"floor_f1": math.inf}, "floor_f1"),
        ({"min_parse_rate": 120.0}, "min_parse_rate"),
        ({"alias": "champ' OR '1"}, "alias"),
    ],
)
def test_promote_refuses_bad_settings(
    local_mlflow: str, tmp_path: Path, kw: dict, match: str
) -> None:
    v1 = _register(tmp_path, 1, 40.0)
    assert _promote(v1).promoted
    v2 = _register(tmp_path, 2, 30.0)
    with pytest.raises(RegistryError, match=match):
        _promote(v2, **kw)
    assert _champion(local_mlflow) == v1  # a negative margin never demotes the champion


def test_promote_gate_sequence(local_mlflow: str, tmp_path: Path) -> None:
    v1 = _register(tmp_path, 1, 40.0)
    r = _promote(v1)
    assert r.promoted and r.changed and "no champion" in r.reason and _champion(local_mlflow) == v1
    assert r.gate == "passed"

    v2 = _register(tmp_path, 2, 30.0)  # worse
    r = _promote(v2)
    assert not r.promoted and not r.changed and "worse" in r.reason
    assert r.champion_version == v1 and r.champion_score == pytest.approx(40.0)

    v3 = _register(tmp_path, 3, 40.0)  # equal
    r = _promote(v3)
    assert not r.promoted and "equal" in r.reason and _champion(local_mlflow) == v1

    v4 = _register(tmp_path, 4, 43.0)  # better but within margin
    r = _promote(v4, margin=5.0)
    assert not r.promoted and "margin" in r.reason and _champion(local_mlflow) == v1

    r = _promote(v4)  # strictly better, no margin
    assert r.promoted and r.changed and _champion(local_mlflow) == v4

    tags = _client(local_mlflow).get_model_version(NAME, v2).tags
    assert tags["deepcritic.promotion.decision"] == "rejected"
    assert "worse" in tags["deepcritic.promotion.reason"]
    assert tags["deepcritic.promotion.compared_to"] == v1


def test_promote_rerun_is_idempotent(local_mlflow: str, tmp_path: Path) -> None:
    v1, v2 = _register(tmp_path, 1, 50.0), _register(tmp_path, 2, 20.0)
    first, again = _promote(v1), _promote(v1)
    assert first.changed and again.promoted and not again.changed
    assert "already champion" in again.reason and _champion(local_mlflow) == v1
    rej1, rej2 = _promote(v2), _promote(v2)
    assert (rej1.promoted, rej2.promoted) == (False, False) and rej1.reason == rej2.reason
    assert _champion(local_mlflow) == v1


@pytest.mark.parametrize(
    ("f1", "parse", "kw", "word"),
    [
        (0.0, 95.0, {}, "below the floor"),  # the F1 0 critic of the issue
        (35.0, 95.0, {"floor_f1": 35.0}, "below the floor"),  # not above the base model
        (50.0, 10.0, {}, "too few readable verdicts"),
        (50.0, 40.0, {"min_parse_rate": 60.0}, "avg_parse_rate 40.0 < min_parse_rate 60"),
    ],
)
def test_gate_floor_and_parse_rate(
    local_mlflow: str, tmp_path: Path, f1: float, parse: float, kw: dict, word: str
) -> None:
    v = _register(tmp_path, 1, f1, avg_parse_rate=parse)
    r = _promote(v, **kw)
    assert not r.promoted and not r.changed and word in r.reason and r.gate.startswith("failed")
    assert _champion(local_mlflow) is None
    tags = _client(local_mlflow).get_model_version(NAME, v).tags
    assert tags["deepcritic.gate"] == "failed" and word in tags["deepcritic.gate.reason"]


def test_gate_needs_a_parse_rate(local_mlflow: str, tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, 1)
    v = register(RegisterConfig(checkpoint=str(ckpt), model_name=NAME, metrics={"avg_f1": 50.0}))
    r = _promote(v.version)
    assert not r.promoted and "avg_parse_rate" in r.reason
    assert _promote(v.version, min_parse_rate=0.0).promoted  # the check can be switched off


def test_metric_errors(local_mlflow: str, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no versions"):
        promote(PromoteConfig(model_name=NAME))
    _register(tmp_path, 1, 10.0)
    v2 = _register(tmp_path, 2, 20.0)
    assert promote(PromoteConfig(model_name=NAME)).version == v2  # latest by default
    with pytest.raises(RegistryError, match="not found"):
        _promote("99")
    v3 = register(RegisterConfig(checkpoint=str(make_checkpoint(tmp_path, 3)), model_name=NAME))
    with pytest.raises(RegistryError, match="avg_f1"):
        _promote(v3.version)
    _client(local_mlflow).set_model_version_tag(NAME, v3.version, "metric.avg_f1", "nan")
    with pytest.raises(RegistryError, match="avg_f1=nan"):
        _promote(v3.version)


def test_a_nan_champion_can_be_replaced(local_mlflow: str, tmp_path: Path) -> None:
    v1, v2 = _register(tmp_path, 1, 40.0), _register(tmp_path, 2, 30.0)
    assert _promote(v1).promoted
    _client(local_mlflow).set_model_version_tag(NAME, v1, "metric.avg_f1", "nan")  # legacy store
    r = _promote(v2)
    assert r.promoted and "no usable score" in r.reason and _champion(local_mlflow) == v2


# ---------------------------------------------------------------- integrity


@pytest.mark.parametrize("damage", [delete_artifacts, replace_weights], ids=["deleted", "replaced"])
def test_broken_candidates_are_not_promoted(local_mlflow: str, tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    v1, v2 = _register(tmp_path, 1, 30.0), _register(tmp_path, 2, 60.0)
    assert _promote(v1).promoted
    damage(_folder(local_mlflow, v2))
    r = _promote(v2)
    assert not r.promoted and "not intact" in r.reason and _champion(local_mlflow) == v1
    assert (
        _client(local_mlflow)
        .get_model_version(NAME, v2)
        .tags["deepcritic.integrity"]
        .startswith("failed")
    )


def test_a_broken_champion_is_replaced(local_mlflow: str, tmp_path: Path) -> None:
    v1, v2 = _register(tmp_path, 1, 60.0), _register(tmp_path, 2, 30.0)
    assert _promote(v1).promoted
    replace_weights(_folder(local_mlflow, v1))
    r = _promote(v2)
    assert r.promoted and f"champion v{v1} is not intact" in r.reason
    assert _champion(local_mlflow) == v2


def test_verify_checkpoint(tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, 1)
    sha = registry.hash_paths([ckpt])
    assert registry.verify_checkpoint(ckpt, sha) == sha
    replace_weights(ckpt)
    with pytest.raises(IntegrityError, match="checkpoint_sha256"):
        registry.verify_checkpoint(ckpt, sha)
    with pytest.raises(IntegrityError, match="missing or empty"):
        registry.verify_checkpoint(tmp_path / "gone", sha)
    with pytest.raises(IntegrityError, match="no recorded sha256"):
        registry.verify_checkpoint(ckpt, "")


# ---------------------------------------------------------------- operator pins


def _op(**kw: object) -> OperatorConfig:
    return OperatorConfig(model_name=NAME, **kw)  # type: ignore[arg-type]


def test_pin_is_respected_until_unpinned(local_mlflow: str, tmp_path: Path) -> None:
    v1, v2 = _register(tmp_path, 1, 40.0), _register(tmp_path, 2, 50.0)
    assert _promote(v1).promoted and _promote(v2).promoted
    st = registry.pin(_op(version=v1, reason="v2 regressed"))  # the operator rolls back
    assert (st.holder, st.pinned, st.pin_reason) == (v1, v1, "v2 regressed")
    v3 = _register(tmp_path, 3, 70.0)
    r = _promote(v3)
    assert not r.promoted and "pinned to v1" in r.reason and r.pinned_version == v1
    assert _champion(local_mlflow) == v1 and not _promote(v2).promoted
    st = registry.unpin(_op())
    assert st.pinned is None and st.holder == v1
    assert _promote(v3).promoted and _champion(local_mlflow) == v3


def test_pin_refuses_broken_or_ungated_versions(local_mlflow: str, tmp_path: Path) -> None:
    v1, v2 = _register(tmp_path, 1, 40.0), _register(tmp_path, 2, 50.0)
    with pytest.raises(RegistryError, match="not passed the promotion gate"):
        registry.pin(_op(version=v2))
    assert _promote(v1).promoted and _promote(v2).promoted
    delete_artifacts(_folder(local_mlflow, v1))
    with pytest.raises(IntegrityError, match="not intact"):
        registry.pin(_op(version=v1))
    assert _champion(local_mlflow) == v2 and registry.status(_op()).pinned is None


def test_a_manual_rollback_in_the_ui_is_kept(local_mlflow: str, tmp_path: Path) -> None:
    v1, v2, v3 = (_register(tmp_path, s, f) for s, f in ((1, 40.0), (2, 50.0), (3, 60.0)))
    assert _promote(v1).promoted and _promote(v2).promoted
    _client(local_mlflow).set_registered_model_alias(NAME, "champion", v1)  # by hand
    assert registry.status(_op()).moved_outside
    r = _promote(v3)
    assert not r.promoted and "outside deepcritic" in r.reason and _champion(local_mlflow) == v1
    st = registry.status(_op())
    assert st.pinned == v1 and "outside deepcritic" in st.pin_reason
    registry.unpin(_op())
    assert _promote(v3).promoted and _champion(local_mlflow) == v3


# ---------------------------------------------------------------- the lock


def test_lease_excludes_expires_and_fences(local_mlflow: str) -> None:
    client = _client(local_mlflow)
    client.create_registered_model(NAME)
    with lease.hold(client, NAME, "champion", ttl_s=60) as first:
        with pytest.raises(lease.LeaseError, match="not acquired"):
            lease.acquire(client, NAME, "champion", timeout_s=0.3)
        first.fence()
    second = lease.acquire(client, NAME, "champion", ttl_s=0.5)  # released: free again
    assert second.gen == first.gen + 1
    time.sleep(0.6)  # the holder "crashed": its ttl runs out and the lock is taken over
    third = lease.acquire(client, NAME, "champion", timeout_s=5)
    assert third.gen == second.gen + 1
    with pytest.raises(lease.LeaseError):
        second.fence()  # the overtaken holder may not write any more
    third.fence()
    names = [m.name for m in client.search_registered_models(f"name LIKE '{NAME}.lock.%'")]
    assert names == [third.name]  # older generations are cleaned up


def test_threads_share_the_lock_one_at_a_time(local_mlflow: str) -> None:
    client = _client(local_mlflow)
    client.create_registered_model(NAME)
    inside, overlaps, errors = [0], [0], []

    def worker() -> None:
        try:
            for _ in range(3):
                with lease.hold(_client(local_mlflow), NAME, "champion", timeout_s=60):
                    inside[0] += 1
                    overlaps[0] += inside[0] > 1
                    time.sleep(0.01)
                    inside[0] -= 1
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert overlaps == [0]


# ---------------------------------------------------------------- CLI


def test_cli_register_promote_pin(
    local_mlflow: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from deepcritic.cli import main

    for seed, f1 in ((7, 25.0), (8, 35.0)):
        rc = main(["register", "--checkpoint", str(make_checkpoint(tmp_path, seed)),
                   "--model-name", NAME, "--metrics", f"{{avg_f1: {f1}, avg_parse_rate: 90}}"])  # fmt: skip
        assert rc == 0
    out = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "}")
    assert out["version"] == "1" and out["metrics"] == {"avg_f1": 25.0, "avg_parse_rate": 90.0}
    assert main(["promote", "--model-name", NAME, "--version", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["promoted"] is True
    assert main(["promote", "--model-name", NAME, "--version", "2", "--margin", "-0.1"]) == 2
    assert "margin" in capsys.readouterr().err and _champion(local_mlflow) == "1"
    assert main(["registry", "pin", "--model-name", NAME, "--version", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["pinned"] == "1"
    assert main(["promote", "--model-name", NAME, "--version", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["promoted"] is False
    assert main(["registry", "unpin", "--model-name", NAME]) == 0
    capsys.readouterr()
    assert main(["registry", "verify", "--model-name", NAME, "--version", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "intact"
    assert main(["promote", "--model-name", NAME, "--version", "2"]) == 0
    assert _champion(local_mlflow) == "2"
