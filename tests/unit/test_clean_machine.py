"""Clean-machine discipline: every check starts with an empty model cache, and each image lock
pins every direct requirement of the extras it is resolved from (a missing one, like serve's
``accelerate`` for the GGUF default, only shows on a machine with an empty cache)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from images.tools.locks import LOCKS, LockSpec, normalize, read_lock
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "with-clean-cache"
# The make targets that run models: each must go through $(CLEAN_CACHE).
MODEL_TARGETS = ("test", "demo", "demo-tiny", "rehearse", "images-check", "gpu-check",
                 "rehearse-vllm")  # fmt: skip


def _direct_requirements(spec: LockSpec) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = list(project["project"]["dependencies"]) if spec.includes_project else []
    for extra in spec.extras:
        reqs += project["project"]["optional-dependencies"][extra]
    for group in spec.groups:
        reqs += project["dependency-groups"][group]
    return {normalize(Requirement(r).name) for r in reqs}


@pytest.mark.parametrize("name", sorted(LOCKS))
def test_lock_pins_every_direct_requirement(name: str) -> None:
    spec = LOCKS[name]
    missing = _direct_requirements(spec) - set(read_lock(ROOT, spec))
    assert not missing, f"{spec.path} lacks {sorted(missing)}: run `make lock`"


def test_serve_lock_can_convert_the_gguf_default() -> None:
    # transformers: "accelerate is required when loading a GGUF file"
    assert "accelerate" in read_lock(ROOT, LOCKS["serve"])


def test_with_clean_cache_gives_an_empty_folder_and_removes_it(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "DEEPCRITIC_CACHE": str(tmp_path / "warm")}
    probe = 'echo "$DEEPCRITIC_CACHE"; ls -A "$DEEPCRITIC_CACHE"; touch "$DEEPCRITIC_CACHE/x"'
    out = subprocess.run([str(SCRIPT), "sh", "-c", probe], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    cache = Path(out.stdout.splitlines()[0])
    assert out.stdout.splitlines()[1:] == []  # empty at start
    assert cache.parent == tmp_path and cache != tmp_path / "warm"
    assert not cache.exists()  # removed after


def test_with_clean_cache_removes_the_folder_on_failure_and_keeps_the_status(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    out = subprocess.run([str(SCRIPT), "sh", "-c", 'echo "$DEEPCRITIC_CACHE"; exit 3'], env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 3
    assert not Path(out.stdout.strip()).exists()


def _recipe(makefile: str, target: str) -> str:
    m = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.M)
    assert m, f"Makefile has no target {target}"
    return m.group(1)


@pytest.mark.parametrize("target", MODEL_TARGETS)
def test_model_running_targets_start_with_an_empty_cache(target: str) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^CLEAN_CACHE \?= scripts/with-clean-cache$", makefile, re.M)
    assert "$(CLEAN_CACHE)" in _recipe(makefile, target)


def test_ci_runs_exactly_make_test() -> None:
    lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == "exec make test"
