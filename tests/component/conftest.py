"""Fixtures shared by component tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture()
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core box: one intra-op thread avoids oversubscription (10x).
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
