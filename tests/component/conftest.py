"""Fixtures shared by component tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mlflow_server import Server, running_mlflow_server


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core box: one intra-op thread avoids oversubscription (10x).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def mlflow_server(
    tmp_path_factory: pytest.TempPathFactory, _mlflow_template_db: Path
) -> Iterator[Server]:
    """A real ``mlflow server`` over HTTP on a fresh copy of the migrated store, one per module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    shutil.copy(_mlflow_template_db, root / "mlflow.db")
    with running_mlflow_server(root) as server:
        yield server
