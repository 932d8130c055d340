"""The container image table: the one place image names, tags and digests come from.

Components take their ``base_image`` from here (so the compiled pipeline names exactly these), the
manifests reference the ``serve``, ``train`` and ``mlflow`` images, and the images workflow
(``.github/workflows/images.yml``) builds each one from its Dockerfile
(``docker build -f images/<name>/Dockerfile -t <ref> .``, context = repository root), pushes it and
records its digest in ``images.json`` (package data beside this module) with the build tooling in
``images/tools/digests.py``.

One setting picks the registry and the release: ``DEEPCRITIC_IMAGE_REGISTRY`` (default
``ghcr.io/deepcritic``) and ``DEEPCRITIC_IMAGE_VERSION`` (default: ``images.json``'s version),
read when this module is imported (so set them before compiling the pipeline). A recorded digest
is used only for the exact reference it was pushed as; a reference then reads
``repo:tag@sha256:...`` and a cluster pulls exactly those bytes. Otherwise the version tag (never
``latest``) pins the image.

GPU images carry ``-cu130``: torch 2.13.0 from PyPI is built for CUDA 13.0, so GPU nodes need an
NVIDIA driver >= 580.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

REGISTRY_ENV = "DEEPCRITIC_IMAGE_REGISTRY"
VERSION_ENV = "DEEPCRITIC_IMAGE_VERSION"
CUDA_SUFFIX = "-cu130"  # torch 2.13.0 (PyPI) = CUDA 13.0: NVIDIA driver >= 580 on GPU nodes
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Image:
    name: str
    repository: str
    tag: str
    dockerfile: str  # path relative to the repository root
    digest: str = ""  # "sha256:<64 hex>" once pushed by the images workflow
    purpose: str = ""

    @property
    def ref(self) -> str:
        """The reference a pod pulls: ``repo:tag`` or ``repo:tag@sha256:...``."""
        base = f"{self.repository}:{self.tag}"
        return f"{base}@{self.digest}" if self.digest else base


@dataclass(frozen=True)
class ImageSpec:
    """An image's fixed part: its tag is ``<version><suffix>`` unless ``fixed_tag`` is set."""

    suffix: str = ""
    fixed_tag: str = ""  # images that follow another project's version (mlflow)
    purpose: str = ""


SPECS: dict[str, ImageSpec] = {
    "pipeline-base": ImageSpec(
        purpose="CPU stages: data prep, register, promote, deploy (deepcritic[pipeline], CPU torch)"
    ),
    "train": ImageSpec(
        CUDA_SUFFIX, purpose="SFT and GRPO: torch + trl + deepspeed (prebuilt ops) + flash-attn"
    ),
    "generate": ImageSpec(
        CUDA_SUFFIX, purpose="seed critiques, MC annotation, evaluation: vLLM + deepcritic[vllm]"
    ),
    "serve": ImageSpec(CUDA_SUFFIX, purpose="KServe predictor: kserve + vLLM + deepcritic[serve]"),
    "mlflow": ImageSpec(
        fixed_tag="3.17.2", purpose="MLflow tracking server (PostgreSQL driver + S3 client)"
    ),
}


def settings() -> dict[str, Any]:
    """``images.json``: the default registry and version and the recorded digests."""
    text = (
        resources.files("deepcritic.platform").joinpath("images.json").read_text(encoding="utf-8")
    )
    data: dict[str, Any] = json.loads(text)
    return data


def build_images(
    registry: str, version: str, digests: Mapping[str, Mapping[str, str]]
) -> dict[str, Image]:
    """The table for ``registry`` and ``version``; ``digests``: name -> {"ref", "digest"}, used
    only where the recorded ref is the one computed here."""
    if not registry or registry.endswith("/") or not version or ":" in version:
        raise ValueError(f"bad image setting: registry={registry!r} version={version!r}")
    table = {}
    for name, spec in SPECS.items():
        img = Image(name, f"{registry}/{name}", spec.fixed_tag or f"{version}{spec.suffix}",
                    f"images/{name}/Dockerfile", purpose=spec.purpose)  # fmt: skip
        recorded = digests.get(name, {})
        if recorded.get("ref") == img.ref:
            digest = recorded.get("digest", "")
            if not _DIGEST.fullmatch(digest):
                raise ValueError(f"images.json: digests.{name}.digest is not sha256:<64 hex>")
            img = Image(img.name, img.repository, img.tag, img.dockerfile, digest, img.purpose)
        table[name] = img
    return table


_SETTINGS = settings()
# The effective setting (environment over images.json), as the pipeline sees it.
REGISTRY: str = os.environ.get(REGISTRY_ENV) or _SETTINGS["registry"]
VERSION: str = os.environ.get(VERSION_ENV) or _SETTINGS["version"]
IMAGES: dict[str, Image] = build_images(REGISTRY, VERSION, _SETTINGS.get("digests", {}))


def image(name: str) -> str:
    """The pinned reference for ``name`` (one of :data:`IMAGES`)."""
    try:
        return IMAGES[name].ref
    except KeyError:
        raise KeyError(f"unknown image {name!r}; known: {sorted(IMAGES)}") from None
