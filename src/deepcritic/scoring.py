"""ProcessBench-exact scoring, majority voting, and the ``deepcritic score`` command.

Per benchmark (the official ProcessBench formula):

* ``acc_error``: % of erroneous items (label != -1) whose prediction equals the label;
* ``acc_correct``: % of correct items (label == -1) predicted -1;
* ``f1``: their harmonic mean, 0 when either is 0 (the official script yields NaN for 0/0);
  an accuracy over an empty group is 0.

Unparsable (None) and missing predictions count as wrong. Averages are arithmetic means over
benchmarks. All numbers are percentages, unrounded.

Majority vote: unparsable samples are dropped; with ``require_marker`` a sample is read by the
grader's strict mode, so samples without an ``**Answer**:`` marker (and truncated ones whose box
after the marker closes a per-step verdict) are dropped too, as the DeepCritic reference does for
critics trained to write the marker. The label with the most votes wins; a tie goes to the label
that appeared first among the samples (what ``collections.Counter.most_common`` does in the
official voting script). A single output (``output``) with ``require_marker`` is read the same way.

``parser: official`` (``deepcritic score --parser official``) reads ``output``/``outputs`` as the
authors' ``eval.py`` does instead (:func:`deepcritic.grader.official_step` and
:func:`~deepcritic.grader.official_vote_step`; ``require_marker`` is then the script's rule for
DeepCritic models: keep samples containing ``**Answer**:``). Rows carrying a ready ``prediction``
are read the same under both parsers. Rows of the authors' ``eval.py`` result files
(``generated_critique``, a text or the kept votes) are read from that field, never from their
1-based ``prediction``; ``--predictions`` takes several files (``<task>_error.jsonl
<task>_correct.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deepcritic.grader import (
    PARSERS,
    is_match,
    judge,
    official_step,
    official_vote_step,
    step_to_label,
)
from deepcritic.records import DataError, Solution, iter_jsonl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchmarkMetrics:
    n: int
    n_error: int
    n_correct: int
    acc_error: float
    acc_correct: float
    f1: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def harmonic_f1(acc_error: float, acc_correct: float) -> float:
    if acc_error <= 0 or acc_correct <= 0:
        return 0.0
    return 2 * acc_error * acc_correct / (acc_error + acc_correct)


def compute_metrics(labels: Sequence[int], predictions: Sequence[int | None]) -> BenchmarkMetrics:
    """Score 0-based predictions (None = unparsable/missing) against 0-based labels."""
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    err = [is_match(p, y) for y, p in zip(labels, predictions, strict=True) if y != -1]
    cor = [is_match(p, y) for y, p in zip(labels, predictions, strict=True) if y == -1]
    acc_error = 100.0 * sum(err) / len(err) if err else 0.0
    acc_correct = 100.0 * sum(cor) / len(cor) if cor else 0.0
    return BenchmarkMetrics(
        n=len(labels),
        n_error=len(err),
        n_correct=len(cor),
        acc_error=acc_error,
        acc_correct=acc_correct,
        f1=harmonic_f1(acc_error, acc_correct),
    )


def average(metrics: Mapping[str, BenchmarkMetrics]) -> dict[str, float]:
    """Arithmetic means over benchmarks of acc_error, acc_correct and f1."""
    if not metrics:
        return {"avg_acc_error": 0.0, "avg_acc_correct": 0.0, "avg_f1": 0.0}
    vals = list(metrics.values())
    return {
        "avg_acc_error": sum(m.acc_error for m in vals) / len(vals),
        "avg_acc_correct": sum(m.acc_correct for m in vals) / len(vals),
        "avg_f1": sum(m.f1 for m in vals) / len(vals),
    }


def majority_vote(labels: Iterable[int | None]) -> int | None:
    """Most frequent non-None label; ties go to the label seen first. None if no usable vote."""
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return None
    return counts.most_common(1)[0][0]


def usable_label(text: str, *, require_marker: bool = False) -> int | None:
    """One output's 0-based label for voting (None when it must be dropped):
    ``require_marker`` reads it with the grader's strict mode, else the official one."""
    return judge(text, strict=require_marker)


def vote_outputs(outputs: Sequence[str], *, require_marker: bool = False) -> int | None:
    """Read raw critic outputs with the one grader and take the majority vote."""
    return majority_vote(usable_label(o, require_marker=require_marker) for o in outputs)


