"""Where the served critic comes from: registry URI, storage path, local folder or model alias.

* ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: the MLflow model registry. The alias
  is resolved to a version first and exactly that version (``models:/<name>/<version>``) is
  downloaded, so the reported version is the one served. Registered versions are HF checkpoint
  folders logged as run artifacts (see :mod:`deepcritic.registry`). When the version carries the
  tag ``checkpoint_sha256`` (set by ``deepcritic register``), the downloaded folder is hashed with
  :func:`deepcritic.registry.hash_paths` and a mismatch refuses to serve (:class:`ChecksumMismatch`).
* ``s3://``, ``gs://``, ``file://``, ``runs:/`` ...: downloaded with MLflow's artifact repositories.
  (On KServe a ``storageUri`` is downloaded by the storage initializer to ``/mnt/models``, which
  arrives here as a local folder.)
* a local folder holding ``config.json`` (at its top or up to three levels down).
* ``tiny`` / ``default``: :func:`deepcritic.models.resolve_model`.

Downloads go to a cache (``download_dir``, default ``$DEEPCRITIC_CACHE/serve``), one folder per
registry version: ``<cache>/registry/<name>/v<version>/`` holding ``artifacts/`` and
``download.json`` (storage URIs: ``<cache>/storage/<hash of the URI>/``). A
download lands in a hidden ``.partial-*`` sibling and is renamed into place only once complete and
verified, so a crash never leaves a half folder that looks complete. A restart of the same version
reuses the folder (after checking its hash again); other versions of that model and partial
downloads of dead processes are removed, so crash loops do not fill the volume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepcritic.models import cache_dir, resolve_model
from deepcritic.platform.processes import pid_alive
from deepcritic.serve.schema import ModelInfo, TokenCounter
from deepcritic.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_MAX_DEPTH = 3
_MARKER = "download.json"
_PARTIAL = ".partial-"
SHA_TAG = "checkpoint_sha256"  # the version tag deepcritic.registry.register writes


class ChecksumMismatch(RuntimeError):
    """The downloaded checkpoint is not the one the registry recorded (refuse to serve it)."""


def find_checkpoint(root: Path, uri: str) -> Path:
    """The folder under ``root`` that holds ``config.json`` (the shallowest one)."""
    if (root / "config.json").is_file():
        return root
    found = sorted(
        (
            p.parent
            for p in root.rglob("config.json")
            if len(p.relative_to(root).parts) <= _MAX_DEPTH
        ),
        key=lambda p: len(p.parts),
    )
    if not found:
        raise FileNotFoundError(f"{uri}: no HF checkpoint (config.json) under {root}")
    return found[0]


def cache_root(download_dir: str | None) -> Path:
    """Where downloaded checkpoints are cached."""
    return Path(download_dir) if download_dir else cache_dir() / "serve"


def _folder_name(text: str) -> str:
    """A registry name as one safe path segment (never ``..`` or a path)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".") or "_"
    return safe[:100]


def verify_checksum(root: Path, expected: str | None, what: str) -> str:
    """sha256 of the checkpoint folder ``root`` (as ``deepcritic register`` computed it); raise
    :class:`ChecksumMismatch` when the registry recorded a different one."""
    from deepcritic.registry import hash_paths

    actual = hash_paths([root])
    if expected and actual != expected.strip().lower():
        raise ChecksumMismatch(
            f"{what}: checkpoint sha256 {actual} does not match the registry's {SHA_TAG} "
            f"{expected}: the weights changed after registration; refusing to serve them"
        )
    return actual


def clean_cache(parent: Path, keep: Path) -> list[Path]:
    """Remove every folder under ``parent`` except ``keep`` and partial downloads of live
    processes; returns what was removed."""
    removed = []
    for child in parent.iterdir() if parent.is_dir() else []:
        if child == keep or not child.is_dir():
            continue
        if child.name.startswith(_PARTIAL):
            pid = child.name[len(_PARTIAL) :].split("-")[0]
            if pid.isdigit() and pid_alive(int(pid)) and int(pid) != os.getpid():
                continue
        shutil.rmtree(child, ignore_errors=True)
        removed.append(child)
    if removed:
        log.info("removed %d stale download(s) under %s", len(removed), parent)
    return removed


def _fetch(target: Path, download: Callable[[str], Any], expected: str | None, what: str) -> Path:
    """Download into a partial sibling of ``target``, verify, then rename it into place."""
    partial = target.parent / f"{_PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir(parents=True)
    try:
        download(str(partial / "artifacts"))
        find_checkpoint(partial / "artifacts", what)
        sha = verify_checksum(partial / "artifacts", expected, what)
        (partial / _MARKER).write_text(json.dumps({"uri": what, "sha256": sha}))
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return target / "artifacts"


