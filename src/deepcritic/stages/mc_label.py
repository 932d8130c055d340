"""Monte Carlo annotation's labelling rule: per-prefix success estimates -> the first-error label.

Kept apart from the stage (:mod:`deepcritic.stages.mc`) so it can be read, tested and reused alone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from deepcritic.records import NO_ERROR

log = logging.getLogger(__name__)

Recovery = Literal["skip_dip", "ambiguous"]  # a failing prefix that later recovers


# --------------------------------------------------------------------------- the labelling rule


@dataclass(frozen=True)
class MCLabel:
    """The outcome of the rule: a 0-based label (-1 = no error), or None when ambiguous."""

    label: int | None
    reason: str

    @property
    def ambiguous(self) -> bool:
        return self.label is None


def _state(value: float, fail_at: float, succeed_at: float) -> str:
    if value <= fail_at:
        return "fail"
    return "ok" if value >= succeed_at else "gray"


def label_from_estimates(
    estimates: Sequence[float],
    final_correct: bool,
    *,
    fail_at: float = 0.0,
    succeed_at: float = 1e-9,
    start: float = 1.0,
    recovery: Recovery = "skip_dip",
) -> MCLabel:
    """First-error label of an n-step solution from the MC estimates of its prefixes 1..n-1.

    ``estimates[i]`` is the fraction of rollouts after steps ``1..i+1`` that reach the gold answer.
    The sequence is extended with ``start`` in front (the empty prefix: the stage passes the
    problem's sample pass rate; 1.0 by default) and the graded full solution (1.0 / 0.0) at the end.
    A value ``<= fail_at`` *fails*, a value ``>= succeed_at`` *succeeds*, anything between is
    *gray* (uncertain). Defaults: fail = no rollout succeeded, succeed = at least one did.

    * Correct solution: label -1 (``all_correct``) only if every prefix succeeds; a failing prefix
      gives ``ambiguous:correct_with_failed_prefix``, a gray one ``ambiguous:correct_with_gray_prefix``.
    * Wrong solution: the first error is the first step of the final run of failing values (the
      estimate drops and never recovers; the last value, the wrong answer, always fails).
      - the value before it succeeds: that step is the label (``clean_error``);
      - the value before it is gray: ``ambiguous:gray_before_error``;
      - an earlier failing value recovered later (a dip): with ``recovery="skip_dip"`` the dip is
        treated as rollout noise and the label stands (``error_after_dip``); with
        ``recovery="ambiguous"`` the solution is dropped (``ambiguous:recovered_dip``);
      - every value fails, the empty prefix included (an unsolved problem):
        ``ambiguous:start_fails``.
    """
    if not fail_at < succeed_at:
        raise ValueError(f"fail_at ({fail_at}) must be below succeed_at ({succeed_at})")
    if recovery not in ("skip_dip", "ambiguous"):
        raise ValueError(f"recovery must be skip_dip or ambiguous, got {recovery!r}")
    for i, e in enumerate(estimates):
        if not 0.0 <= e <= 1.0:
            raise ValueError(f"estimates[{i}] = {e} is outside [0, 1]")
    states = [_state(v, fail_at, succeed_at) for v in (start, *estimates)]
    if final_correct:
        bad = states[1:]
        if "fail" in bad:
            return MCLabel(None, "ambiguous:correct_with_failed_prefix")
        if "gray" in bad:
            return MCLabel(None, "ambiguous:correct_with_gray_prefix")
        return MCLabel(NO_ERROR, "all_correct")
    states.append("fail")  # the graded wrong answer after the last step
    first = len(states) - 1
    while first > 1 and states[first - 1] == "fail":
        first -= 1
    if states[first - 1] == "gray":
        return MCLabel(None, "ambiguous:gray_before_error")
    if states[first - 1] == "fail":  # only possible when the start itself fails
        return MCLabel(None, "ambiguous:start_fails")
    dipped = "fail" in states[1 : first - 1]
    if dipped and recovery == "ambiguous":
        return MCLabel(None, "ambiguous:recovered_dip")
    return MCLabel(first - 1, "error_after_dip" if dipped else "clean_error")
