"""Where the served critic comes from: local folders, the MLflow registry (alias -> version)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepcritic.serve.loading import find_checkpoint, resolve_critic, token_counter


def _checkpoint(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(b"weights")
    return root


def test_local_folder_and_nested_checkpoint(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "run" / "checkpoint")
    info = resolve_critic(str(tmp_path / "run"), model_name="deepcritic")
    assert info.path == str(ckpt) and info.version == "local:checkpoint"
    assert find_checkpoint(ckpt, "x") == ckpt
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no HF checkpoint"):
        resolve_critic(str(tmp_path / "empty"), model_name="deepcritic")


def test_bad_registry_uri_is_named() -> None:
    with pytest.raises(ValueError, match="models:/<name>@<alias>"):
        resolve_critic("models:/deepcritic/champion/extra", model_name="deepcritic")
    with pytest.raises(ValueError, match="empty"):
        resolve_critic(" ", model_name="deepcritic")


def test_registry_alias_resolves_to_the_pinned_version(tmp_path: Path, local_mlflow: str) -> None:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(local_mlflow)
    client = MlflowClient(tracking_uri=local_mlflow, registry_uri=local_mlflow)
    client.create_registered_model("deepcritic")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    versions = []
    for i in range(2):  # two versions; the alias points at the first
        ckpt = _checkpoint(tmp_path / f"ckpt{i}")
        (ckpt / "marker.txt").write_text(str(i))
        with mlflow.start_run(experiment_id=exp) as run:
            mlflow.log_artifacts(str(ckpt), "checkpoint")
            source = mlflow.get_artifact_uri("checkpoint")
        versions.append(client.create_model_version("deepcritic", source, run_id=run.info.run_id))
    client.set_registered_model_alias("deepcritic", "champion", versions[0].version)

    info = resolve_critic(
        "models:/deepcritic@champion", model_name="x", tracking_uri=local_mlflow,
        download_dir=str(tmp_path / "dl"),
    )  # fmt: skip
    assert (info.name, info.version, info.uri) == ("deepcritic", "1", "models:/deepcritic@champion")
    assert (Path(info.path) / "marker.txt").read_text() == "0"
    assert Path(info.path).is_relative_to(tmp_path / "dl")
    pinned = resolve_critic("models:/deepcritic/2", model_name="x", tracking_uri=local_mlflow,
                            download_dir=str(tmp_path / "dl"))  # fmt: skip
    assert pinned.version == "2" and (Path(pinned.path) / "marker.txt").read_text() == "1"
    with pytest.raises(ValueError, match="tracking_uri is off"):
        resolve_critic("models:/deepcritic@champion", model_name="x", tracking_uri="off")


def test_token_counter_uses_the_tokenizer(tiny_model_path: str) -> None:
    from transformers import AutoTokenizer

    count = token_counter(AutoTokenizer.from_pretrained(tiny_model_path))
    short, long = count(["1 + 1", "1 + 1 = 2 and 2 + 2 = 4"])
    assert 0 < short < long
    assert count([]) == []


def _register(tmp_path: Path, uri: str, name: str, marker: str) -> tuple[str, Path]:
    from deepcritic.registry import RegisterConfig, register

    ckpt = _checkpoint(tmp_path / f"src-{name}")
    (ckpt / "marker.txt").write_text(marker)
    r = register(RegisterConfig(checkpoint=str(ckpt), metrics={"avg_f1": 0.5}, tracking_uri=uri))
    store = Path(r.source.removeprefix("file://"))  # the artifact copy the registry serves
    return r.version, store


def test_registry_download_is_cached_per_version_reused_and_cleaned(
    tmp_path: Path, local_mlflow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.artifacts

    v1, _ = _register(tmp_path, local_mlflow, "a", "0")
    v2, _ = _register(tmp_path, local_mlflow, "b", "1")
    calls: list[str] = []
    real = mlflow.artifacts.download_artifacts

    def counting(**kw: object) -> str:
        calls.append(str(kw["artifact_uri"]))
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counting)
    cache = tmp_path / "cache"
    (cache / "registry" / "deepcritic").mkdir(parents=True)
    dead = cache / "registry" / "deepcritic" / ".partial-999999999-dead"  # a crashed download
    dead.mkdir()

    def resolve(uri: str) -> Path:
        info = resolve_critic(
            uri, model_name="x", tracking_uri=local_mlflow, download_dir=str(cache)
        )
        return Path(info.path)

    first = resolve(f"models:/deepcritic/{v1}")
    assert first == cache / "registry" / "deepcritic" / f"v{v1}" / "artifacts"
    assert resolve(f"models:/deepcritic/{v1}") == first  # a restart reuses the folder
    assert calls == [f"models:/deepcritic/{v1}"]
    assert not dead.exists()
    second = resolve(f"models:/deepcritic/{v2}")
    assert (second / "marker.txt").read_text() == "1"
    assert sorted(p.name for p in (cache / "registry" / "deepcritic").iterdir()) == [f"v{v2}"]
    assert len(calls) == 2


def test_weights_replaced_after_registration_are_refused(tmp_path: Path, local_mlflow: str) -> None:
    from deepcritic.serve.loading import ChecksumMismatch

    version, store = _register(tmp_path, local_mlflow, "a", "0")
    (store / "model.safetensors").write_bytes(b"other weights")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumMismatch, match="does not match the registry's checkpoint_sha256"):
        resolve_critic(f"models:/deepcritic/{version}", model_name="x",
                       tracking_uri=local_mlflow, download_dir=str(cache))  # fmt: skip
    leftovers = [p for p in cache.rglob("*") if p.is_file()]
    assert leftovers == []  # the unverified download was not kept


def test_a_tampered_cache_copy_is_downloaded_again(tmp_path: Path, local_mlflow: str) -> None:
    version, _ = _register(tmp_path, local_mlflow, "a", "0")
    kw = {"model_name": "x", "tracking_uri": local_mlflow, "download_dir": str(tmp_path / "c")}
    path = Path(resolve_critic(f"models:/deepcritic/{version}", **kw).path)  # type: ignore[arg-type]
    (path / "model.safetensors").write_bytes(b"tampered in the cache")
    again = Path(resolve_critic(f"models:/deepcritic/{version}", **kw).path)  # type: ignore[arg-type]
    assert (again / "model.safetensors").read_bytes() == b"weights"
