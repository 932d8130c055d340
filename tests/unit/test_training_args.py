"""Trainer arguments built from the paper presets carry ZeRO-3, bf16, gradient checkpointing and
the effective batch (64 SFT examples, 512 GRPO completions) for 8 and 16 GPUs; the small presets
keep them on one GPU; the launcher-side helpers behave."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from deepcritic import launch
from deepcritic.config import load_config
from deepcritic.stages.grpo import CriticGRPOConfig
from deepcritic.stages.grpo import trainer_arguments as grpo_arguments
from deepcritic.stages.sft_config import CriticSFTConfig, batch_plan
from deepcritic.stages.sft_config import trainer_arguments as sft_arguments

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "deepcritic" / "configs"


def preset(cls: type, name: str) -> object:
    return load_config(cls, CONFIGS / f"{name}.yaml")


@pytest.mark.parametrize("world", [8, 16])
def test_sft_paper_arguments(world: int) -> None:
    args = sft_arguments(preset(CriticSFTConfig, "sft.paper"), world, gpu=True)  # type: ignore[arg-type]
    assert launch.zero_stage(args["deepspeed"]) == 3
    assert args["deepspeed"]["bf16"]["enabled"] == "auto" and args["bf16"] is True
    assert args["gradient_checkpointing"] and args["activation_checkpointing"]
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * world == 64
    assert args["use_cpu"] is False and args["completion_only_loss"] is True
    zero = args["deepspeed"]["zero_optimization"]
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("world", [8, 16])
def test_grpo_paper_arguments(world: int) -> None:
    cfg = preset(CriticGRPOConfig, "grpo.paper")
    args = grpo_arguments(cfg, world, gpu=True)  # type: ignore[arg-type]
    assert launch.zero_stage(args["deepspeed"]) == 3 and args["bf16"] is True
    assert args["gradient_checkpointing"] is True
    completions = args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * world
    assert completions == 512 and completions % args["num_generations"] == 0
    assert args["mask_truncated_completions"] is True
    assert args["use_vllm"] and args["vllm_mode"] == "colocate" and args["vllm_enable_sleep_mode"]
    assert args["vllm_max_model_length"] == 4096 + 8192
    assert args["model_init_kwargs"]["dtype"] == "bfloat16"  # DeepSpeed keeps fp32 masters


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_small_presets_on_one_gpu(stage: str) -> None:
    if stage == "sft":
        args = sft_arguments(preset(CriticSFTConfig, "sft.small"), 1, gpu=True)  # type: ignore[arg-type]
        assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 64
    else:
        args = grpo_arguments(preset(CriticGRPOConfig, "grpo.small"), 1, gpu=True)  # type: ignore[arg-type]
        assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 64
    assert launch.zero_stage(args["deepspeed"]) == 3 and args["bf16"] is True


def test_batch_plan_keeps_the_effective_batch_or_refuses() -> None:
    cfg = CriticSFTConfig(effective_batch_size=64, per_device_batch_size=2)
    for world in (1, 2, 4, 8, 16, 32, 64):
        assert batch_plan(cfg, world).effective == 64
    assert batch_plan(cfg, 64).per_device == 1  # one example per rank, lowered from 2
    assert batch_plan(replace(cfg, per_device_batch_size=3), 8).per_device == 2  # divides 8
    with pytest.raises(
        ValueError, match="effective_batch_size=64 is not divisible by the world size 6"
    ):
        batch_plan(cfg, 6)


def test_grpo_accumulation_needs_whole_groups() -> None:
    from deepcritic.stages.grpo import accumulation

    cfg = CriticGRPOConfig(
        num_generations=8, per_device_train_batch_size=2, effective_batch_size=512
    )
    assert accumulation(cfg, 8) == 32 and accumulation(cfg, 16) == 16
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation(cfg, 6)
    plain = CriticGRPOConfig(num_generations=8, per_device_train_batch_size=4)
    with pytest.raises(ValueError, match="multiple of num_generations"):
        accumulation(plain, 1)
    assert accumulation(plain, 2) == 1  # 4 x 2 ranks = one group


def test_without_deepspeed_weights_stay_fp32_for_bf16_autocast() -> None:
    cfg = replace(preset(CriticGRPOConfig, "grpo.paper"), deepspeed=None)  # type: ignore[type-var]
    args = grpo_arguments(cfg, 8, gpu=True)
    assert args["deepspeed"] is None and args["bf16"] is True
    assert args["model_init_kwargs"]["dtype"] == "float32"  # fp32 masters under autocast


def test_cpu_arguments() -> None:
    cfg = load_config(CriticSFTConfig, CONFIGS / "sft.tiny.yaml")
    args = sft_arguments(cfg, 1, gpu=False)
    assert args["use_cpu"] is True and args["bf16"] is False and args["deepspeed"] is None
    rehearsal = sft_arguments(replace(cfg, deepspeed="zero3"), 2, gpu=False)
    assert rehearsal["use_cpu"] is False  # DeepSpeed on CPU joins over gloo (launch.join_deepspeed)
    with pytest.raises(ValueError, match="bf16 needs a GPU or a CPU with native bf16"):
        sft_arguments(replace(cfg, precision="bf16", deepspeed="zero3"), 2, gpu=False)


@pytest.mark.parametrize("amx", [True, False])
def test_cpu_precision_auto_follows_native_bf16(amx: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: bf16 autocast on a CPU with AMX (fp32 weights), fp32 elsewhere and under DeepSpeed;
    an explicit bf16 on a CPU without it is an error naming the field; fp32 stays fp32."""
    monkeypatch.setattr(launch, "cpu_computes_bf16", lambda: amx)
    cfg = replace(load_config(CriticSFTConfig, CONFIGS / "sft.tiny.yaml"), precision="auto")
    args = sft_arguments(cfg, 1, gpu=False)
    assert args["bf16"] is amx
    assert sft_arguments(replace(cfg, deepspeed="zero3"), 2, gpu=False)["bf16"] is False
    assert sft_arguments(replace(cfg, precision="fp32"), 1, gpu=False)["bf16"] is False
    if amx:
        assert sft_arguments(replace(cfg, precision="bf16"), 1, gpu=False)["bf16"] is True
    else:
        with pytest.raises(ValueError, match="precision: bf16"):
            sft_arguments(replace(cfg, precision="bf16"), 1, gpu=False)
    grpo = replace(load_config(CriticGRPOConfig, CONFIGS / "grpo.tiny.yaml"), precision="auto")
    assert grpo_arguments(grpo, 1, gpu=False)["bf16"] is amx
    assert grpo_arguments(replace(grpo, precision="fp32"), 1, gpu=False)["bf16"] is False


