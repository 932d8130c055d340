"""What ``deepcritic verify-vote`` and ``deepcritic refine`` share: the accuracy plot and
the subcommand (config from flags, run, print the table, the output paths and the MLflow run)."""

from __future__ import annotations

import argparse
import contextlib
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from deepcritic.config import add_dataclass_arguments, config_from_args

C = TypeVar("C")


class Report(Protocol):
    """A run's result as the subcommand prints it."""

    @property
    def table_path(self) -> str: ...
    @property
    def run_id(self) -> str | None: ...


@contextlib.contextmanager
def accuracy_plot(path: Path, *, xlabel: str, title: str, fontsize: int) -> Iterator[Any]:
    """A 5x3.5 in. figure's axes to draw on; on leaving, the accuracy axis, title and legend are
    set and the figure is written to ``path`` (PNG, 120 dpi)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    try:
        yield ax
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.legend(fontsize=fontsize)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def add_report_command(
    subparsers: Any,
    name: str,
    help: str,
    doc: str | None,
    config_cls: type[C],
    run: Callable[[C], Report],
    outputs: Callable[[Any], str],
) -> None:
    """Add ``deepcritic <name>``: flags from ``config_cls`` (description: ``doc``'s first
    paragraph); it prints the table, ``outputs(result)`` and the MLflow run."""
    parser = subparsers.add_parser(
        name, help=help, description=doc.split("\n\n")[0] if doc else None
    )
    add_dataclass_arguments(parser, config_cls)
    parser.set_defaults(func=functools.partial(_main, config_cls, run, outputs))


def _main(
    config_cls: type[C],
    run: Callable[[C], Report],
    outputs: Callable[[Any], str],
    args: argparse.Namespace,
) -> int:
    result = run(config_from_args(config_cls, args))
    print(Path(result.table_path).read_text(encoding="utf-8"), end="")
    print(outputs(result))
    if result.run_id:
        print(f"MLflow run: {result.run_id}")
    return 0
