"""Stage 2: supervised fine-tuning of the critic on the seed critiques (TRL ``SFTTrainer``).

Data: ``sft.jsonl`` from the seed stage, one chat per line (system, user = critique prompt,
assistant = deliberate critique). Each chat becomes a *conversational prompt-completion* example
(prompt = system + user, completion = the assistant turn), so TRL 1.16 computes the loss on the
assistant turn only (``completion_only_loss``) with the model's own chat template; this works for
any template, with or without ``{% generation %}`` markers. ``prompt_set`` (deepcritic | reference):
a stored prompt is used as written and must be of the configured set; a row without one (``problem``,
``steps``, ``completion``) gets that set's prompt (:func:`deepcritic.reference.critic_prompt`).

GPU: bf16 compute with fp32 master weights (DeepSpeed keeps them under ZeRO; without DeepSpeed the
weights load in fp32 and run under bf16 autocast), gradient checkpointing, flash attention with
padding-free batches when the image has ``flash_attn`` (else SDPA, padded, with a warning).
``deepspeed: zero3`` puts ZeRO-3 in the trainer arguments themselves, so it holds under every
launcher (accelerate, torchrun, one in-process rank; see :mod:`deepcritic.launch`). CPU: bf16
autocast where it is native (AMX, ``precision: auto``), else fp32.
The effective batch (``effective_batch_size``, paper: 64) is the same for every world size: the
micro-batch and gradient accumulation are derived from it (:func:`batch_plan`).
Resumes from the last checkpoint in ``out_dir/checkpoints``; saves a plain HF checkpoint
(safetensors + tokenizer) in ``out_dir/final``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepcritic import tracking
from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.models import resolve_model
from deepcritic.records import DataError, iter_jsonl
from deepcritic.stages.sft_config import (
    SFT_DATA_FILE,
    CriticSFTConfig,
    CriticSFTResult,
    attention,
    is_main_process,
    trl_args,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

log = logging.getLogger(__name__)


def data_file(path: str) -> Path:
    p = Path(path)
    return p / SFT_DATA_FILE if p.is_dir() else p


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_examples(path: Path, prompt_set: str = "deepcritic") -> list[dict[str, Any]]:
    """Seed rows -> conversational prompt/completion rows; a bad row names its line and field.

    A row with ``messages`` (system, user, ..., assistant) keeps its stored prompt; its prompt set
    (the row's ``prompt_set``, else read from the system message by
    :func:`deepcritic.reference.prompt_set_of`) must be ``prompt_set``. A row without messages
    gives ``problem``, ``steps`` and ``completion`` (the assistant text) and gets the prompt of
    ``prompt_set`` (:func:`deepcritic.reference.critic_prompt`)."""
    rows: list[dict[str, Any]] = []
    for n, row in iter_jsonl(path):
        if not isinstance(row, dict):
            raise DataError(str(path), n, None, "must be a JSON object")
        if "messages" in row:
            prompt, completion = _stored_chat(row, str(path), n, prompt_set)
        else:
            prompt, completion = _built_chat(row, str(path), n, prompt_set)
        rows.append(
            {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}
        )
    if not rows:
        raise DataError(str(path), None, None, "no training examples")
    return rows


def _row_prompt_set(row: dict[str, Any], path: str, n: int, stored: Any) -> str | None:
    from deepcritic.reference import PROMPT_SETS, prompt_set_of

    declared = row.get("prompt_set")
    if declared is None:
        return prompt_set_of(stored) if stored is not None else None
    if declared not in PROMPT_SETS:
        raise DataError(path, n, "prompt_set", f"must be one of {PROMPT_SETS}, got {declared!r}")
    return str(declared)


def _stored_chat(
    row: dict[str, Any], path: str, n: int, prompt_set: str
) -> tuple[list[dict[str, str]], str]:
    messages = row["messages"]
    if not isinstance(messages, list) or len(messages) < 2:
        raise DataError(path, n, "messages", "must be a list of at least 2 messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DataError(path, n, f"messages[{i}]", "needs a string 'content'")
        if m.get("role") not in ("system", "user", "assistant"):
            raise DataError(path, n, f"messages[{i}].role", f"bad role {m.get('role')!r}")
    if messages[-1]["role"] != "assistant":
        raise DataError(path, n, "messages", "the last message must be the assistant's")
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    found = _row_prompt_set(row, path, n, prompt)
    if found is not None and found != prompt_set:
        raise DataError(
            path, n, "prompt_set",
            f"the row's stored prompt is of prompt set {found!r} but the config's prompt_set is "
            f"{prompt_set!r} (train on seed data written with the same prompt set)",
        )  # fmt: skip
    return prompt, str(messages[-1]["content"])


def _built_chat(
    row: dict[str, Any], path: str, n: int, prompt_set: str
) -> tuple[list[dict[str, str]], str]:
    from deepcritic.reference import critic_prompt

    problem, steps, completion = row.get("problem"), row.get("steps"), row.get("completion")
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(path, n, "problem", "a row without messages needs a non-empty string")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise DataError(path, n, "steps", "a row without messages needs a list of strings")
    if not isinstance(completion, str) or not completion.strip():
        raise DataError(path, n, "completion", "a row without messages needs the assistant text")
    found = _row_prompt_set(row, path, n, None)
    if found is not None and found != prompt_set:
        raise DataError(
            path, n, "prompt_set",
            f"the row is marked {found!r} but the config's prompt_set is {prompt_set!r}",
        )  # fmt: skip
    return list(critic_prompt(problem, steps, prompt_set)), completion


def load_model_and_tokenizer(config: CriticSFTConfig, bf16: bool) -> tuple[Any, Any]:
    """Weights in bf16 only under DeepSpeed (which keeps fp32 masters); else fp32 (+ autocast)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(config.model)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kwargs: dict[str, Any] = {}
    attn, _, _ = attention(config, torch.cuda.is_available())
    if attn:
        kwargs["attn_implementation"] = attn
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=torch.bfloat16 if bf16 and config.deepspeed else torch.float32,
        use_safetensors=True,
        trust_remote_code=config.trust_remote_code,
        **kwargs,
    )
    return model, tok


