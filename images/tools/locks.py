"""Dependency locks for CI and every image, generated together so they agree (``make lock``).

One resolution covers everything: all extras of ``pyproject.toml`` plus the ``mlflow-server``
group, for linux x86_64 and Python 3.11 (the images' interpreter), with PyPI's CUDA build of torch.
Each lock is then resolved *within* that set (it is passed as constraints), so a package shared
by two locks has one version in both: CI tests the transformers, TRL, torch and kserve the GPU
images run. The CPU locks (CI and ``pipeline-base``) take ``torch==<same>+cpu`` from PyTorch's CPU
wheels instead (an override; ``--torch-cpu-source``).

Only the standard library is imported here: ``make lock`` runs it with a bare ``python3`` and uv,
before any virtual environment exists. The image check (no Docker) is :mod:`images.tools.check`.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

PYTHON_VERSION = "3.11"  # the images' interpreter (python3.11 on Ubuntu 22.04 / python:3.11 slim)
# Ubuntu 22.04 (the CUDA bases) has glibc 2.35; Debian bookworm (python:slim) 2.36.
PYTHON_PLATFORM = "x86_64-manylinux_2_35"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# Built from source in images/train's CUDA devel stage, so kept out of the hash-checked install.
CUDA_BUILT = ("deepspeed", "flash-attn")
COMPILE_COMMAND = "make lock"
# The packages whose versions CI's tests stand for: every lock that has one must agree with CI.
SHARED = ("torch", "transformers", "trl", "kserve", "mlflow", "datasets", "accelerate")


@dataclass(frozen=True)
class LockSpec:
    """One lock file: what it resolves (extras of pyproject.toml and/or dependency groups)."""

    name: str
    path: str  # relative to the repository root
    extras: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    cpu_torch: bool = False  # torch from the CPU wheel index (+cpu), not PyPI's CUDA build
    hashes: bool = True  # image locks are installed with --require-hashes
    build_path: str = ""  # CUDA_BUILT packages go here (sdist hashes), not into ``path``
    includes_project: bool = True  # the deepcritic wheel is installed on top (--no-deps)


CI = LockSpec(
    "ci", "requirements.lock", ("train", "serve", "pipeline", "dev"), cpu_torch=True, hashes=False
)
LOCKS: dict[str, LockSpec] = {
    "ci": CI,
    "pipeline-base": LockSpec(
        "pipeline-base", "images/pipeline-base/requirements.lock", ("pipeline",), cpu_torch=True
    ),
    "train": LockSpec(
        "train", "images/train/requirements.lock", ("train", "train-gpu", "pipeline"),
        build_path="images/train/build.lock",
    ),
    "generate": LockSpec("generate", "images/generate/requirements.lock", ("vllm", "pipeline")),
    "serve": LockSpec("serve", "images/serve/requirements.lock", ("serve", "vllm")),
    "mlflow": LockSpec(
        "mlflow", "images/mlflow/requirements.lock", groups=("mlflow-server",),
        includes_project=False,
    ),
}  # fmt: skip
ALL_EXTRAS = ("train", "train-gpu", "serve", "pipeline", "vllm", "dev")
ALL_GROUPS = ("mlflow-server",)


def normalize(name: str) -> str:
    """PEP 503 name: ``Flash_Attn`` -> ``flash-attn``."""
    return re.sub(r"[-_.]+", "-", name).lower()


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def parse_lock(text: str, source: str = "lock") -> dict[str, str]:
    """``{normalized name: version}`` of a lock (pip-freeze or uv's hashed format).

    Every requirement line must be an exact ``name==version`` pin; anything else raises a
    ``ValueError`` naming the file and line.
    """
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "--hash", "-c ", "--")) or raw[:1].isspace():
            continue
        m = _PIN.match(line)
        if m is None:
            raise ValueError(f"{source}:{lineno}: not an exact pin (name==version): {raw!r}")
        name = normalize(m.group(1))
        if name in pins:
            raise ValueError(f"{source}:{lineno}: {name} is pinned twice")
        pins[name] = m.group(2)
    return pins


def read_lock(root: Path, spec: LockSpec) -> dict[str, str]:
    """The pins of ``spec``'s lock, its build lock included."""
    pins = parse_lock((root / spec.path).read_text(encoding="utf-8"), spec.path)
    if spec.build_path:
        pins.update(
            parse_lock((root / spec.build_path).read_text(encoding="utf-8"), spec.build_path)
        )
    return pins


def split_blocks(text: str) -> tuple[list[str], dict[str, str]]:
    """uv's output -> (header lines, {name: the requirement's block with its hash lines})."""
    header: list[str] = []
    blocks: dict[str, str] = {}
    current = ""
    for line in text.splitlines(keepends=True):
        m = _PIN.match(line)
        if m is not None:
            current = normalize(m.group(1))
            blocks[current] = line
        elif current and (line[:1].isspace() or not line.strip()):
            blocks[current] += line
        elif not current:
            header.append(line)
    return header, blocks


def uv_executable() -> str:
    """uv from this interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / "uv"
    found = str(local) if local.exists() else shutil.which("uv")
    if found is None:
        raise SystemExit("uv is not installed: pip install uv==0.13.9 (make lock does this)")
    return found


def torch_source_args(source: str) -> list[str]:
    """Where the CPU torch wheel comes from: a local folder (find-links) or an index URL."""
    local = source.removeprefix("file://")
    if Path(local).is_dir():
        return ["--find-links", local]
    return ["--extra-index-url", source, "--index-strategy", "unsafe-best-match"]


def compile_args(
    spec: LockSpec, out: Path, constraints: Path | None, torch_source: str, tmp: Path
) -> list[str]:
    """The ``uv pip compile`` arguments (after the uv executable) that write ``spec``'s lock."""
    args = ["pip", "compile", "--no-config", "--quiet", "--python-version", PYTHON_VERSION,
            "--python-platform", PYTHON_PLATFORM, "--no-annotate",
            "--custom-compile-command", COMPILE_COMMAND, "-o", str(out)]  # fmt: skip
    if spec.extras:
        args.insert(2, "pyproject.toml")
        for extra in spec.extras:
            args += ["--extra", extra]
    for group in spec.groups:
        args += ["--group", group]
    if spec.hashes:
        args.append("--generate-hashes")
    if constraints is not None:
        args += ["--constraints", str(constraints)]
    if spec.cpu_torch:
        override = tmp / "torch-cpu.txt"
        override.write_text(f"torch=={_torch_version(constraints)}+cpu\n", encoding="utf-8")
        args += ["--override", str(override), *torch_source_args(torch_source)]
    return args


def _torch_version(constraints: Path | None) -> str:
    if constraints is None:
        raise ValueError("a CPU-torch lock is resolved within the full set (constraints needed)")
    pins = parse_lock(constraints.read_text(encoding="utf-8"), str(constraints))
    return pins["torch"].split("+", 1)[0]


def run_uv(args: Sequence[str], root: Path) -> None:
    proc = subprocess.run([uv_executable(), *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"uv {' '.join(args[:2])} failed:\n{proc.stderr[-4000:]}")


def write_lock(spec: LockSpec, compiled: Path, root: Path) -> None:
    """Write ``spec``'s lock(s) from uv's output: CUDA_BUILT packages go to the build lock."""
    text = compiled.read_text(encoding="utf-8")
    header, blocks = split_blocks(text)
    built = {n: blocks.pop(n) for n in CUDA_BUILT if n in blocks} if spec.build_path else {}
    (root / spec.path).write_text("".join(header) + "".join(blocks.values()), encoding="utf-8")
    if spec.build_path:
        note = "# Built from source in images/train's CUDA devel stage (sdist hashes).\n"
        (root / spec.build_path).write_text(
            "".join(header) + note + "".join(built.values()), encoding="utf-8"
        )


def seed_preferences(out: Path, sources: Sequence[Path]) -> None:
    """Start uv's output file from the existing pins: uv keeps them unless a requirement moved
    (so `make lock` changes only what it must)."""
    lines = []
    for src in sources:
        if src.is_file():
            for name, version in parse_lock(src.read_text(encoding="utf-8"), str(src)).items():
                if name not in CUDA_BUILT:
                    lines.append(f"{name}=={version.split('+', 1)[0]}\n")
    out.write_text("".join(dict.fromkeys(lines)), encoding="utf-8")


def lock(root: Path, names: Sequence[str], torch_source: str) -> None:
    """Resolve the full set, then every lock in ``names`` within it."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        universe = tmp / "all.txt"
        everything = LockSpec("all", "", ALL_EXTRAS, ALL_GROUPS, hashes=False)
        seed_preferences(universe, [root / CI.path])
        run_uv(compile_args(everything, universe, None, torch_source, tmp), root)
        for name in names:
            spec = LOCKS[name]
            out = tmp / f"{name}.txt"
            seed_preferences(out, [root / spec.path])
            run_uv(compile_args(spec, out, universe, torch_source, tmp), root)
            write_lock(spec, out, root)
            print(f"{spec.path}: {len(read_lock(root, spec))} pins")


def disagreements(root: Path) -> list[str]:
    """Shared packages whose version differs between an image's lock and CI's lock."""
    ci = read_lock(root, CI)
    problems = []
    for spec in LOCKS.values():
        if spec is CI:
            continue
        pins = read_lock(root, spec)
        for name in SHARED:
            if name in pins and pins[name].split("+")[0] != ci.get(name, "").split("+")[0]:
                problems.append(f"{spec.path}: {name}=={pins[name]} but CI has {ci.get(name)}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.tools.locks", description=__doc__)
    parser.add_argument("names", nargs="*", default=list(LOCKS), help=f"locks ({', '.join(LOCKS)})")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument(
        "--torch-cpu-source",
        default=os.environ.get("TORCH_CPU_SOURCE") or TORCH_CPU_INDEX,
        help="index URL or local wheel folder for torch==<version>+cpu",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(LOCKS))
    if unknown:
        parser.error(f"unknown lock(s) {unknown}; known: {list(LOCKS)}")
    lock(args.root, args.names, args.torch_cpu_source)
    problems = disagreements(args.root)
    for p in problems:
        print("DISAGREE", p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
