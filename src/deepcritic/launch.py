"""Run a training stage under ``accelerate launch`` on GPU nodes, or in-process on CPU.

``python -m deepcritic.launch [--launcher auto|inprocess|accelerate] [--accelerate-config F]
<stage> [stage args...]``, e.g. ``python -m deepcritic.launch sft --config configs/sft.paper.yaml``.
``deepcritic sft --launcher auto ...`` does the same.

* CPU, or one GPU on one node (``auto``): the stage runs in this process.
* Several GPUs or nodes (``auto``), or ``--launcher accelerate``: this process execs
  ``accelerate launch --config_file <zero3.yaml> --num_processes ... -m deepcritic.cli <stage>
  ...``; every rank (``LOCAL_RANK`` set) then runs the stage in-process under DeepSpeed ZeRO-3.
* Multi-node: run the same command on every node (a Kubeflow Trainer / PyTorchJob pod per node).
  Topology comes from the job's env: ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR``,
  ``PET_MASTER_PORT``, ``PET_NPROC_PER_NODE`` (Kubeflow Trainer torch runtime), else ``NNODES``,
  ``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``; GPUs per node default to the visible count.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_ACCELERATE_CONFIG = "zero3.yaml"
LAUNCH_FLAGS = ("--launcher", "--accelerate-config")
# set by accelerate/torchrun in every rank: we are already launched
_LAUNCHED_ENV = ("ACCELERATE_PROCESS_ID", "LOCAL_RANK")


@dataclass(frozen=True)
class Topology:
    nproc_per_node: int
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 29500

    @property
    def num_processes(self) -> int:
        return self.nproc_per_node * self.num_machines


def accelerate_config_path(name: str | None = None) -> Path:
    """A packaged config (``zero3.yaml``, ``zero3_offload.yaml``, ``multi_gpu.yaml``) or a path."""
    if name and Path(name).is_file():
        return Path(name)
    base = resources.files("deepcritic").joinpath("configs", "accelerate")
    path = Path(str(base.joinpath(name or DEFAULT_ACCELERATE_CONFIG)))
    if not path.is_file():
        raise FileNotFoundError(f"accelerate config {name!r} is neither a file nor packaged")
    return path


def visible_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _env_int(env: Mapping[str, str], names: Sequence[str], default: int) -> int:
    for name in names:
        value = env.get(name)
        if value not in (None, ""):
            try:
                return int(str(value))
            except ValueError:
                raise ValueError(
                    f"environment variable {name}={value!r} is not an integer"
                ) from None
    return default


def topology_from_env(env: Mapping[str, str] | None = None, gpus: int | None = None) -> Topology:
    """The job's topology from the training-job env (see the module docstring)."""
    env = os.environ if env is None else env
    gpus = visible_gpus() if gpus is None else gpus
    nproc = _env_int(env, ("PET_NPROC_PER_NODE", "NPROC_PER_NODE"), max(gpus, 1))
    return Topology(
        nproc_per_node=nproc,
        num_machines=_env_int(env, ("PET_NNODES", "NNODES"), 1),
        machine_rank=_env_int(env, ("PET_NODE_RANK", "NODE_RANK"), 0),
        main_process_ip=env.get("PET_MASTER_ADDR") or env.get("MASTER_ADDR") or None,
        main_process_port=_env_int(env, ("PET_MASTER_PORT", "MASTER_PORT"), 29500),
    )


def already_launched(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return any(name in env for name in _LAUNCHED_ENV)


def should_launch(launcher: str, topology: Topology | None = None) -> bool:
    """Whether to re-run under ``accelerate launch`` (never from inside a launched rank)."""
    if launcher == "inprocess" or already_launched():
        return False
    if launcher == "accelerate":
        return True
    if launcher != "auto":
        raise ValueError(f"launcher must be auto, inprocess or accelerate, got {launcher!r}")
    topo = topology or topology_from_env()
    return visible_gpus() > 0 and topo.num_processes > 1


def accelerate_command(
    stage: str, stage_args: Sequence[str], config_file: Path, topology: Topology
) -> list[str]:
    """The ``accelerate launch`` command line for one node."""
    if topology.num_machines > 1 and not topology.main_process_ip:
        raise ValueError("multi-node launch needs PET_MASTER_ADDR or MASTER_ADDR")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config_file),
        "--num_processes", str(topology.num_processes),
        "--num_machines", str(topology.num_machines),
        "--machine_rank", str(topology.machine_rank),
        "--main_process_port", str(topology.main_process_port),
    ]  # fmt: skip
    if topology.main_process_ip:
        cmd += ["--main_process_ip", topology.main_process_ip]
    # every rank sees LOCAL_RANK, so the stage runs in-process there (see already_launched)
    return [*cmd, "-m", "deepcritic.cli", stage, *stage_args]


def strip_launch_flags(args: Sequence[str]) -> list[str]:
    """Drop ``--launcher X`` / ``--accelerate-config X`` (and ``=`` forms) from stage args."""
    out: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in LAUNCH_FLAGS:
            skip = True
        elif not a.startswith(tuple(f"{f}=" for f in LAUNCH_FLAGS)):
            out.append(a)
    return out


def stage_args_from_argv(stage: str, argv: Sequence[str] | None = None) -> list[str]:
    """The arguments after the stage name on this process's command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if stage not in argv:
        raise ValueError(f"stage {stage!r} not found on the command line {argv!r}")
    return strip_launch_flags(argv[argv.index(stage) + 1 :])


def relaunch(stage: str, accelerate_config: str | None, argv: Sequence[str] | None = None) -> int:
    """Re-run ``stage`` (same arguments) under ``accelerate launch``; its exit status."""
    topo = topology_from_env()
    cmd = accelerate_command(
        stage, stage_args_from_argv(stage, argv), accelerate_config_path(accelerate_config), topo
    )
    log.info("launching: %s", " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deepcritic.launch",
        description="Run a training stage in-process (CPU / one GPU) or under accelerate launch.",
    )
    parser.add_argument("--launcher", choices=("auto", "inprocess", "accelerate"), default="auto")
    parser.add_argument("--accelerate-config", default=None)
    parser.add_argument("stage", help="a deepcritic subcommand, e.g. sft or grpo")
    parser.add_argument("stage_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    stage_args = strip_launch_flags(args.stage_args)
    if should_launch(args.launcher):
        config = accelerate_config_path(args.accelerate_config)
        cmd = accelerate_command(args.stage, stage_args, config, topology_from_env())
        log.info("launching: %s", " ".join(cmd))
        return subprocess.run(cmd, check=False).returncode
    from deepcritic.cli import main as cli_main

    return cli_main([args.stage, *stage_args])


if __name__ == "__main__":
    raise SystemExit(main())
