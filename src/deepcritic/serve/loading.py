"""Where the served critic comes from: registry URI, storage path, local folder or model alias.

* ``models:/<name>@<alias>`` or ``models:/<name>/<version>``: the MLflow model registry. The alias
  is resolved to a version first and exactly that version (``models:/<name>/<version>``) is
  downloaded, so the reported version is the one served. Registered versions are HF checkpoint
  folders logged as run artifacts (see :mod:`deepcritic.registry`).
* ``s3://``, ``gs://``, ``file://``, ``runs:/`` ...: downloaded with MLflow's artifact repositories.
  (On KServe a ``storageUri`` is downloaded by the storage initializer to ``/mnt/models``, which
  arrives here as a local folder.)
* a local folder holding ``config.json`` (at its top or up to three levels down).
* ``tiny`` / ``default``: :func:`deepcritic.models.resolve_model`.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepcritic.models import resolve_model
from deepcritic.serve.schema import ModelInfo, TokenCounter
from deepcritic.tracking import resolve_tracking_uri

log = logging.getLogger(__name__)

_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_MAX_DEPTH = 3


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


def _download_dir(download_dir: str | None) -> str:
    if download_dir:
        Path(download_dir).mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="critic-", dir=download_dir)
    return tempfile.mkdtemp(prefix="deepcritic-serve-")


def _from_registry(uri: str, m: re.Match[str], tracking_uri: str | None, dst: str) -> ModelInfo:
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
    log.info("%s is %s (source %s); downloading", uri, pinned, mv.source)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=pinned, dst_path=dst, tracking_uri=resolved, registry_uri=resolved
    )
    path = find_checkpoint(Path(local), uri)
    return ModelInfo(name=name, version=str(mv.version), uri=uri, path=str(path))


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
        return _from_registry(uri, m, tracking_uri, _download_dir(download_dir))
    if uri.startswith("models:/"):
        raise ValueError(
            f"model_uri {uri!r}: expected models:/<name>@<alias> or models:/<name>/<n>"
        )
    if "://" in uri or uri.startswith("runs:/"):
        import mlflow

        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=_download_dir(download_dir)
        )
        return ModelInfo(model_name, "storage", uri, str(find_checkpoint(Path(local), uri)))
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
