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
  :func:`trainer_command` is the command a TrainJob runs on every node.

DeepSpeed lives in the *stage* config (``deepspeed: zero3``, see :data:`DEEPSPEED_PRESETS`), so
ZeRO-3 holds in every launcher: accelerate, torchrun, or one in-process rank. Each rank calls
:func:`join_deepspeed` before building its trainer arguments: a lone process gets single-rank
rendezvous env, and on CPU (the rehearsal) the ranks join DeepSpeed over gloo.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from deepcritic.platform.processes import free_port

log = logging.getLogger(__name__)

DEFAULT_ACCELERATE_CONFIG = "zero3.yaml"
STAGES = ("sft", "grpo")  # the stages a TrainJob runs
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


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (Intel AMX): there bf16 autocast trains
    ~1.8x faster than fp32 (SmolLM2-135M forward + backward + AdamW, 2 cores: 138 -> 251 tokens/s);
    elsewhere bf16 is emulated and slower, so ``precision: auto`` stays fp32."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def auto_bf16(gpu: bool, deepspeed: str | None) -> bool:
    """``precision: auto`` for SFT and GRPO: bf16 on GPU; on CPU, bf16 autocast where it is native
    (:func:`cpu_computes_bf16`) and not under DeepSpeed's CPU rehearsal; else fp32."""
    return gpu or (not deepspeed and cpu_computes_bf16())


# DeepSpeed configs by name ("auto" values are filled by transformers from the trainer arguments).
# bf16 under ZeRO: bf16 weights and gradients for compute, fp32 master weights and Adam states in
# the optimizer partitions (DeepSpeed keeps them whenever bf16 is enabled).
_ZERO3: dict[str, Any] = {
    "stage": 3,  # paper: ZeRO-3
    "overlap_comm": True,
    "contiguous_gradients": True,
    "reduce_bucket_size": "auto",
    "stage3_prefetch_bucket_size": "auto",
    "stage3_param_persistence_threshold": "auto",
    "stage3_gather_16bit_weights_on_model_save": True,  # final checkpoint: one plain state dict
}
_COMMON: dict[str, Any] = {
    "bf16": {"enabled": "auto"},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
}
_OFFLOAD = {"device": "cpu", "pin_memory": True}
DEEPSPEED_PRESETS: dict[str, dict[str, Any]] = {
    "zero2": {**_COMMON, "zero_optimization": {"stage": 2, "overlap_comm": True,
                                               "contiguous_gradients": True}},
    "zero3": {**_COMMON, "zero_optimization": _ZERO3},
    "zero3_offload": {**_COMMON, "zero_optimization": {**_ZERO3, "offload_optimizer": _OFFLOAD,
                                                       "offload_param": _OFFLOAD}},
}  # fmt: skip


def deepspeed_config(name: str | None) -> dict[str, Any] | None:
    """The DeepSpeed config dict for a preset name or a JSON file; None when ``name`` is empty."""
    if not name:
        return None
    if name in DEEPSPEED_PRESETS:
        return copy.deepcopy(DEEPSPEED_PRESETS[name])
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"deepspeed: {name!r} is neither a preset ({', '.join(DEEPSPEED_PRESETS)}) nor a file"
        )
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"deepspeed: {path} must hold a JSON object")
    return loaded


RESULT_FILE = "result.json"  # a stage's result, for a launcher that did not train (a TrainJob's)
R = TypeVar("R")


def write_stage_result(result: Any, out_dir: str) -> Path:
    """``out_dir/result.json``: the stage's result dataclass, written by rank 0."""
    path = Path(out_dir) / RESULT_FILE
    path.write_text(json.dumps(asdict(result), indent=1), encoding="utf-8")
    return path


def read_stage_result(cls: type[R], out_dir: str, stage: str) -> R:
    """The result :func:`write_stage_result` left in ``out_dir``, as ``cls``."""
    path = Path(out_dir) / RESULT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the {stage} run left no result (did it finish?)")
    return cls(**json.loads(path.read_text(encoding="utf-8")))


def zero_stage(ds: Mapping[str, Any] | None) -> int:
    """The ZeRO stage of a DeepSpeed config (0 without DeepSpeed)."""
    return int(((ds or {}).get("zero_optimization") or {}).get("stage", 0))


def join_deepspeed(enabled: bool) -> bool:
    """Prepare this rank to join DeepSpeed; True when the trainer must reuse the state made here.

    A lone process (no launcher: no ``LOCAL_RANK``) gets single-rank rendezvous env, so DeepSpeed
    initializes exactly as under a launcher. On CPU (the rehearsal), transformers would set up
    plain gloo DDP and drop DeepSpeed, so the ranks join DeepSpeed over gloo here, and the trainer
    arguments must then say ``accelerator_config.use_configured_state``.
    """
    if not enabled:
        return False
    # the stage's own DeepSpeed config wins over the ZeRO fields of the accelerate config file
    # (accelerate refuses to run with both; its launch exports the field names here)
    if os.environ.pop("ACCELERATE_CONFIG_DS_FIELDS", None):
        log.info("DeepSpeed settings come from the stage config, not the accelerate config")
    if "LOCAL_RANK" not in os.environ:
        single = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                  "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}  # fmt: skip
        for key, value in single.items():
            os.environ.setdefault(key, value)
    if visible_gpus() > 0:
        return False  # transformers joins DeepSpeed (NCCL) itself
    from accelerate import PartialState

    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    state = PartialState(backend="gloo")
    log.info("joined DeepSpeed on CPU over gloo: rank %d of %d", state.process_index,
             state.num_processes)  # fmt: skip
    return True


def trainer_command(
    stage: str, config_file: str, accelerate_config: str | None = None
) -> list[str]:
    """What every node of a TrainJob runs: this module, under ``accelerate launch`` with ZeRO-3.

    Topology comes from the Trainer's ``PET_*`` env on each node; never plain ``torchrun`` of the
    CLI (a rank with ``LOCAL_RANK`` set never re-launches, so it would run without ZeRO-3 there).
    """
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return ["python", "-m", "deepcritic.launch", "--launcher", "accelerate",
            "--accelerate-config", accelerate_config or DEFAULT_ACCELERATE_CONFIG,
            stage, "--config", config_file]  # fmt: skip


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
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stage_args = strip_launch_flags(args.stage_args)
    if should_launch(args.launcher):
        config = accelerate_config_path(args.accelerate_config)
        cmd = accelerate_command(args.stage, stage_args, config, topology_from_env())
        log.info("launching: %s", " ".join(cmd))
        return subprocess.run(cmd, check=False).returncode
    from deepcritic.cli import main as cli_main

    try:
        return cli_main([args.stage, *stage_args])
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Destroy this rank's process group, if the stage made one, before the interpreter exits:
    left to exit-time teardown, a gloo group's threads can abort the rank ("terminate called
    without an active exception", exit -6) after the stage has finished and written its result."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
