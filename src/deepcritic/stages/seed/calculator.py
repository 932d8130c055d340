r"""A CPU stand-in teacher: critiques that verify arithmetic by recomputing it (no LLM).

**Not the method's teacher.** The paper's seed critiques come from a large LLM (Qwen2.5-72B-Instruct,
:mod:`deepcritic.stages.seed.generate`), and that stays the default (``teacher: llm``). A 135M model on two
CPU cores writes no usable verification, so SFT on its critiques can teach only the verdict format
and a label prior. ``teacher: calculator`` writes critiques that carry real verification content
for solutions whose steps show their arithmetic (GSM8K-style ``48/2 = 24``): for every equation
``<expression> = <value>`` written in a step it recomputes the expression ("verify by recomputing"),
checks the written value the other way round (the inverse operation: "verify from another angle"),
and judges the step wrong when a written value does not match.

The same filter as the LLM path applies: a solution is kept only when every step verdict agrees
with the label. Dropped, and counted: ``calculator_blind`` (the wrong step shows no equation the
calculator can check, e.g. a perturbed value with no visible expression) and
``calculator_disagrees`` (a step labelled correct whose written value does not recompute, e.g. a
rounded value, or a step labelled wrong whose equations all hold). Records have the shape of
:func:`deepcritic.stages.seed.generate.seed_record`, so finalize, balance and SFT are unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from deepcritic import grader
from deepcritic.arithmetic import (
    Equation,
    evaluate,
    find_equations,
    fmt,
    normalize,
    number,
    values_match,
)
from deepcritic.records import Solution
from deepcritic.stages.seed.generate import seed_record
from deepcritic.stages.seed.teacher import CORRECT, WRONG, expected_verdict, steps_to_critique

# the inverse check of ``a op b = c``: (operator written, how c and b give back a)
_INVERSE = {"+": "-", "-": "+", "*": "/", "/": "*"}


def _inverse(eq: Equation) -> str:
    """The other-angle check of a single ``a op b = c``: undo the operation with the written c."""
    m = re.fullmatch(r"(-?[\d.]+)([-+*/])([\d.]+)", normalize(eq.expression))
    if not m or float(m.group(3)) == 0:
        return ""
    a, op, b = m.groups()
    back = evaluate(f"{number(eq.written)}{_INVERSE[op]}{b}")
    if back is None:
        return ""
    end = "as it should" if values_match(back, a) else f"not {a}"
    return (
        f" Check the other way: {fmt(number(eq.written))} {_INVERSE[op]} {b} = {fmt(back)}, {end}."
    )


def critique_step(step: str) -> tuple[str, int]:
    """A critique body for one step and its verdict (``1`` correct, ``-1`` wrong)."""
    equations = find_equations(step)
    if not equations:
        return (
            "No calculation to recompute; the step restates earlier quantities. "
            "The step is correct.",
            CORRECT,
        )
    lines = []
    for eq in equations:
        match = "which matches" if eq.holds else "which does not match"
        lines.append(
            f"Recompute {eq.expression} = {fmt(eq.value)}; the step writes "
            f"{fmt(number(eq.written))}, {match}.{_inverse(eq)}"
        )
    wrong = [eq for eq in equations if not eq.holds]
    if wrong:
        eq = wrong[0]
        lines.append(
            f"The step is wrong: {eq.expression} is {fmt(eq.value)}, not {fmt(number(eq.written))}."
        )
        return "\n".join(lines), WRONG
    lines.append("The step is correct.")
    return "\n".join(lines), CORRECT


def drop_reason(solution: Solution, verdicts: Sequence[int]) -> str | None:
    """Why the calculator's verdicts cannot be kept as a seed critique (None: they match)."""
    expected = [expected_verdict(solution, j) for j in range(len(verdicts))]
    if verdicts == expected:
        return None
    wrong_step = solution.label
    if 0 <= wrong_step < len(verdicts) and not find_equations(solution.steps[wrong_step]):
        return "calculator_blind"
    return "calculator_disagrees"


def critique_record(solution: Solution) -> dict[str, Any]:
    """One seed record (kept with SFT messages, or dropped with a reason), as the LLM path's."""
    results = [critique_step(solution.steps[j]) for j in range(steps_to_critique(solution))]
    verdicts = [v for _, v in results]
    reason = drop_reason(solution, verdicts)
    return seed_record(
        solution,
        reason,
        [body for body, _ in results],
        initial_all_right=reason is None,
        counts={"calculator.steps": len(results)},
        steps=[
            {
                "step": grader.label_to_step(j),
                "expected": expected_verdict(solution, j),
                "calculator": v,
            }
            for j, v in enumerate(verdicts)
        ],
        teacher="calculator",
    )


def critique_chunk(solutions: Sequence[Solution]) -> list[dict[str, Any]]:
    """The calculator's records for a chunk (same order), like the LLM path's chunk."""
    return [critique_record(s) for s in solutions]
