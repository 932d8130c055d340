"""Typed configs: defaults < YAML < CLI, clear errors naming the key."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from deepcritic.config import (
    ConfigError,
    add_dataclass_arguments,
    config_from_args,
    flatten,
    load_config,
    save_config,
    to_dict,
)


@dataclass
class Inner:
    kind: Literal["hf", "vllm"] = "hf"
    rate: float = 1e-5
    name: str | None = None


@dataclass
class Outer:
    items: list[str] = field(default_factory=lambda: ["a"])
    steps: int = 3
    flag: bool = False
    inner: Inner = field(default_factory=Inner)

    CLI_ALIASES: ClassVar[dict[str, str]] = {"backend": "inner.kind"}


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("steps: 5\ninner:\n  rate: 2.0e-5\n  name: x\n")
    cfg = load_config(Outer, y, ["inner.kind=vllm", "items=p:q,r", "flag=true", "inner.rate=1e-4"])
    assert cfg == Outer(items=["p:q", "r"], steps=5, flag=True, inner=Inner("vllm", 1e-4, "x"))


def test_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"inner\.nope"):
        load_config(Outer, None, ["inner.nope=1"])
    with pytest.raises(ConfigError, match="steps"):
        load_config(Outer, None, ["steps=abc"])
    with pytest.raises(ConfigError, match=r"inner\.kind"):
        load_config(Outer, None, ["inner.kind=tpu"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Outer, None, ["steps"])


def test_roundtrip_yaml(tmp_path: Path) -> None:
    cfg = Outer(steps=7, inner=Inner(name="n"))
    save_config(cfg, tmp_path / "s.yaml")
    assert load_config(Outer, tmp_path / "s.yaml") == cfg
    assert flatten(to_dict(cfg))["inner.name"] == "n"


def test_cli_flags_and_aliases(tmp_path: Path) -> None:
    y = tmp_path / "c.yaml"
    y.write_text("steps: 9\n")
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Outer)
    args = parser.parse_args(
        ["--config", str(y), "--backend", "vllm", "--inner.name", "none", "--flag", "yes"]
    )
    cfg = config_from_args(Outer, args)
    assert cfg.steps == 9 and cfg.inner.kind == "vllm" and cfg.inner.name is None and cfg.flag
