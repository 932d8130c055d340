"""Tiny registry checkpoints (config.json + safetensors) and ways to break their stored copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
from safetensors.numpy import save_file


def make_checkpoint(root: Path, seed: int) -> Path:
    """A distinct, loadable-looking HF checkpoint folder per seed."""
    path = root / f"ckpt{seed}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    (path / "tokenizer.json").write_text("{}")
    save_file(
        {"w": np.full((4, 4), float(seed), dtype=np.float32)}, str(path / "model.safetensors")
    )
    return path


def stored_folder(source: str, artifacts_destination: Path | None = None) -> Path:
    """Where a version's artifacts live on disk: a file:// source, or the server's destination."""
    parsed = urlparse(source)
    if parsed.scheme == "mlflow-artifacts":
        assert artifacts_destination is not None
        return artifacts_destination / parsed.path.lstrip("/")
    return Path(unquote(parsed.path) if parsed.scheme == "file" else source)


def replace_weights(folder: Path) -> None:
    """Swap the weights for others of the same size (what a tampered store would serve)."""
    save_file({"w": np.full((4, 4), -7.0, dtype=np.float32)}, str(folder / "model.safetensors"))


def delete_artifacts(folder: Path) -> None:
    shutil.rmtree(folder)
