"""The Monte Carlo branch end to end on the tiny model, with the tiny presets the pipeline uses:
problems -> MC first-error labels -> GRPO data (and one GRPO step on it)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from deepcritic.config import load_config
from deepcritic.grader import label_to_step, render_answer
from deepcritic.rewards import first_error_reward
from deepcritic.stages.grpo import CriticGRPOConfig, build_dataset, load_training_solutions
from deepcritic.stages.grpo import run as grpo_run
from deepcritic.stages.mc import MCConfig
from deepcritic.stages.mc import run as mc_run

CONFIGS = Path(str(resources.files("deepcritic") / "configs"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/component/conftest.py


def test_problems_to_mc_labels_to_grpo(tiny_model_path: str, tmp_path: Path) -> None:
    mc_cfg = load_config(
        MCConfig,
        CONFIGS / "mc.tiny.yaml",
        [f"generation.model={tiny_model_path}", f"out_dir={tmp_path / 'mc'}", "tracking_uri=off"],
    )
    mc = mc_run(mc_cfg)
    c = mc.counts
    assert mc.problems == 3 and c["reference:added"] == 3 and c["problems_kept"] == 3
    assert mc.written > 0 and c["dropped:correct_over_cap"] == 0

    # GRPO reads the MC folder the way the pipeline hands it over (data_source=mc)
    grpo_cfg = load_config(
        CriticGRPOConfig,
        CONFIGS / "grpo.tiny.yaml",
        [
            f"model={tiny_model_path}",
            "data_source=mc",
            f"mc_path={tmp_path / 'mc'}",
            f"out_dir={tmp_path / 'grpo'}",
            "limit=null",
            "max_steps=1",
            "tracking_uri=off",
        ],
    )
    rows, report = load_training_solutions(grpo_cfg)
    assert len(rows) == mc.written == report.kept
    assert all("mc_estimates" in r.meta and r.meta["problem_id"] for r in rows)
    assert any(r.label != -1 for r in rows)  # random samples: wrong from their first step

    from transformers import AutoTokenizer

    dataset, counts = build_dataset(rows, AutoTokenizer.from_pretrained(tiny_model_path), grpo_cfg)
    assert counts["kept"] == len(rows) == len(dataset)
    assert dataset["label"] == [r.label for r in rows]
    right = [render_answer(label_to_step(r.label)) for r in rows]
    assert first_error_reward(right, dataset["label"]) == [1.0] * len(rows)

    result = grpo_run(grpo_cfg)
    assert result.steps == 1 and (Path(result.checkpoint) / "config.json").is_file()