def tracking_callback(tracker: tracking.Tracker, losses: list[float]) -> TrainerCallback:
    """Loss / learning-rate / grad-norm curves into the stage's MLflow run."""
    from transformers import TrainerCallback

    class _Track(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                losses.append(float(logs["loss"]))
            keep = ("loss", "learning_rate", "grad_norm", "mean_token_accuracy", "num_tokens")
            metrics = {f"train.{k}": float(v) for k, v in logs.items() if k in keep}
            if metrics and state.is_world_process_zero:
                tracker.log_metrics(metrics, step=state.global_step)

    return _Track()


def build_trainer(
    config: CriticSFTConfig, rows: list[dict[str, Any]], callbacks: list[Any]
) -> tuple[Any, Any]:
    """(trainer, tokenizer) ready to train."""
    from datasets import Dataset
    from trl import SFTTrainer

    args = trl_args(config)
    model, tok = load_model_and_tokenizer(config, bool(args.bf16))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tok,
        callbacks=callbacks,
    )
    return trainer, tok


def last_checkpoint(config: CriticSFTConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(config.out_dir) / "checkpoints"
    if not config.resume or not folder.is_dir():
        return None
    found = get_last_checkpoint(str(folder))
    return str(found) if found else None


def run(config: CriticSFTConfig) -> CriticSFTResult:
    """Train, save ``out_dir/final`` (safetensors + tokenizer), log to MLflow; main process logs."""
    path = data_file(config.data)
    if not path.is_file():
        raise FileNotFoundError(f"data: {path} does not exist")
    rows = load_examples(path, config.prompt_set)
    digest = file_sha256(path)
    uri = config.tracking_uri if is_main_process() else "off"
    losses: list[float] = []
    with tracking.stage_run("sft", config, tracking_uri=uri) as t:
        trainer, tok = build_trainer(config, rows, [tracking_callback(t, losses)])
        resume = last_checkpoint(config)
        if resume:
            log.info("resuming from %s", resume)
        t.log_params(_extra_params(trainer, digest, len(rows), resume))
        output = trainer.train(resume_from_checkpoint=resume)
        final = Path(config.out_dir) / "final"
        trainer.save_model(str(final))
        if trainer.is_world_process_zero():
            tok.save_pretrained(str(final))
            (final / "training_args.bin").unlink(missing_ok=True)  # a pickle: not in a plain ckpt
        _log_summary(t, trainer, final, config.model, float(output.training_loss))
    result = CriticSFTResult(
        checkpoint=str(final),
        train_loss=float(output.training_loss),
        global_step=int(trainer.state.global_step),
        examples=len(rows),
        data_hash=digest,
        losses=losses,
        resumed_from=resume,
        run_id=t.run_id,
    )
    if trainer.is_world_process_zero():
        from deepcritic.launch import write_stage_result

        write_stage_result(result, config.out_dir)
    return result


def read_result(out_dir: str) -> CriticSFTResult:
    """What the SFT run in a TrainJob left on the run volume (``out_dir/result.json``)."""
    from deepcritic.launch import read_stage_result

    return read_stage_result(CriticSFTResult, out_dir, "SFT")


def _extra_params(trainer: Any, digest: str, examples: int, resume: str | None) -> dict[str, Any]:
    from deepcritic.launch import zero_stage

    args = trainer.args
    ds_plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return {
        "data_sha256": digest,
        "data_examples": examples,
        "world_size": args.world_size,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "effective_batch": args.world_size
        * args.per_device_train_batch_size
        * args.gradient_accumulation_steps,
        "zero_stage": zero_stage(ds_plugin.deepspeed_config if ds_plugin else None),
        "attn_implementation_used": str(trainer.model.config._attn_implementation),
        "padding_free_used": args.padding_free,
        "bf16": args.bf16,
        "resumed_from": resume or "",
        "model_parameters": sum(
            getattr(p, "ds_numel", p.numel()) for p in trainer.model.parameters()
        ),
    }


def _log_summary(
    t: tracking.Tracker, trainer: Any, final: Path, base_model: str, train_loss: float
) -> None:
    t.log_metrics({"train.final_loss": train_loss, "train.global_step": trainer.state.global_step})
    t.set_tags(
        {
            "sft.checkpoint": str(final.resolve()),
            "sft.checkpoints_dir": trainer.args.output_dir,
            "sft.base_model": base_model,
        }
    )
    if t.enabled and trainer.state.log_history:
        t.log_figure(_curves_figure(trainer.state.log_history), "sft_curves.png")
        t.log_dict(trainer.state.log_history, "sft_log_history.json")
    log.info(
        "SFT done: loss %.4f, %d steps, checkpoint %s", train_loss, trainer.state.global_step, final
    )


def _curves_figure(history: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "loss" in h]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot([h["step"] for h in rows], [h["loss"] for h in rows])
    ax1.set(title="training loss", xlabel="step")
    ax2.plot([h["step"] for h in rows], [h.get("learning_rate", 0.0) for h in rows])
    ax2.set(title="learning rate", xlabel="step")
    fig.tight_layout()
    plt.close(fig)
    return fig


def register_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "sft",
        help="stage 2: supervised fine-tuning of the critic on the seed critiques (TRL)",
        description="Example: deepcritic sft --config src/deepcritic/configs/sft.local.yaml "
        "--data outputs/seed/sft.jsonl. On a GPU node, --launcher accelerate (or auto with "
        ">1 GPU) re-runs this command under accelerate launch with DeepSpeed ZeRO-3.",
    )
    add_dataclass_arguments(parser, CriticSFTConfig)
    parser.add_argument(
        "--launcher",
        choices=("auto", "inprocess", "accelerate"),
        default="inprocess",
        help="inprocess (default), accelerate (accelerate launch, ZeRO-3), auto (accelerate "
        "when more than one GPU or node is visible)",
    )
    parser.add_argument(
        "--accelerate-config", default=None, help="accelerate YAML (ZeRO-3 default)"
    )
    parser.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from deepcritic import launch

    config = config_from_args(CriticSFTConfig, args)
    if launch.should_launch(args.launcher):
        return launch.relaunch("sft", args.accelerate_config)
    result = run(config)
    print(
        json.dumps(
            {
                "checkpoint": result.checkpoint,
                "train_loss": result.train_loss,
                "global_step": result.global_step,
                "data_sha256": result.data_hash,
            }
        )
    )
    return 0
