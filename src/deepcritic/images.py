"""The pinned container image table: the one place image names, tags and digests live.

Components take their ``base_image`` from here (so the compiled pipeline names exactly these), the
serving manifests reference the ``serve`` image, and CI builds each image from its Dockerfile:
``docker build -f images/<name>/Dockerfile -t <ref> .`` (context = repository root).

A digest, once CI has pushed an image, is recorded here; a reference then reads
``repo:tag@sha256:...`` and a cluster pulls exactly those bytes. Until then the version tag
(never ``latest``) pins the image.
"""

from __future__ import annotations

from dataclasses import dataclass

REGISTRY = "ghcr.io/deepcritic"
VERSION = "0.1.0"  # bump with the package version; images are rebuilt per release


@dataclass(frozen=True)
class Image:
    name: str
    repository: str
    tag: str
    dockerfile: str  # path relative to the repository root
    digest: str = ""  # "sha256:<64 hex>" once pushed by CI
    purpose: str = ""

    @property
    def ref(self) -> str:
        """The reference a pod pulls: ``repo:tag`` or ``repo:tag@sha256:...``."""
        base = f"{self.repository}:{self.tag}"
        return f"{base}@{self.digest}" if self.digest else base


IMAGES: dict[str, Image] = {
    "pipeline-base": Image(
        "pipeline-base", f"{REGISTRY}/pipeline-base", VERSION, "images/pipeline-base/Dockerfile",
        purpose="CPU stages: data prep, register, promote, deploy (deepcritic[pipeline])",
    ),
    "train": Image(
        "train", f"{REGISTRY}/train", f"{VERSION}-cu128", "images/train/Dockerfile",
        purpose="SFT and GRPO: torch + trl + deepspeed + flash-attn + deepcritic[train]",
    ),
    "generate": Image(
        "generate", f"{REGISTRY}/generate", f"{VERSION}-cu128", "images/generate/Dockerfile",
        purpose="seed critiques, MC annotation, evaluation: vLLM + deepcritic[vllm]",
    ),
    "serve": Image(
        "serve", f"{REGISTRY}/serve", f"{VERSION}-cu128", "images/serve/Dockerfile",
        purpose="KServe predictor: kserve + vLLM + deepcritic[serve,vllm]",
    ),
    "mlflow": Image(
        "mlflow", f"{REGISTRY}/mlflow", "3.17.2", "images/mlflow/Dockerfile",
        purpose="MLflow tracking server (PostgreSQL driver + S3 client), manifests/base/mlflow",
    ),
}  # fmt: skip


def image(name: str) -> str:
    """The pinned reference for ``name`` (one of :data:`IMAGES`)."""
    try:
        return IMAGES[name].ref
    except KeyError:
        raise KeyError(f"unknown image {name!r}; known: {sorted(IMAGES)}") from None