def cached_download(
    target: Path, download: Callable[[str], Any], expected: str | None, what: str, *, reuse: bool
) -> Path:
    """The artifacts folder of ``target``: reused when complete (and still matching
    ``expected``), else downloaded; other folders beside ``target`` are removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    artifacts = target / "artifacts"
    if reuse and (target / _MARKER).is_file() and artifacts.is_dir():
        try:
            verify_checksum(artifacts, expected, what)
            log.info("%s: reusing the cached download %s", what, target)
            clean_cache(target.parent, keep=target)
            return artifacts
        except (ChecksumMismatch, FileNotFoundError) as e:
            log.warning("%s: cached copy is unusable (%s); downloading again", what, e)
    artifacts = _fetch(target, download, expected, what)
    clean_cache(target.parent, keep=target)
    return artifacts


def _from_registry(uri: str, m: re.Match[str], tracking_uri: str | None, root: Path) -> ModelInfo:
    import mlflow
    from mlflow import MlflowClient

    resolved = resolve_tracking_uri(tracking_uri)
    if resolved is None:
        raise ValueError(f"{uri}: a models:/ URI needs MLflow (tracking_uri is off)")
    client = MlflowClient(tracking_uri=resolved, registry_uri=resolved)
    name = m.group("name")
    if m.group("alias"):
        mv = client.get_model_version_by_alias(name, m.group("alias"))
    else:
        mv = client.get_model_version(name, m.group("version"))
    pinned = f"models:/{name}/{mv.version}"
    expected = (mv.tags or {}).get(SHA_TAG)
    if not expected:
        log.warning("%s has no %s tag: its checkpoint cannot be verified", pinned, SHA_TAG)
    log.info("%s is %s (source %s)", uri, pinned, mv.source)

    def download(dst: str) -> Any:
        return mlflow.artifacts.download_artifacts(
            artifact_uri=pinned, dst_path=dst, tracking_uri=resolved, registry_uri=resolved
        )

    target = root / "registry" / _folder_name(name) / f"v{mv.version}"
    local = cached_download(target, download, expected, pinned, reuse=True)
    path = find_checkpoint(local, uri)
    return ModelInfo(name=name, version=str(mv.version), uri=uri, path=str(path))


def _from_storage(uri: str, model_name: str, root: Path) -> ModelInfo:
    """A storage URI can change behind the same name: downloaded again each start."""
    import hashlib

    import mlflow

    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    target = root / "storage" / key

    def download(dst: str) -> Any:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)

    local = cached_download(target, download, None, uri, reuse=False)
    return ModelInfo(model_name, "storage", uri, str(find_checkpoint(local, uri)))


def resolve_critic(
    uri: str,
    *,
    model_name: str,
    tracking_uri: str | None = None,
    download_dir: str | None = None,
) -> ModelInfo:
    """Resolve ``uri`` to a local checkpoint folder plus the name/version to report."""
    if not uri.strip():
        raise ValueError("model_uri is empty")
    m = _REGISTRY_URI.match(uri)
    if m:
        return _from_registry(uri, m, tracking_uri, cache_root(download_dir))
    if uri.startswith("models:/"):
        raise ValueError(
            f"model_uri {uri!r}: expected models:/<name>@<alias> or models:/<name>/<n>"
        )
    if "://" in uri or uri.startswith("runs:/"):
        return _from_storage(uri, model_name, cache_root(download_dir))
    if Path(uri).is_dir():
        path = find_checkpoint(Path(uri), uri)
        return ModelInfo(model_name, f"local:{path.name}", uri, str(path))
    resolved = resolve_model(uri)  # tiny / default, or a hub id (transformers, needs network)
    return ModelInfo(model_name, uri if Path(resolved).is_dir() else f"hub:{uri}", uri, resolved)


def token_counter(tokenizer: Any) -> TokenCounter:
    """``count(texts) -> [n_tokens, ...]`` with the served model's tokenizer."""

    def count(texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        enc = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in enc]

    return count


def load_tokenizer(backend: Any, path: str, trust_remote_code: bool = False) -> Any:
    """The backend's own tokenizer when it has one (HF), else the checkpoint's (vLLM)."""
    tok = getattr(backend, "tokenizer", None)
    if tok is not None and callable(tok):
        return tok
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def special_tokens(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special tokens (and added special tokens): escaped in user text."""
    tokens = set(getattr(tokenizer, "all_special_tokens", None) or ())
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    tokens.update(t.content for t in decoder.values() if getattr(t, "special", False))
    return tuple(sorted(t for t in tokens if isinstance(t, str) and len(t) > 1))
