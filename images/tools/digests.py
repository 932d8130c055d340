"""Image build tooling (not the product): record pushed digests, pin Dockerfile bases.

Run from the repository root by the images workflow (``.github/workflows/images.yml``):
``python -m images.tools.digests ref NAME`` | ``names`` | ``record NAME=sha256:... ...`` |
``pin-bases DOCKERFILE...``. The table itself is :mod:`deepcritic.platform.images`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import deepcritic.platform.images as table_mod
from deepcritic.platform.images import IMAGES, build_images, image

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
IMAGES_JSON = Path(table_mod.__file__).with_name("images.json")


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

    parser = argparse.ArgumentParser(prog="python -m images.tools.digests", description=__doc__)
    parser.add_argument("command", choices=["ref", "names", "record", "pin-bases"])
    parser.add_argument("args", nargs="*")
    ns = parser.parse_args(argv)
    if ns.command == "ref":
        print("\n".join(image(n) for n in ns.args))
    elif ns.command == "names":
        print(json.dumps(sorted(IMAGES)))
    elif ns.command == "record":
        pushed = dict(a.split("=", 1) for a in ns.args)
        path = IMAGES_JSON
        data = record_digests(json.loads(path.read_text(encoding="utf-8")), pushed)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    else:
        for name in ns.args:
            path = Path(name)
            path.write_text(pin_bases(path.read_text(encoding="utf-8"), _registry_digest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
