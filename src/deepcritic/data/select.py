"""Choosing evaluation items: never by file order alone (released benchmark files are sorted by label)."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Sequence

from deepcritic.records import Solution

SELECTIONS = ("first", "balanced")  # file order | half erroneous, half correct (seeded shuffle)


def balanced_slice(
    solutions: Sequence[Solution], n: int | None, seed: int, max_steps: int | None = None
) -> list[Solution]:
    """``n`` items (half erroneous, half correct, as far as there are) of at most ``max_steps``
    steps, chosen by a seeded shuffle (never by file order: released files are sorted by label);
    ``n=None`` keeps as many of each as the smaller side has. Returned in id order."""
    short = [s for s in solutions if max_steps is None or len(s.steps) <= max_steps]
    rng = random.Random(seed)
    wrong = [s for s in short if s.has_error]
    right = [s for s in short if not s.has_error]
    rng.shuffle(wrong)
    rng.shuffle(right)
    if n is None:
        n = 2 * min(len(wrong), len(right))
    half = n // 2
    return sorted(wrong[: n - half] + right[:half], key=lambda s: s.id)


def select_items(
    solutions: Sequence[Solution],
    how: str,
    limit: int | None,
    seed: int,
    max_steps: int | None = None,
) -> list[Solution]:
    """``first``: the first ``limit`` (of at most ``max_steps`` steps); ``balanced``: see
    :func:`balanced_slice`."""
    if how not in SELECTIONS:
        raise ValueError(f"select: {how!r} is not one of {', '.join(SELECTIONS)}")
    if how == "balanced":
        return balanced_slice(solutions, limit, seed, max_steps)
    short = [s for s in solutions if max_steps is None or len(s.steps) <= max_steps]
    return short if limit is None else short[:limit]


def rank(seed: int, solution_id: str) -> str:
    """A stable pseudo-random rank of a solution (the same for every run, file order and shard
    layout): a hash of the seed and the id."""
    return hashlib.sha256(f"select:{seed}:{solution_id}".encode()).hexdigest()


def first_per_problem(solutions: Sequence[Solution], n: int, seed: int) -> list[Solution]:
    """At most ``n`` solutions of each problem text, those of the lowest :func:`rank`; file order
    kept. ``n=1`` is the reference's "shuffle with a fixed seed, keep each problem's first"."""
    if n < 1:
        raise ValueError(f"solutions per problem must be >= 1, got {n}")
    by_problem: defaultdict[str, list[Solution]] = defaultdict(list)
    for s in solutions:
        by_problem[s.problem].append(s)
    chosen = {
        s.id
        for group in by_problem.values()
        for s in sorted(group, key=lambda s: rank(seed, s.id))[:n]
    }
    return [s for s in solutions if s.id in chosen]