def test_deepspeed_presets_and_files(tmp_path: Path) -> None:
    assert launch.deepspeed_config(None) is None and launch.deepspeed_config("") is None
    assert launch.zero_stage(launch.deepspeed_config("zero2")) == 2
    offload = launch.deepspeed_config("zero3_offload") or {}
    assert offload["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    a = launch.deepspeed_config("zero3") or {}
    a["zero_optimization"]["stage"] = 1  # a copy: the preset is untouched
    assert launch.zero_stage(launch.deepspeed_config("zero3")) == 3
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"stage": 2}}')
    assert launch.zero_stage(launch.deepspeed_config(str(tmp_path / "ds.json"))) == 2
    with pytest.raises(FileNotFoundError, match="deepspeed: 'zero4'"):
        launch.deepspeed_config("zero4")


def test_join_deepspeed_is_a_no_op_without_deepspeed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", "zero_stage")
    assert launch.join_deepspeed(False) is False
    assert "ACCELERATE_CONFIG_DS_FIELDS" in os.environ


def test_trainer_command() -> None:
    cmd = launch.trainer_command("grpo", "/mnt/run/grpo.yaml", "zero3_offload.yaml")
    assert cmd == ["python", "-m", "deepcritic.launch", "--launcher", "accelerate",
                   "--accelerate-config", "zero3_offload.yaml", "grpo", "--config",
                   "/mnt/run/grpo.yaml"]  # fmt: skip
    with pytest.raises(ValueError, match="stage"):
        launch.trainer_command("seed", "x.yaml")


def test_a_rank_leaves_its_process_group_before_exiting(tmp_path: Path) -> None:
    """`python -m deepcritic.launch` destroys the group a stage made (gloo teardown at interpreter
    exit can abort a finished rank), and does nothing when there is none."""
    import torch.distributed as dist

    from deepcritic.launch import leave_process_group

    leave_process_group()  # no group: a no-op
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    assert dist.is_initialized()
    leave_process_group()
    assert not dist.is_initialized()
