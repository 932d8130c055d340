"""An input cache seeded with the authors' pinned files from ``../shared/reference/deepcritic``
(:func:`deepcritic.reference.seed_cache`), with every download made a test failure."""

from __future__ import annotations

import ast
from collections.abc import Callable
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


def prepare_input_boxed() -> Callable[..., Any] | None:
    """The authors' ``prepare_input_boxed`` from eval.py (only that function executed, nothing
    else of the script), or None when the shared copy is absent."""
    if not EVAL_PY.is_file():
        return None
    tree = ast.parse(EVAL_PY.read_text())
    fn = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "prepare_input_boxed"
    )
    ns: dict[str, Any] = {}
    exec(compile(ast.Module([fn], []), str(EVAL_PY), "exec"), ns)
    return ns["prepare_input_boxed"]  # type: ignore[no-any-return]
