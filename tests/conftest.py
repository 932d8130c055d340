"""Shared fixtures. Tests never touch a hub: models come from the package cache (tiny / default)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from support.paths import PROCESSBENCH_DIR, ROOT, SHARED

__all__ = ["PROCESSBENCH_DIR", "ROOT", "SHARED"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Reproducible property tests: the same examples on every run and machine, no example database,
# no per-example deadline (2 shared CI cores); fixtures built once per module are fine here.
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large],
)  # fmt: skip
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def processbench_dir() -> Path:
    if not PROCESSBENCH_DIR.is_dir():
        pytest.skip(f"{PROCESSBENCH_DIR} not present")
    return PROCESSBENCH_DIR


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    """A random 2-layer Llama with the SmolLM2 tokenizer (cached after the first build)."""
    from deepcritic.models import tiny_checkpoint

    return str(tiny_checkpoint())


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_path: str):  # type: ignore[no-untyped-def]
    """The real HF backend on the tiny model (shared across the session: loading is the cost)."""
    from deepcritic.generation import BackendConfig, make_backend

    backend = make_backend(BackendConfig(kind="hf", model=tiny_model_path, batch_size=8))
    yield backend
    backend.close()


@pytest.fixture()
def no_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "off")


@pytest.fixture(scope="session")
def _mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store (migrating takes ~15 s; copying is instant)."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture()
def local_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _mlflow_template_db: Path) -> str:
    """A fresh SQLite MLflow store in tmp_path (a copy of the migrated template)."""
    import shutil

    shutil.copy(_mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DEEPCRITIC_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID", raising=False)
    return uri
