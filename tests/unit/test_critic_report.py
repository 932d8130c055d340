"""deepcritic.critic.report: the subcommand verify-vote and refine share, and their plot."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from deepcritic.critic.report import accuracy_plot, add_report_command


@dataclass
class _Config:
    out: str = "x"  # where the report goes


@dataclass
class _Result:
    table_path: str
    plot_path: str
    run_id: str | None = None


def test_report_command_prints_table_outputs_and_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "table.md"
    table.write_text("| k |\n", encoding="utf-8")
    seen: list[_Config] = []

    def run(config: _Config) -> _Result:
        seen.append(config)
        return _Result(str(table), "p.png", run_id="r1")

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_report_command(sub, "demo", "a demo", "First paragraph.\n\nMore.", _Config, run,
                       lambda r: f"plot: {r.plot_path}")  # fmt: skip
    args = parser.parse_args(["demo", "--out", str(tmp_path)])
    assert sub.choices["demo"].description == "First paragraph."
    assert args.func(args) == 0
    assert seen == [_Config(out=str(tmp_path))]
    # stripped: an earlier test in the process (kfp.local) may leave stdout indenting each line
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert lines == ["| k |", "plot: p.png", "MLflow run: r1"]


def test_accuracy_plot_writes_a_png_and_closes_on_error(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())  # other tests in this process may have figures open
    path = tmp_path / "a.png"
    with accuracy_plot(path, xlabel="k", title="t", fontsize=7) as ax:
        ax.plot([1, 2], [50, 60], label="x")
    assert path.read_bytes()[:4] == b"\x89PNG" and ax.get_ylabel() == "accuracy (%)"
    with pytest.raises(RuntimeError), accuracy_plot(tmp_path / "b.png", xlabel="k", title="t",
                                                    fontsize=7):  # fmt: skip
        raise RuntimeError("boom")
    assert not (tmp_path / "b.png").exists() and set(plt.get_fignums()) == before
