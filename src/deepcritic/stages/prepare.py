"""Stage "prepare data": any supported source -> canonical step-labelled JSONL (+ optional eval split).

``deepcritic prepare --source champ --out data/champ.jsonl --eval-fraction 0.1`` loads the source
with :func:`deepcritic.data.loaders.load_solutions`, optionally holds out a fraction of the
*problems* (all solutions of one problem go to the same side, so no problem leaks across the split;
the assignment is a seeded shuffle of the distinct problem texts in first-seen order), writes
``out`` (and ``<out stem>.eval.jsonl``) and logs the counts to MLflow.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from deepcritic import tracking
from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.data.loaders import load_solutions
from deepcritic.records import Solution, write_jsonl


@dataclass
class PrepareConfig:
    """Settings of ``deepcritic prepare``."""

    source: str = "champ"  # a load_solutions spec: champ, processbench:gsm8k, prm800k:/x.jsonl, ...
    out: str = "data/prepared.jsonl"  # training rows (JSONL); the held-out split beside it
    limit: int | None = None  # first N valid records in source order (None = all)
    skip_invalid: bool = False  # skip (and count) malformed rows instead of failing
    seed: int = 0  # seed of the train / held-out split
    eval_fraction: float = 0.0  # share of problems held out to <out stem>.eval.jsonl (0 = none)
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables


@dataclass
class PrepareResult:
    """What ``prepare`` wrote, and the counts of the load."""

    out: str
    eval_out: str | None
    read: int
    kept: int
    skipped: int
    n_train: int
    n_eval: int
    n_error: int
    n_correct: int
    reasons: dict[str, int] = field(default_factory=dict)


def eval_path(out: str | Path) -> Path:
    """``data/x.jsonl`` -> ``data/x.eval.jsonl``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.eval{out.suffix or '.jsonl'}")


def split_by_problem(
    solutions: list[Solution], eval_fraction: float, seed: int
) -> tuple[list[Solution], list[Solution]]:
    """Hold out ``round(eval_fraction * n_problems)`` problems; order within each side is kept."""
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    problems = list(dict.fromkeys(s.problem for s in solutions))
    random.Random(seed).shuffle(problems)
    held = set(problems[: round(eval_fraction * len(problems))])
    train = [s for s in solutions if s.problem not in held]
    return train, [s for s in solutions if s.problem in held]


def _metric_name(reason: str) -> str:
    """MLflow metric names allow letters, digits, ``_-. /`` only."""
    return re.sub(r"[^\w\-. /]", "_", reason)


def run(config: PrepareConfig) -> PrepareResult:
    """Load ``config.source``, split, write canonical JSONL, log counts."""
    with tracking.stage_run("prepare", config, tracking_uri=config.tracking_uri) as tracker:
        solutions, report = load_solutions(
            config.source, limit=config.limit, skip_invalid=config.skip_invalid
        )
        if not solutions:
            raise ValueError(f"{config.source}: no records kept ({report.skipped} skipped)")
        train, held = split_by_problem(solutions, config.eval_fraction, config.seed)
        write_jsonl(config.out, train)
        eval_out = str(eval_path(config.out)) if held else None
        if eval_out:
            write_jsonl(eval_out, held)
        result = PrepareResult(
            out=config.out,
            eval_out=eval_out,
            read=report.read,
            kept=report.kept,
            skipped=report.skipped,
            n_train=len(train),
            n_eval=len(held),
            n_error=sum(s.has_error for s in solutions),
            n_correct=sum(not s.has_error for s in solutions),
            reasons=dict(report.reasons),
        )
        counts = {k: v for k, v in asdict(result).items() if isinstance(v, int)}
        skips = {f"skipped.{_metric_name(k)}": v for k, v in report.reasons.items()}
        tracker.log_metrics(counts | skips)
        tracker.log_dict(asdict(result), "prepare_result.json")
    return result


def _main(args: argparse.Namespace) -> int:
    result = run(config_from_args(PrepareConfig, args))
    print(json.dumps(asdict(result), indent=1))
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``deepcritic prepare``."""
    parser = subparsers.add_parser(
        "prepare",
        help="convert a dataset (ProcessBench, MR-GSM8K, PRM800K, CHAMP, JSONL) to canonical JSONL",
    )
    add_dataclass_arguments(parser, PrepareConfig)
    parser.set_defaults(func=_main)