def check_parser(parser: str, where: str = "parser") -> str:
    if parser not in PARSERS:
        raise ValueError(f"{where}: must be one of {PARSERS}, got {parser!r}")
    return parser


def read_output(text: str, *, parser: str = "strict", require_marker: bool = False) -> int | None:
    """One critique's 0-based prediction under ``parser`` (official: eval.py's single branch)."""
    if check_parser(parser) == "official":
        return step_to_label(official_step(text))
    return usable_label(text, require_marker=require_marker)


def read_outputs(
    outputs: Sequence[str], *, parser: str = "strict", require_marker: bool = False
) -> int | None:
    """k critiques' voted 0-based prediction under ``parser`` (official: eval.py's Maj@k)."""
    if check_parser(parser) == "official":
        return step_to_label(official_vote_step(list(outputs), require_marker=require_marker))
    return vote_outputs(outputs, require_marker=require_marker)


# --- predictions files -------------------------------------------------------------------


def _prediction_value(row: dict[str, Any], source: str, line: int) -> int | None:
    value = row["prediction"]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(
            source, line, "prediction", f"must be an integer or null, got {value!r:.60}"
        )
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise DataError(source, line, "prediction", f"must be an integer or null, got {value!r}")
    return int(value)


def _row_prediction(
    row: Any, source: str, line: int, require_marker: bool, parser: str
) -> int | None:
    if not isinstance(row, dict):
        raise DataError(source, line, None, "expected a JSON object")
    if EVAL_PY_OUTPUT in row:  # a row of eval.py's result files: its `prediction` is 1-based
        return _eval_py_prediction(row, source, line, require_marker, parser)
    if "prediction" in row:
        return _prediction_value(row, source, line)
    if "output" in row:
        if not isinstance(row["output"], str):
            raise DataError(source, line, "output", "must be a string")
        return read_output(row["output"], parser=parser, require_marker=require_marker)
    if "outputs" in row:
        outs = row["outputs"]
        if not isinstance(outs, list) or not all(isinstance(o, str) for o in outs):
            raise DataError(source, line, "outputs", "must be a list of strings")
        return read_outputs(outs, parser=parser, require_marker=require_marker)
    raise DataError(source, line, "prediction", "row needs 'prediction', 'output' or 'outputs'")


EVAL_PY_OUTPUT = "generated_critique"  # eval.py's result rows: the critique text (or the votes)


def _eval_py_prediction(
    row: dict[str, Any], source: str, line: int, require_marker: bool, parser: str
) -> int | None:
    """A row of the authors' ``eval.py`` result files (``<task>_error.jsonl``,
    ``<task>_correct.jsonl``): ``generated_critique`` is read like ``output`` (a string) or
    ``outputs`` (eval.py's kept votes); the row's own ``prediction`` is eval.py's 1-based step and
    is not read as a 0-based prediction."""
    value = row[EVAL_PY_OUTPUT]
    if isinstance(value, str):
        return read_output(value, parser=parser, require_marker=require_marker)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return read_outputs(value, parser=parser, require_marker=require_marker)
    raise DataError(source, line, EVAL_PY_OUTPUT, "must be a string or a list of strings")


def read_predictions(
    paths: str | Path | Sequence[str | Path], *, require_marker: bool = False,
    parser: str = "strict",
) -> dict[str, int | None]:  # fmt: skip
    """Read predictions JSONL files (one, or several such as eval.py's ``<task>_error.jsonl`` and
    ``<task>_correct.jsonl``) into ``{id: 0-based prediction or None}``; an id given twice, in one
    file or across them, is an error."""
    check_parser(parser, "--parser")
    preds: dict[str, int | None] = {}
    for path in [paths] if isinstance(paths, (str, Path)) else list(paths):
        for line, row in iter_jsonl(path):
            if not isinstance(row, dict) or row.get("id") is None:
                raise DataError(str(path), line, "id", "is missing")
            rid = str(row["id"])
            if rid in preds:
                raise DataError(str(path), line, "id", f"duplicate id {rid!r}")
            preds[rid] = _row_prediction(row, str(path), line, require_marker, parser)
    return preds


