"""Which labelled solutions the teacher critiques: the reference's selection, every skip counted.

In order (each step counts what it skips under ``input.skipped.<reason>``):

1. ``skip_quality_control``: rows marked ``meta["quality_control"]`` (PRM800K's quality-control
   problems, labelled by every labeller) are skipped: repeated, sometimes conflicting labels.
2. ``max_critiqued_steps`` (ours, for small budgets): solutions with more steps to critique.
3. ``one_per_problem``: one solution per problem text, the one with the lowest stable rank
   (a hash of seed and id). The reference shuffles with a fixed seed and keeps the first solution of
   each problem; a hash does the same without depending on file order or shard layout.
4. ``max_problems``: the first N problems in rank order (the reference critiques the first 10,000
   problems of its shuffle, which gives ~4.5K SFT examples after filtering).
5. ``max_solutions``: the first N remaining solutions in file order (small runs and tests).

The kept solutions stay in file order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from deepcritic.data.select import first_per_problem, rank
from deepcritic.records import Solution
from deepcritic.stages.seed.config import SeedConfig
from deepcritic.stages.seed.teacher import steps_to_critique

log = logging.getLogger(__name__)


def _keep(
    solutions: list[Solution], kept: list[Solution], reason: str, counts: Counter[str]
) -> list[Solution]:
    skipped = len(solutions) - len(kept)
    counts[f"input.skipped.{reason}"] += skipped
    if skipped:
        log.info("seed input: %d of %d solutions skipped (%s)", skipped, len(solutions), reason)
    return kept


def first_problems(solutions: Sequence[Solution], limit: int, seed: int) -> list[Solution]:
    """Solutions of the ``limit`` problems whose best-ranked solution comes first, in file order."""
    problem_rank: dict[str, str] = {}
    for s in solutions:
        r = rank(seed, s.id)
        if s.problem not in problem_rank or r < problem_rank[s.problem]:
            problem_rank[s.problem] = r
    kept = set(sorted(problem_rank, key=problem_rank.__getitem__)[:limit])
    return [s for s in solutions if s.problem in kept]


def select_inputs(
    solutions: list[Solution], config: SeedConfig, counts: Counter[str]
) -> list[Solution]:
    """Apply steps 1-5 of the module docstring; counts go to ``counts``."""
    if config.skip_quality_control:
        kept = [s for s in solutions if s.meta.get("quality_control") is not True]
        solutions = _keep(solutions, kept, "quality_control", counts)
    if config.max_critiqued_steps is not None:
        kept = [s for s in solutions if steps_to_critique(s) <= config.max_critiqued_steps]
        solutions = _keep(solutions, kept, "too_many_steps", counts)
    if config.one_per_problem:
        solutions = _keep(
            solutions, first_per_problem(solutions, 1, config.seed), "same_problem", counts
        )
    if config.max_problems is not None:
        kept = first_problems(solutions, config.max_problems, config.seed)
        solutions = _keep(solutions, kept, "over_max_problems", counts)
    if config.max_solutions is not None:
        solutions = _keep(
            solutions, solutions[: config.max_solutions], "over_max_solutions", counts
        )
    counts["input.problems"] += len({s.problem for s in solutions})
    return solutions
