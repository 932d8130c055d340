"""The SFT launcher: accelerate command lines, multi-node topology, packaged ZeRO-3 configs, CLI."""

from __future__ import annotations

import pytest
import yaml
from accelerate.commands.launch import launch_command_parser

from deepcritic import launch
from deepcritic.cli import build_parser


def test_packaged_accelerate_configs_are_zero3_deepspeed() -> None:
    cfg = yaml.safe_load(launch.accelerate_config_path().read_text())
    assert cfg["distributed_type"] == "DEEPSPEED"
    assert cfg["deepspeed_config"]["zero_stage"] == 3
    assert cfg["deepspeed_config"]["zero3_save_16bit_model"] is True
    offload = yaml.safe_load(launch.accelerate_config_path("zero3_offload.yaml").read_text())
    assert offload["deepspeed_config"]["offload_param_device"] == "cpu"
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        launch.accelerate_config_path("nope.yaml")


def test_topology_from_kubeflow_trainer_env() -> None:
    env = {
        "PET_NNODES": "2",
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": "job-node-0-0.svc",
        "PET_MASTER_PORT": "23456",
        "PET_NPROC_PER_NODE": "8",
    }
    topo = launch.topology_from_env(env, gpus=0)
    assert topo == launch.Topology(8, 2, 1, "job-node-0-0.svc", 23456)
    assert topo.num_processes == 16
    plain = launch.topology_from_env({"MASTER_ADDR": "m", "NNODES": "3", "NODE_RANK": "2"}, gpus=4)
    assert (plain.nproc_per_node, plain.num_machines, plain.machine_rank) == (4, 3, 2)
    assert launch.topology_from_env({}, gpus=0) == launch.Topology(1)
    with pytest.raises(ValueError, match="PET_NNODES"):
        launch.topology_from_env({"PET_NNODES": "two"}, gpus=1)


def test_accelerate_command_parses_with_accelerates_own_parser() -> None:
    topo = launch.Topology(8, 2, 1, "10.0.0.1", 29500)
    cfg = launch.accelerate_config_path()
    args = ["--config", "sft.paper.yaml", "--data", "/d/sft.jsonl"]
    cmd = launch.accelerate_command("sft", args, cfg, topo)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    parsed = launch_command_parser().parse_args(cmd[3:])
    assert parsed.num_processes == 16 and parsed.num_machines == 2 and parsed.machine_rank == 1
    assert parsed.main_process_ip == "10.0.0.1" and parsed.config_file == str(cfg)
    assert parsed.module and parsed.training_script == "deepcritic.cli"
    assert parsed.training_script_args == ["sft", *args]
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        launch.accelerate_command("sft", [], cfg, launch.Topology(8, 2, 0, None))


def test_launch_flags_are_stripped_and_cpu_runs_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["-v", "sft", "--config", "c.yaml", "--launcher", "auto", "--accelerate-config=z.yaml"]
    assert launch.stage_args_from_argv("sft", argv) == ["--config", "c.yaml"]
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("ACCELERATE_PROCESS_ID", raising=False)
    monkeypatch.setattr(launch, "visible_gpus", lambda: 0)
    assert not launch.should_launch("auto", launch.Topology(1))
    assert not launch.should_launch("inprocess")
    assert launch.should_launch("accelerate")
    monkeypatch.setattr(launch, "visible_gpus", lambda: 4)
    assert launch.should_launch("auto", launch.Topology(4))
    monkeypatch.setenv("LOCAL_RANK", "0")  # inside a launched rank: never launch again
    assert not launch.should_launch("auto", launch.Topology(4))


def test_cli_registers_seed_and_sft() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["sft", "--model", "tiny", "--learning-rate", "0.5", "--launcher", "inprocess"]
    )
    assert args.command == "sft" and args.launcher == "inprocess"
    seed_args = parser.parse_args(
        ["seed", "--shard", "1/4", "--backend", "vllm", "--indepth.n", "8"]
    )
    from deepcritic.config import config_from_args
    from deepcritic.stages.seed import SeedConfig

    cfg = config_from_args(SeedConfig, seed_args)
    assert cfg.shard == "1/4" and cfg.generation.kind == "vllm" and cfg.indepth.n == 8
