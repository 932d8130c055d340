"""The `deepcritic` entry point lists every stage's subcommand."""

from __future__ import annotations

import pytest

from deepcritic.cli import build_parser, main


def test_help_lists_core_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("eval", "score"):
        assert cmd in out


def test_unknown_flag_fails() -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["eval", "--no-such-flag", "1"])
    assert e.value.code == 2
