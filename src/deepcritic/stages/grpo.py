r"""Stage 3b: GRPO reinforcement learning of the critic (TRL ``GRPOTrainer``).

* Policy: the SFT checkpoint (any name :func:`deepcritic.models.resolve_model` accepts).
* Prompt: :func:`deepcritic.reference.critic_prompt` in the configured ``prompt_set`` (the
  evaluation prompt, unchanged: the project's, or the authors' with ``prompt_set: reference``).
* Reward: :func:`deepcritic.rewards.first_error_reward`: 1.0 when the one grader's reading of the
  critique (``reward_parser``: strict, lenient or official) equals the 0-based label, else 0.0; an
  optional format term (``format_penalty``, off by
  default) for completions with no readable ``\boxed{}`` judgment.
* Data (:mod:`deepcritic.stages.rl_data`): canonical JSONL of labelled solutions; ``data_source``
  switches between human labels (``labels_path``: PRM800K, or CHAMP offline) and Monte Carlo
  annotation (``mc_path``, the output of ``deepcritic mc``; every row must carry
  ``meta.mc_estimates``), or ``rl_data_uri`` names a released RL set. Curated (QC rows, the seed
  stage's problems, label balance), every step counted and logged. Config:
  :mod:`deepcritic.stages.grpo_config`.
* MLflow (our callback, TRL's own reporting off): reward mean/std, completion lengths, the
  fraction of unparsable critiques, KL, loss, learning rate; per optimizer step.
* Checkpoints under ``out_dir/checkpoints`` (resumed from the newest one), and a plain HF
  safetensors checkpoint + tokenizer in ``out_dir/final``.

The paper's RL hyperparameters are not public: every default of the config is ours unless it says
``# paper:``; ``num_generations = 8`` follows the issue's spec.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deepcritic import tracking
from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.models import resolve_model
from deepcritic.rewards import make_first_error_reward
from deepcritic.stages.grpo_config import CriticGRPOConfig as CriticGRPOConfig
from deepcritic.stages.grpo_config import CriticGRPOResult as CriticGRPOResult
from deepcritic.stages.rl_data import build_dataset as build_dataset
from deepcritic.stages.rl_data import curation_params, training_solutions
from deepcritic.stages.rl_data import load_training_solutions as load_training_solutions

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- trainer


def _validate(config: CriticGRPOConfig) -> None:
    if config.num_generations < 2:
        raise ValueError(
            f"num_generations must be >= 2 (GRPO compares a group), got {config.num_generations}"
        )
    accumulation(config, int(os.environ.get("WORLD_SIZE", "1")))  # whole groups per step
    if config.max_completion_length < 1:
        raise ValueError(f"max_completion_length must be >= 1, got {config.max_completion_length}")
    if config.format_penalty > 0:
        raise ValueError(
            f"format_penalty is a penalty: use a value <= 0, got {config.format_penalty}"
        )


def _use_bf16(config: CriticGRPOConfig, gpu: bool) -> bool:
    from deepcritic.launch import auto_bf16

    if config.precision != "auto":
        return config.precision == "bf16"
    return auto_bf16(gpu, config.deepspeed)


def accumulation(config: CriticGRPOConfig, world: int) -> int:
    """Gradient accumulation for ``world`` ranks: from ``effective_batch_size`` when it is set.

    TRL generates ``per_device x world x accumulation`` completions per optimizer step (one vLLM
    batch) and needs whole groups of ``num_generations`` in it.
    """
    per_step = config.per_device_train_batch_size * world
    if config.effective_batch_size is None:
        steps = config.gradient_accumulation_steps
    elif config.effective_batch_size % per_step:
        raise ValueError(
            f"effective_batch_size={config.effective_batch_size} is not a multiple of "
            f"per_device_train_batch_size x world size = {per_step}"
        )
    else:
        steps = config.effective_batch_size // per_step
    if (per_step * steps) % config.num_generations:
        raise ValueError(
            f"completions per step ({per_step * steps} = per_device_train_batch_size x world x "
            f"accumulation) must be a multiple of num_generations ({config.num_generations})"
        )
    return steps


def trainer_arguments(config: CriticGRPOConfig, world: int, gpu: bool) -> dict[str, Any]:
    """The keyword arguments of ``trl.GRPOConfig`` for this world size (pure: no torch, no TRL)."""
    from deepcritic.launch import deepspeed_config

    bf16 = _use_bf16(config, gpu)
    attn = _attention(config, gpu)
    init: dict[str, Any] = {
        # bf16 weights only under DeepSpeed, which keeps fp32 masters; else fp32 + bf16 autocast
        "dtype": "bfloat16" if bf16 and config.deepspeed else "float32",
        "use_safetensors": True,
        **({"attn_implementation": attn} if attn else {}),
    }
    vllm_len = (config.max_prompt_tokens or 0) + config.max_completion_length
    return {
        "output_dir": str(Path(config.out_dir) / "checkpoints"),
        "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "mask_truncated_completions": config.mask_truncated_completions,
        "temperature": config.temperature, "top_p": config.top_p, "beta": config.beta,
        "learning_rate": config.learning_rate, "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup, "loss_type": config.loss_type,
        "scale_rewards": config.scale_rewards, "epsilon": config.epsilon,
        "num_iterations": config.num_iterations,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": accumulation(config, world),
        "num_train_epochs": config.num_train_epochs, "max_steps": config.max_steps,
        "bf16": bf16, "fp16": False,
        "gradient_checkpointing": config.gradient_checkpointing,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
        "use_vllm": config.use_vllm, "vllm_mode": config.vllm_mode,
        "vllm_gpu_memory_utilization": config.vllm_gpu_memory_utilization,
        "vllm_tensor_parallel_size": config.vllm_tensor_parallel_size,
        "vllm_enable_sleep_mode": config.vllm_enable_sleep_mode,
        "vllm_max_model_length": vllm_len if config.max_prompt_tokens else None,
        "deepspeed": deepspeed_config(config.deepspeed),
        "use_cpu": not gpu and not config.deepspeed,  # DeepSpeed on CPU: launch.join_deepspeed
        "save_strategy": "steps", "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit, "logging_steps": config.logging_steps,
        "seed": config.seed, "report_to": "none", "trust_remote_code": config.trust_remote_code,
        "model_init_kwargs": init, "disable_tqdm": False,
    }  # fmt: skip


def _attention(config: CriticGRPOConfig, gpu: bool) -> str | None:
    """Flash attention only with a GPU and the ``flash_attn`` package (else SDPA / default)."""
    import importlib.util

    attn = config.attn_implementation
    if attn and attn.startswith("flash_attention"):
        if gpu and importlib.util.find_spec("flash_attn") is not None:
            return attn
        log.warning("flash attention unavailable here (GPU: %s): using SDPA", gpu)
        return "sdpa" if gpu else None
    return attn


def trl_config(config: CriticGRPOConfig, world: int | None = None) -> Any:
    """Our config -> ``trl.GRPOConfig`` (TRL's own reporting off; our callback logs to MLflow)."""
    import torch
    from trl import GRPOConfig

    from deepcritic.launch import join_deepspeed

    configured = join_deepspeed(bool(config.deepspeed))
    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    kwargs = trainer_arguments(config, world, torch.cuda.is_available())
    if configured:
        kwargs["accelerator_config"] = {"use_configured_state": True}
    return GRPOConfig(**kwargs)


class _TrackingCallback:
    """Forward TRL's logs to our MLflow run and keep the reward curve (built lazily: needs
    transformers' ``TrainerCallback`` base class)."""

    @staticmethod
    def make(tracker: tracking.Tracker, curve: list[float]) -> Any:
        from transformers import TrainerCallback

        class Callback(TrainerCallback):  # type: ignore[misc]
            def on_log(
                self,
                args: Any,
                state: Any,
                control: Any,
                logs: dict[str, Any] | None = None,
                **kw: Any,
            ) -> None:
                logs = logs or {}
                if "reward" in logs and isinstance(logs["reward"], (int, float)):
                    curve.append(float(logs["reward"]))
                clean = {
                    k: float(v)
                    for k, v in logs.items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                }
                tracker.log_metrics(clean, step=state.global_step)

        return Callback()


@contextlib.contextmanager
def _compact_logprobs(enabled: bool) -> Iterator[None]:
    """TRL 1.16's fused LM head scores *every* position (prompt included) on devices without
    Triton, to keep tile shapes fixed for compilers (Neuron). On CPU in eager mode there is nothing
    to recompile, and scoring only the completion tokens gives the same log-probs ~20x faster
    with 300-token critique prompts. Only the position-selection predicate of
    ``trl.trainer.utils`` is widened; the kernels keep their own device check."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    if enabled:
        trl_utils._use_triton = lambda device: original(device) or device.type == "cpu"
    try:
        yield
    finally:
        trl_utils._use_triton = original


def last_checkpoint(config: CriticGRPOConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(config.out_dir) / "checkpoints"
    if not config.resume or not folder.is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    return str(found) if found else None


def _tokenizer(config: CriticGRPOConfig, path: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        path, trust_remote_code=config.trust_remote_code, padding_side="left"
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise ValueError(
            f"model {config.model!r}: its tokenizer has no chat template (the critique prompt is chat)"
        )
    return tok


def run(config: CriticGRPOConfig) -> CriticGRPOResult:
    """Train with GRPO; return the final checkpoint folder and the reward curve."""
    _validate(config)
    from trl import GRPOTrainer

    rows, curated = training_solutions(config)
    path = resolve_model(config.model)
    tokenizer = _tokenizer(config, path)
    dataset, built = build_dataset(rows, tokenizer, config)
    counts = {**curated, **built}
    resume = last_checkpoint(config)
    curve: list[float] = []
    main = int(os.environ.get("RANK", "0")) == 0  # one MLflow run per stage, from rank 0
    uri = config.tracking_uri if main else "off"
    with tracking.stage_run("grpo", config, tracking_uri=uri) as tracker:
        tracker.log_metrics({f"data.{k}": v for k, v in counts.items()})
        tracker.log_params(curation_params(config))
        reward = make_first_error_reward(config.format_penalty, parser=config.reward_parser)
        trainer = GRPOTrainer(
            model=path,
            reward_funcs=[reward],  # type: ignore[list-item]
            args=trl_config(config),
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[_TrackingCallback.make(tracker, curve)],
        )
        tracker.log_params(_run_params(trainer))
        if resume:
            log.info("resuming GRPO from %s", resume)
        start = time.perf_counter()
        steps_before = _checkpoint_step(resume)
        with _compact_logprobs(config.compact_cpu_logprobs):
            trainer.train(resume_from_checkpoint=resume)
        seconds = time.perf_counter() - start
        final = save_final(trainer, tokenizer, config)
        steps = int(trainer.state.global_step)
        result = CriticGRPOResult(
            checkpoint=str(final),
            steps=steps,
            prompts=len(dataset),
            resumed_from=resume,
            seconds=seconds,
            seconds_per_step=seconds / max(1, steps - steps_before),
            reward_curve=curve,
            data_counts=counts,
        )
        tracker.log_metrics({"seconds_per_step": result.seconds_per_step, "train_seconds": seconds})
        tracker.log_dict({"reward_curve": curve}, "grpo/reward_curve.json")
        tracker.set_tags({"deepcritic.checkpoint": result.checkpoint})
    if trainer.accelerator.is_main_process:
        from deepcritic.launch import write_stage_result

        write_stage_result(result, config.out_dir)
    return result


def read_result(out_dir: str) -> CriticGRPOResult:
    """What the GRPO run in a TrainJob left on the run volume (``out_dir/result.json``)."""
    from deepcritic.launch import read_stage_result

    return read_stage_result(CriticGRPOResult, out_dir, "GRPO")


def _run_params(trainer: Any) -> dict[str, Any]:
    """How the run was really laid out (world size, ZeRO stage, completions per step)."""
    from deepcritic.launch import zero_stage

    args = trainer.args
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return {
        "world_size": args.world_size,
        "zero_stage": zero_stage(plugin.deepspeed_config if plugin else None),
        "completions_per_step": args.world_size
        * args.per_device_train_batch_size
        * args.gradient_accumulation_steps,
        "attn_implementation_used": str(trainer.model.config._attn_implementation),
    }


def _checkpoint_step(checkpoint: str | None) -> int:
    if not checkpoint:
        return 0
    try:
        return int(Path(checkpoint).name.rsplit("-", 1)[-1])
    except ValueError:
        return 0


def save_final(trainer: Any, tokenizer: Any, config: CriticGRPOConfig) -> Path:
    """A plain HF checkpoint (safetensors + tokenizer + chat template) in ``out_dir/final``."""
    final = Path(config.out_dir) / "final"
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(str(final))
        # Trainer also pickles its arguments there; a plain checkpoint holds no pickle
        (final / "training_args.bin").unlink(missing_ok=True)
    return final


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("grpo", help="GRPO reinforcement learning of the critic (TRL)")
    add_dataclass_arguments(p, CriticGRPOConfig)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = run(config_from_args(CriticGRPOConfig, args))
    print(json.dumps(vars(result), indent=1))
    return 0
