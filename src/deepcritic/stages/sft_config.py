"""SFT's config and what follows from it: the batch plan, precision, attention, TRL ``SFTConfig``.

The config/trainer pair of TRL: :class:`CriticSFTConfig` (YAML preset + CLI overrides) here, the
trainer in :mod:`deepcritic.stages.sft`. Everything here is a pure function of the config (no model,
no data), so a launcher, the memory planner and the tests compute it without starting a trainer."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)


Precision = Literal["auto", "bf16", "fp32"]
SFT_DATA_FILE = "sft.jsonl"


@dataclass
class CriticSFTConfig:
    """Stage 2 (SFT of the critic). Named so as not to clash with TRL's ``SFTConfig``."""

    data: str = ""  # seed output: sft.jsonl, or the seed out_dir that holds it
    # The critic's prompt: deepcritic = the project's (prompts/critique_*.md); reference = the
    # authors' (their template, Qwen's default system message, eval.py's step numbering). A row's
    # stored prompt is used as is and must be of this set; rows without one are built with it.
    prompt_set: str = "deepcritic"
    model: str = "default"  # paper: Qwen2.5-7B-Instruct; default = SmolLM2-135M-Instruct
    out_dir: str = "outputs/sft"  # checkpoints; the final model in <out_dir>/final
    learning_rate: float = 1e-5  # paper: 1e-5
    lr_scheduler_type: str = "cosine"  # paper: cosine
    warmup_ratio: float = 0.1  # paper: 0.1
    num_train_epochs: float = 3.0  # paper: 3 epochs
    effective_batch_size: int = 64  # paper: 64 = per_device x grad_accum x world_size
    per_device_batch_size: int = 1  # an upper bound: lowered to divide effective / world
    max_length: int = 16384  # paper: 16384
    max_steps: int = -1  # > 0 overrides epochs (tests, smoke runs)
    gradient_checkpointing: bool = True  # recompute activations (less memory, ~30% slower)
    precision: Precision = "auto"  # auto: bf16 on GPU and on CPUs with AMX, else fp32
    packing: bool = False  # BFD packing (implies padding-free; needs flash attention on GPU)
    padding_free: bool = False  # needs flash attention
    attn_implementation: str | None = None  # e.g. flash_attention_2 on GPU; None = model default
    deepspeed: str | None = None  # zero3 | zero3_offload | zero2 | a JSON file (paper: ZeRO-3)
    weight_decay: float = 0.0  # AdamW weight decay
    max_grad_norm: float = 1.0  # gradient clipping
    logging_steps: int = 1  # log loss every N steps
    save_steps: int = 200  # checkpoint every N steps (resume)
    save_total_limit: int = 2  # checkpoints kept
    resume: bool = True  # continue from the last checkpoint in out_dir/checkpoints
    seed: int = 0  # data order and init seed
    dataloader_num_workers: int = 0  # DataLoader worker processes
    trust_remote_code: bool = False  # run model code from the checkpoint (off: safety)
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables

    def __post_init__(self) -> None:
        from deepcritic.reference import check_prompt_set

        check_prompt_set(self.prompt_set)
        for name in (
            "effective_batch_size",
            "per_device_batch_size",
            "logging_steps",
            "save_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class CriticSFTResult:
    checkpoint: str  # plain HF checkpoint (safetensors + tokenizer)
    train_loss: float
    global_step: int
    examples: int
    data_hash: str
    losses: list[float] = field(default_factory=list)
    resumed_from: str | None = None
    run_id: str | None = None


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class BatchPlan:
    """How ``effective_batch_size`` examples per optimizer step split over the ranks."""

    world: int
    per_device: int
    accumulation: int

    @property
    def effective(self) -> int:
        return self.world * self.per_device * self.accumulation


def batch_plan(config: CriticSFTConfig, world: int) -> BatchPlan:
    """The largest micro-batch <= ``per_device_batch_size`` that divides the per-rank share.

    The effective batch is exact for every world size that divides it (8 GPUs: 2 x 4 x 8; 16 GPUs:
    2 x 2 x 16; one GPU: 2 x 32); any other world size is refused rather than silently changing
    the paper's batch.
    """
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    if config.effective_batch_size % world:
        raise ValueError(
            f"effective_batch_size={config.effective_batch_size} is not divisible by the world "
            f"size {world} (GPUs x nodes): choose a world size that divides it"
        )
    share = config.effective_batch_size // world
    per_device = max(d for d in range(1, min(config.per_device_batch_size, share) + 1)
                     if share % d == 0)  # fmt: skip
    if per_device != config.per_device_batch_size:
        log.info("per-device batch %d -> %d (divides %d per rank)",
                 config.per_device_batch_size, per_device, share)  # fmt: skip
    return BatchPlan(world=world, per_device=per_device, accumulation=share // per_device)


def use_bf16(config: CriticSFTConfig, gpu: bool | None = None) -> bool:
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    if config.precision == "fp32":
        return False
    from deepcritic import launch

    native = launch.auto_bf16(gpu, config.deepspeed)
    if config.precision == "bf16" and not native:
        raise ValueError(
            "precision: bf16 needs a GPU or a CPU with native bf16 (AMX) without DeepSpeed; "
            "use auto or fp32 here"
        )
    return native


def attention(config: CriticSFTConfig, gpu: bool) -> tuple[str | None, bool, bool]:
    """(attn_implementation, padding_free, packing) this machine can run.

    Flash attention (and the padding-free / packed batches that need it) only with a GPU and the
    ``flash_attn`` package; otherwise SDPA with padded batches, and a warning.
    """
    wants_flash = (config.attn_implementation or "").startswith("flash_attention")
    needs_flash = wants_flash or config.padding_free or config.packing
    if not needs_flash:
        return config.attn_implementation, False, False
    import importlib.util

    if gpu and importlib.util.find_spec("flash_attn") is not None:
        attn = config.attn_implementation if wants_flash else "flash_attention_2"
        return attn, config.padding_free or config.packing, config.packing
    log.warning("flash attention unavailable here (GPU: %s): SDPA with padded batches", gpu)
    return ("sdpa" if gpu else None), False, False


def trainer_arguments(config: CriticSFTConfig, world: int, gpu: bool) -> dict[str, Any]:
    """The keyword arguments of TRL's ``SFTConfig`` for this world size (pure: no torch, no TRL)."""
    from deepcritic.launch import deepspeed_config

    plan = batch_plan(config, world)
    _, padding_free, packing = attention(config, gpu)
    return {
        "output_dir": str(Path(config.out_dir) / "checkpoints"),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": plan.per_device,
        "gradient_accumulation_steps": plan.accumulation,
        "max_length": config.max_length,
        "completion_only_loss": True,  # loss on the assistant turn only
        "packing": packing,
        "padding_free": padding_free,
        # transformers 5 name, and TRL's own (deprecated) alias set alike, so neither warns
        "activation_checkpointing": config.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False},
        "gradient_checkpointing": config.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "bf16": use_bf16(config, gpu),
        "deepspeed": deepspeed_config(config.deepspeed),
        "use_cpu": not gpu and not config.deepspeed,  # DeepSpeed on CPU: see launch.join_deepspeed
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "dataloader_num_workers": config.dataloader_num_workers,
        "report_to": "none",  # metrics go through deepcritic.tracking (one run per stage)
        "trust_remote_code": config.trust_remote_code,
    }


def checkpointing_args(args_cls: Any, enabled: bool) -> dict[str, Any]:
    """Gradient checkpointing (non-reentrant) under every name ``args_cls`` knows: transformers
    >= 5.18 calls it ``activation_checkpointing`` and keeps the old name as an alias (setting both
    keeps either from warning); 5.17, the images' version (vllm 0.31 needs < 5.18), has only
    ``gradient_checkpointing``."""
    fields = set(getattr(args_cls, "__dataclass_fields__", {}))
    out: dict[str, Any] = {}
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if name in fields:
            out[name] = enabled
            out[f"{name}_kwargs"] = {"use_reentrant": False}
    if not out:
        raise TypeError(f"{args_cls.__name__} has no gradient/activation checkpointing field")
    return out


def trl_args(config: CriticSFTConfig, world: int | None = None) -> Any:
    """TRL ``SFTConfig`` from ours (built before the model, so ZeRO-3 init sees it)."""
    import torch
    from trl import SFTConfig

    from deepcritic.launch import join_deepspeed

    configured = join_deepspeed(bool(config.deepspeed))
    kwargs = trainer_arguments(config, world_size() if world is None else world,
                               torch.cuda.is_available())  # fmt: skip
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        kwargs.pop(name, None)
        kwargs.pop(f"{name}_kwargs", None)
    kwargs.update(checkpointing_args(SFTConfig, config.gradient_checkpointing))
    if configured:
        kwargs["accelerator_config"] = {"use_configured_state": True}
    return SFTConfig(**kwargs)