@dataclass(frozen=True)
class Coverage:
    """How a predictions file lines up with a benchmark (ids compared under :func:`record_keys`)."""

    items: int  # benchmark items
    matched: int  # items with a prediction
    extra: int  # predictions whose id names no item (ignored)

    @property
    def missing(self) -> int:
        return self.items - self.matched

    def describe(self) -> str:
        return (
            f"{self.matched} of {self.items} items have a prediction ({self.missing} missing, "
            f"counted as wrong); {self.extra} predictions name no item (ignored)"
        )


def record_keys(record: Solution) -> tuple[str, ...]:
    """The ids a prediction may use for ``record``: the package's id, the benchmark file's own id
    when a loader recorded it (``meta["source_id"]``) and the id without the loader's
    ``<source>-`` prefix (MR-GSM8K's file id ``0`` is ``mrgsm8k-0`` inside the package)."""
    keys = [record.id]
    own = record.meta.get("source_id")
    if own is not None:
        keys.append(str(own))
    prefix = record.source.split(":", 1)[0] + "-"
    if record.source and record.id.startswith(prefix) and len(record.id) > len(prefix):
        keys.append(record.id[len(prefix) :])
    return tuple(dict.fromkeys(keys))


def match_predictions(
    records: Sequence[Solution], predictions: Mapping[str, int | None]
) -> tuple[list[int | None], Coverage]:
    """Each record's prediction (None when missing) and the coverage; an alias that two records
    share is ignored. No overlap at all is an error naming a few expected and given ids."""
    owners = Counter(k for r in records for k in record_keys(r)[1:])
    found: list[str | None] = []
    for r in records:
        keys = [r.id, *(k for k in record_keys(r)[1:] if owners[k] == 1)]
        found.append(next((k for k in keys if k in predictions), None))
    used = {k for k in found if k is not None}
    cov = Coverage(len(records), len(used), len(set(predictions) - used))
    if records and not used:
        expected = ", ".join(repr(k) for r in records[:3] for k in record_keys(r))
        given = ", ".join(repr(k) for k in list(predictions)[:5]) or "none"
        raise ValueError(
            f"no prediction id matches the benchmark's {len(records)} items: expected ids "
            f"like {expected}; the predictions give {given} ({len(predictions)} in all)"
        )
    return [predictions[k] if k is not None else None for k in found], cov


def score_records(
    records: Sequence[Solution], predictions: Mapping[str, int | None]
) -> BenchmarkMetrics:
    """Score predictions by id (:func:`record_keys`); an item with no prediction counts as wrong,
    a partial overlap is logged with its counts, none at all is an error."""
    return score_with_coverage(records, predictions)[0]


def score_with_coverage(
    records: Sequence[Solution], predictions: Mapping[str, int | None]
) -> tuple[BenchmarkMetrics, Coverage]:
    preds, cov = match_predictions(records, predictions)
    if cov.missing or cov.extra:
        log.warning("partial overlap: %s", cov.describe())
    return compute_metrics([r.label for r in records], preds), cov


def register_cli(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "score",
        help="score a predictions JSONL against a benchmark file (ProcessBench formula)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", required=True, help="benchmark file (any loader format)")
    p.add_argument(
        "--predictions",
        required=True,
        nargs="+",
        help="JSONL file(s): prediction (0-based) | output | outputs per id; the authors' eval.py "
        "result files (<task>_error.jsonl <task>_correct.jsonl: generated_critique) too",
    )
    p.add_argument(
        "--require-marker",
        action="store_true",
        help="drop critic outputs without an **Answer**: marker (voting and single outputs)",
    )
    p.add_argument(
        "--parser",
        choices=PARSERS,
        default="strict",
        help="strict: the project's grader; official: the authors' eval.py reading, exactly",
    )
    p.set_defaults(func=_score_main)


def _score_main(args: argparse.Namespace) -> int:
    from deepcritic.data.loaders import load_solutions

    records, _report = load_solutions(args.benchmark)
    preds = read_predictions(
        args.predictions, require_marker=args.require_marker, parser=args.parser
    )
    metrics, cov = score_with_coverage(records, preds)
    if cov.missing or cov.extra:
        print(f"deepcritic score: {cov.describe()}", file=sys.stderr)
    sys.stdout.write(json.dumps(metrics.to_dict()) + "\n")
    return 0
