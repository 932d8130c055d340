"""Every flag of every ``deepcritic`` subcommand has a help line (from the config dataclasses' field
comments) and every subcommand shows example command lines that parse."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from deepcritic.cli import EXAMPLES, build_parser, subcommands
from deepcritic.config import _field_help, field_comment
from deepcritic.critic.refine import RefineConfig
from deepcritic.critic.voting import VotingConfig
from deepcritic.generation import BackendConfig
from deepcritic.registry import OperatorConfig, PromoteConfig, RegisterConfig
from deepcritic.serve.config import BatchingConfig, LimitsConfig, ServeConfig
from deepcritic.stages.evaluate import EvalConfig
from deepcritic.stages.grpo import CriticGRPOConfig
from deepcritic.stages.mc import MCConfig
from deepcritic.stages.prepare import PrepareConfig
from deepcritic.stages.seed.config import SeedConfig, SubstepSampling
from deepcritic.stages.sft_config import CriticSFTConfig

PARSER = build_parser()
COMMANDS = subcommands(PARSER)


def test_every_subcommand_is_walked() -> None:
    assert {"eval", "sft", "grpo", "promote", "serve", "registry pin"} <= set(COMMANDS)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_has_help(name: str) -> None:
    missing = []
    for action in COMMANDS[name]._actions:
        flag = action.option_strings[0] if action.option_strings else action.dest
        if flag == "-h":
            continue
        if action.help == argparse.SUPPRESS and flag.count(".") > 1:  # nested deeper than one
            continue
        if not isinstance(action.help, str) or not action.help.strip():
            missing.append(flag)
    assert not missing, f"deepcritic {name}: flags without help: {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_examples_that_parse(name: str) -> None:
    sub = COMMANDS[name]
    assert sub.epilog and "deepcritic " in sub.epilog, f"deepcritic {name}: no example epilog"
    assert sub.formatter_class is argparse.RawDescriptionHelpFormatter
    for line in EXAMPLES[name]:
        argv = shlex.split(line)
        assert argv[0] == "deepcritic", line
        args = PARSER.parse_args(argv[1:])  # exits (SystemExit) on an unknown flag
        assert args.command == name.split()[0], line
    assert sub.format_help().rstrip().endswith(EXAMPLES[name][-1])


@pytest.mark.parametrize(
    "cls",
    [BackendConfig, ServeConfig, LimitsConfig, BatchingConfig, PromoteConfig, RegisterConfig,
     OperatorConfig, VotingConfig, RefineConfig, EvalConfig, PrepareConfig, SeedConfig,
     SubstepSampling, CriticSFTConfig, MCConfig, CriticGRPOConfig],
)  # fmt: skip
def test_config_fields_have_comments(cls: type) -> None:
    fields = dataclasses.fields(cls)
    leaf = [f.name for f in fields if not dataclasses.is_dataclass(f.default_factory)]
    missing = [n for n in leaf if not field_comment(cls, n)]
    assert not missing, f"{cls.__name__}: fields without a comment: {missing}"


def test_help_comes_from_the_comment_and_shows_the_default() -> None:
    text = _field_help(PromoteConfig, "lock_ttl_s")
    assert text == "a crashed promoter blocks others at most this long (default: 120.0)"
    assert "%%" in _field_help(PromoteConfig, "parse_rate_metric")  # argparse-escaped '%'
    assert _field_help(ServeConfig, "limits.max_stop_strings").startswith("OpenAI's own limit")


def test_comment_lines_above_a_field_are_its_help() -> None:
    assert field_comment(LimitsConfig, "max_stop_chars").startswith("Characters per stop string.")
    assert field_comment(LimitsConfig, "max_request_tokens").startswith("The cost of one request")
