"""Every shipped YAML preset loads into its stage's typed config (no stale or misspelled keys)."""

from __future__ import annotations

import importlib
from importlib import resources
from pathlib import Path

import pytest
import yaml

from deepcritic.config import load_config

STAGE_CONFIGS = {
    "prepare": "deepcritic.stages.prepare:PrepareConfig",
    "seed": "deepcritic.stages.seed.config:SeedConfig",
    "sft": "deepcritic.stages.sft:CriticSFTConfig",
    "mc": "deepcritic.stages.mc:MCConfig",
    "grpo": "deepcritic.stages.grpo:CriticGRPOConfig",
    "evaluate": "deepcritic.stages.evaluate:EvalConfig",
    "serve": "deepcritic.serve.config:ServeConfig",
    "voting": "deepcritic.critic.voting:VotingConfig",
    "refine": "deepcritic.critic.refine:RefineConfig",
}
CONFIG_DIR = Path(str(resources.files("deepcritic") / "configs"))
PRESETS = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.name.startswith("pipeline."))


def _cls(stage: str) -> type:
    module, name = STAGE_CONFIGS[stage].split(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_loads(path: Path) -> None:
    stage = path.name.split(".")[0]
    assert stage in STAGE_CONFIGS, f"{path.name}: no config class registered for stage {stage!r}"
    load_config(_cls(stage), path)


def test_every_stage_has_the_three_presets() -> None:
    names = {p.name for p in PRESETS}
    for stage in STAGE_CONFIGS:
        for preset in ("paper", "local", "tiny"):
            assert f"{stage}.{preset}.yaml" in names


@pytest.mark.parametrize("profile", ["tiny", "local", "paper"])
def test_pipeline_profiles_are_mappings(profile: str) -> None:
    data = yaml.safe_load((CONFIG_DIR / f"pipeline.{profile}.yaml").read_text())
    assert isinstance(data, dict) and data["profile"] == profile
