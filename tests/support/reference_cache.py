"""An input cache seeded with the authors' pinned files from ``../shared/reference/deepcritic``
(:func:`deepcritic.reference.seed_cache`), with every download made a test failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from deepcritic import reference
from deepcritic.platform import storage
from support.paths import REFERENCE_DIR

EVAL_PY = REFERENCE_DIR / "ProcessBench" / "code" / "eval.py"
needs_reference = pytest.mark.skipif(not EVAL_PY.is_file(), reason=f"{REFERENCE_DIR} not present")


def seed_reference_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``$DEEPCRITIC_CACHE`` at ``cache``, forbid downloads, seed the pinned files."""
    monkeypatch.setenv("DEEPCRITIC_CACHE", str(cache))
    monkeypatch.delenv(storage.RUN_VOLUME_ENV, raising=False)

    def no_network(*_a: Any) -> None:
        raise AssertionError("a reference file was downloaded")

    monkeypatch.setattr(storage, "_download", no_network)
    reference.seed_cache(REFERENCE_DIR)
    return cache
