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


# ---------------------------------------------------------------- --preset on the command line


def _eval_config(argv: list[str]) -> object:
    from deepcritic.cli import build_parser
    from deepcritic.config import config_from_args
    from deepcritic.stages.evaluate import EvalConfig

    return config_from_args(EvalConfig, build_parser().parse_args(["eval", *argv]))


def test_every_stage_subcommand_has_a_preset_flag() -> None:
    from deepcritic.cli import PRESET_STAGES, build_parser, subcommands
    from deepcritic.config import available_presets

    commands = subcommands(build_parser())
    for name, stage in PRESET_STAGES.items():
        assert stage in STAGE_CONFIGS and {"tiny", "local", "paper"} <= set(
            available_presets(stage)
        )
        flags = {f for a in commands[name]._actions for f in a.option_strings}
        assert "--preset" in flags, name
    # commands without presets get no --preset
    assert "--preset" not in {f for a in commands["promote"]._actions for f in a.option_strings}


def test_preset_below_config_file_below_flags(tmp_path: Path) -> None:
    own = tmp_path / "own.yaml"
    own.write_text("max_tokens: 100\ngeneration: {model: my/critic}\nseed: 1\n")
    cfg = _eval_config(["--preset", "paper-reference", "--config", str(own), "--seed", "7"])
    assert (cfg.parser, cfg.prompt_set, cfg.temperature) == ("official", "reference", 0.6)  # type: ignore[attr-defined]
    assert cfg.max_tokens == 100 and cfg.seed == 7  # type: ignore[attr-defined]
    # mappings merge key by key: the preset's engine, the file's model
    assert (cfg.generation.kind, cfg.generation.model) == ("vllm", "my/critic")  # type: ignore[attr-defined]
    assert cfg.generation.gpu_memory_utilization == 0.95  # type: ignore[attr-defined]
    plain = _eval_config([])
    assert plain.parser == "strict" and plain.paper_results is None  # type: ignore[attr-defined]


def test_an_unknown_preset_lists_the_stage_presets(capsys: pytest.CaptureFixture[str]) -> None:
    from deepcritic.cli import main
    from deepcritic.config import ConfigError

    with pytest.raises(ConfigError, match=r"evaluate presets: local, paper, paper-reference, tiny"):
        _eval_config(["--preset", "paper-referense"])
    assert main(["eval", "--preset", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no configs/evaluate.nope.yaml" in err and "paper-reference" in err


def test_components_name_a_preset_explicitly() -> None:
    from deepcritic.config import ConfigError
    from deepcritic.runtime import stage_config
    from deepcritic.stages.evaluate import EvalConfig

    cfg = stage_config(EvalConfig, "evaluate", "paper-reference", ["parser=strict"], required=True)
    assert cfg.prompt_set == "reference" and cfg.parser == "strict"
    with pytest.raises(ConfigError, match="evaluate presets: "):
        stage_config(EvalConfig, "evaluate", "nope", [], required=True)
    assert (
        stage_config(EvalConfig, "evaluate", "nope", []).parser == "strict"
    )  # a profile: defaults
