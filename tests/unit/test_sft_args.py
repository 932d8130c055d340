"""Gradient checkpointing reaches TRL under the names the installed transformers knows."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from deepcritic.stages.sft_config import checkpointing_args


@dataclass
class Old:  # transformers 5.17 (the images' version)
    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict | None = None


@dataclass
class New(Old):  # transformers >= 5.18: new name, old one kept as an alias
    activation_checkpointing: bool = False
    activation_checkpointing_kwargs: dict | None = None


@dataclass
class Neither:
    x: int = 0


def test_names_follow_the_arguments_class() -> None:
    assert checkpointing_args(Old, True) == {
        "gradient_checkpointing": True,
        "gradient_checkpointing_kwargs": {"use_reentrant": False},
    }
    new = checkpointing_args(New, False)
    assert new["activation_checkpointing"] is False and new["gradient_checkpointing"] is False
    assert Old(**checkpointing_args(Old, True)).gradient_checkpointing


def test_installed_trl_accepts_them() -> None:
    trl = pytest.importorskip("trl")
    args = checkpointing_args(trl.SFTConfig, True)
    assert args["gradient_checkpointing"] is True


def test_unknown_class_is_an_error() -> None:
    with pytest.raises(TypeError, match="Neither has no gradient/activation checkpointing"):
        checkpointing_args(Neither, True)
