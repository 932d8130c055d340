"""Checkpoint integrity: the sha256 a version records, checked on a local folder or the registry copy.

``hash_paths`` is the one hash: sha256 over the files of a folder (sorted relative paths, then
bytes). Registration records it in the ``checkpoint_sha256`` version tag; promotion and pinning
download a version's artifacts and compare (``version_problem``); serving calls
``verify_checkpoint(path, expected)`` on its download before loading.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any

from deepcritic.registry.store import INTEGRITY_TAG, SHA256_TAG, RegistryError

log = logging.getLogger(__name__)


class IntegrityError(RegistryError):
    """A checkpoint whose files are missing or whose sha256 is not the recorded one."""


def hash_paths(paths: list[str | Path]) -> str:
    """sha256 over the files (sorted relative paths + bytes) of the given files/folders."""
    h = hashlib.sha256()
    for root in sorted(Path(p) for p in paths):
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist")
        files = sorted(f for f in root.rglob("*") if f.is_file()) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(root) if root.is_dir() else f.name).encode())
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def verify_checkpoint(path: str | Path, expected_sha256: str) -> str:
    """Raise :class:`IntegrityError` unless the folder's hash is ``expected_sha256``; return it."""
    root = Path(path)
    if not expected_sha256:
        raise IntegrityError(f"{SHA256_TAG}: no recorded sha256 to verify {root} against")
    if not root.exists() or (root.is_dir() and not any(p.is_file() for p in root.rglob("*"))):
        raise IntegrityError(f"checkpoint: {root} is missing or empty")
    actual = hash_paths([root])
    if actual != expected_sha256:
        raise IntegrityError(
            f"{SHA256_TAG}: {root} hashes to {actual[:12]}..., recorded {expected_sha256[:12]}..."
        )
    return actual


class Verifier:
    """Downloads versions' artifacts and checks them against their recorded sha256 (cached)."""

    def __init__(self, scratch_dir: str | None = None):
        self.scratch_dir = scratch_dir
        self._done: dict[tuple[str, str], str | None] = {}

    def problem(self, mlflow_client: Any, mv: Any) -> str | None:
        """None when the version is intact, else why not (and the version is tagged broken)."""
        key = (str(mv.name), str(mv.version))
        if key not in self._done:
            why = self._check(mv)
            if why is not None:
                log.warning("%s v%s is not intact: %s", mv.name, mv.version, why)
            _tag_integrity(mlflow_client, mv, "verified" if why is None else f"failed: {why}")
            self._done[key] = why
        return self._done[key]

    def known_broken(self, mv: Any) -> bool:
        """Whether this verifier already found the version broken (no download)."""
        return self._done.get((str(mv.name), str(mv.version))) is not None

    def _check(self, mv: Any) -> str | None:
        from mlflow.artifacts import download_artifacts

        expected = mv.tags.get(SHA256_TAG, "")
        if not expected:
            return f"no {SHA256_TAG} tag"
        if self.scratch_dir:
            Path(self.scratch_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.scratch_dir, prefix="verify-") as tmp:
            try:
                local = download_artifacts(artifact_uri=mv.source, dst_path=tmp)
            except Exception as e:  # any store error: missing folder, permissions, network
                return f"artifacts unavailable at {mv.source}: {type(e).__name__}: {e}"[:500]
            try:
                verify_checkpoint(local, expected)
            except (IntegrityError, FileNotFoundError) as e:
                return str(e).replace(str(local), mv.source)
        return None


def _tag_integrity(mlflow_client: Any, mv: Any, value: str) -> None:
    if mv.tags.get(INTEGRITY_TAG) == value:
        return
    try:
        mlflow_client.set_model_version_tag(mv.name, mv.version, INTEGRITY_TAG, value)
    except Exception as e:  # bookkeeping only: no decision depends on the tag being written
        log.warning("could not tag %s v%s integrity: %s", mv.name, mv.version, e)
