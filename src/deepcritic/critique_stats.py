r"""What a critic's outputs look like, beside its F1: readable verdicts, lengths, label spread.

Computed from the evaluate stage's prediction rows (``outputs``, ``finish_reasons``,
``completion_tokens``, ``prediction``), per benchmark:

* ``answer_rate``: % of items whose (first) critique has a readable ``**Answer**: \boxed{k}``, read
  by the one grader in strict mode (what the GRPO reward and seed filtering require);
* ``parse_rate``: % of items with any usable prediction (the official ProcessBench reading, which
  also takes the last box anywhere; the registry's ``avg_parse_rate``);
* ``truncation_rate``: % of samples cut by ``max_tokens``; ``mean_tokens``: completion tokens per
  sample;
* ``histogram``: predicted step as the critic writes it (1-based, ``-1`` = no error,
  ``unreadable``), next to the labels' own histogram.

:func:`trivial_baselines` scores the two answers that need no critic: always ``-1`` and always the
most frequent erroneous step of the same items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from deepcritic import grader
from deepcritic.scoring import BenchmarkMetrics, compute_metrics

UNREADABLE = "unreadable"


@dataclass(frozen=True)
class CritiqueStats:
    n: int
    answer_rate: float
    parse_rate: float
    truncation_rate: float
    mean_tokens: float
    histogram: dict[str, int] = field(default_factory=dict)
    label_histogram: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scalars(self) -> dict[str, float]:
        """The numeric fields, for MLflow metrics."""
        return {k: float(v) for k, v in asdict(self).items() if isinstance(v, int | float)}


def step_key(label: int | None) -> str:
    """0-based label (or None) -> the step as the critic writes it, for a histogram."""
    return UNREADABLE if label is None else str(grader.label_to_step(label))


def _sorted(counts: Counter[str]) -> dict[str, int]:
    def order(key: str) -> tuple[int, int]:
        return (1, 0) if key == UNREADABLE else (0, int(key))

    return {k: counts[k] for k in sorted(counts, key=order)}


def critique_stats(rows: Sequence[dict[str, Any]]) -> CritiqueStats:
    """Stats of evaluate prediction rows (see the module docstring)."""
    n = len(rows)
    samples = sum(len(r.get("outputs", [])) for r in rows)
    first = [r["outputs"][0] if r.get("outputs") else "" for r in rows]
    answered = sum(grader.judge(text, strict=True) is not None for text in first)
    truncated = sum(f == "length" for r in rows for f in r.get("finish_reasons", []))
    tokens = sum(int(r.get("completion_tokens", 0)) for r in rows)

    def pct(part: int, whole: int) -> float:
        return 100.0 * part / whole if whole else 0.0

    return CritiqueStats(
        n=n,
        answer_rate=pct(answered, n),
        parse_rate=pct(sum(r["prediction"] is not None for r in rows), n),
        truncation_rate=pct(truncated, samples),
        mean_tokens=tokens / samples if samples else 0.0,
        histogram=_sorted(Counter(step_key(r["prediction"]) for r in rows)),
        label_histogram=_sorted(Counter(step_key(r["label"]) for r in rows)),
    )


def trivial_baselines(labels: Sequence[int]) -> dict[str, BenchmarkMetrics]:
    """F1 of always answering -1, and of always answering the most frequent erroneous step."""
    errors = Counter(y for y in labels if y != grader.NO_ERROR)
    common = errors.most_common(1)[0][0] if errors else 0
    return {
        "always_-1": compute_metrics(labels, [grader.NO_ERROR] * len(labels)),
        f"always_step_{grader.label_to_step(common)}": compute_metrics(
            labels, [common] * len(labels)
        ),
    }
