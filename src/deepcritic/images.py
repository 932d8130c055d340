"""The container image table: the one place image names, tags and digests come from.

Components take their ``base_image`` from here (so the compiled pipeline names exactly these), the
manifests reference the ``serve``, ``train`` and ``mlflow`` images, and the images workflow
(``.github/workflows/images.yml``) builds each one from its Dockerfile
(``docker build -f images/<name>/Dockerfile -t <ref> .``, context = repository root), pushes it and
records its digest in ``images.json`` (package data beside this module).

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
    text = resources.files("deepcritic").joinpath("images.json").read_text(encoding="utf-8")
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


def record_digests(data: dict[str, Any], pushed: Mapping[str, str]) -> dict[str, Any]:
    """``images.json`` with ``pushed`` (name -> digest) recorded against the current refs."""
    table = build_images(data["registry"], data["version"], {})
    digests = dict(data.get("digests", {}))
    for name, digest in pushed.items():
        if name not in table:
            raise KeyError(f"unknown image {name!r}; known: {sorted(table)}")
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"{name}: digest {digest!r} is not sha256:<64 hex>")
        digests[name] = {"ref": table[name].ref, "digest": digest}
    return {**data, "digests": dict(sorted(digests.items()))}


_FROM = re.compile(r"^(FROM\s+)(\S+)(.*)$", re.MULTILINE)


def pin_bases(dockerfile: str, resolve: Any) -> str:
    """``dockerfile`` with every external ``FROM image:tag`` pinned as ``image:tag@sha256:...``.

    ``resolve(ref) -> digest`` asks a registry (the images workflow: ``docker buildx imagetools
    inspect``). Stage references and already pinned bases are left alone.
    """
    stages = {m.lower() for m in re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", dockerfile, re.M | re.I)}

    def pin(m: re.Match[str]) -> str:
        ref = m.group(2)
        if "@" in ref or ref.lower() in stages:
            return m.group(0)
        digest = resolve(ref)
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"{ref}: registry answered {digest!r}, not sha256:<64 hex>")
        return f"{m.group(1)}{ref}@{digest}{m.group(3)}"

    return _FROM.sub(pin, dockerfile)


def _registry_digest(ref: str) -> str:
    import subprocess

    out = subprocess.run(
        ["docker", "buildx", "imagetools", "inspect", ref, "--format", "{{json .Manifest}}"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return str(json.loads(out.stdout)["digest"])


def main(argv: list[str] | None = None) -> int:
    """``ref NAME`` | ``names`` | ``record NAME=sha256:... ...`` | ``pin-bases DOCKERFILE...``."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m deepcritic.images", description=__doc__)
    parser.add_argument("command", choices=["ref", "names", "record", "pin-bases"])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    if ns.command == "ref":
        print("\n".join(image(n) for n in ns.args))
    elif ns.command == "names":
        print(json.dumps(sorted(IMAGES)))
    elif ns.command == "record":
        pushed = dict(a.split("=", 1) for a in ns.args)
        path = Path(__file__).with_name("images.json")
        data = record_digests(json.loads(path.read_text(encoding="utf-8")), pushed)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        for name in ns.args:
            path = Path(name)
            path.write_text(pin_bases(path.read_text(encoding="utf-8"), _registry_digest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
