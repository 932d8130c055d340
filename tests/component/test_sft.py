"""SFT on seed-stage output: assistant-only loss mask, falling loss, loadable checkpoint, resume."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import mlflow
import pytest

from deepcritic import grader
from deepcritic.config import load_config
from deepcritic.models import load_causal_lm
from deepcritic.records import DataError, write_jsonl
from deepcritic.stages import seed
from deepcritic.stages.sft import CriticSFTConfig, build_trainer, load_examples, run
from support.scripted_backend import ScriptedBackend, SeedTeacher, toy_solution

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "deepcritic" / "configs"


@pytest.fixture(scope="module")
def seed_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SFT data produced by the real seed stage (scripted teacher, so it is fast and exact)."""
    root = tmp_path_factory.mktemp("seed")
    sols = [toy_solution(f"p{i}", label, 2) for i, label in enumerate((-1, 0, 1, -1))]
    write_jsonl(root / "in.jsonl", sols)
    cfg = seed.SeedConfig(
        data=str(root / "in.jsonl"), out_dir=str(root / "out"), tracking_uri="off"
    )
    result = seed.run(cfg, ScriptedBackend(SeedTeacher(sols)))
    assert result.kept == 4
    return Path(result.sft_path or "")


def tiny_config(tmp_path: Path, data: Path, model: str, **kw: object) -> CriticSFTConfig:
    cfg = load_config(
        CriticSFTConfig,
        CONFIGS / "sft.tiny.yaml",
        [f"data={data}", f"out_dir={tmp_path / 'sft'}", f"model={model}"],
    )
    return replace(cfg, **kw)  # type: ignore[arg-type]


def test_loss_mask_covers_only_the_assistant_turn(
    tmp_path: Path, seed_data: Path, tiny_model_path: str
) -> None:
    cfg = tiny_config(tmp_path, seed_data, tiny_model_path, tracking_uri="off")
    rows = load_examples(seed_data)
    trainer, tok = build_trainer(cfg, rows, [])
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    trained = labels[labels != -100].tolist()
    assistant = rows[0]["completion"][0]["content"]
    assert tok.decode(trained) == assistant + "<|im_end|>\n"  # the turn and its end, nothing else
    first = int((labels != -100).nonzero()[0])
    prompt_text = tok.decode(batch["input_ids"][0][:first].tolist())
    assert prompt_text.endswith("<|im_start|>assistant\n") and "[Problem]" in prompt_text
    assert grader.is_match(grader.predicted_label(tok.decode(trained)), 0 - 1)


def test_sft_loss_falls_and_checkpoint_loads(
    tmp_path: Path, seed_data: Path, tiny_model_path: str, local_mlflow: str
) -> None:
    # one example per step keeps it fast on a busy CPU (the vocabulary dominates the cost)
    cfg = tiny_config(
        tmp_path, seed_data, tiny_model_path, per_device_batch_size=1, effective_batch_size=1
    )
    result = run(cfg)
    assert result.global_step == cfg.max_steps == len(result.losses) == 8
    first, last = sum(result.losses[:2]) / 2, sum(result.losses[-2:]) / 2
    assert last < first - 1.0, result.losses
    final = Path(result.checkpoint)
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()
    assert not list(final.glob("*.bin"))
    model, tok = load_causal_lm(str(final), device="cpu")
    assert model.config.num_hidden_layers == 2 and tok.eos_token == "<|im_end|>"
    # MLflow: params (with the data hash), the loss curve, the checkpoint location
    run_info = mlflow.get_run(result.run_id)
    assert run_info.data.params["data_sha256"] == result.data_hash
    assert run_info.data.params["learning_rate"] == "0.01"
    assert run_info.data.tags["sft.checkpoint"] == str(final.resolve())
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "train.loss")
    assert len(history) == 8
    # resume: a longer run continues from the last checkpoint instead of starting over
    more = run(replace(cfg, max_steps=9, tracking_uri="off"))
    assert more.resumed_from is not None and more.resumed_from.endswith("checkpoint-8")
    assert more.global_step == 9 and len(more.losses) == 1


def test_bad_sft_rows_name_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "sft.jsonl"
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    bad = {"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"sft.jsonl:2: field 'messages'"):
        load_examples(path)
