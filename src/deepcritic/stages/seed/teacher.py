r"""Teacher prompts for the three sub-steps, and reading (or forcing) each sample's step verdict.

A step verdict is ``\boxed{1}`` (step correct) or ``\boxed{-1}`` (step wrong), read by the one
grader. A sample whose verdict is missing or unusable (no box, not an integer, a box that is not a
verdict, truncated output, backend error) is finished by prefilling the verdict line and letting the
teacher choose between ``1}`` and ``-1}`` only (``backend.choose``). Forced verdicts are counted per
reason; downstream they are treated like any other verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from deepcritic import grader
from deepcritic.generation import Backend, Completion, Prompt
from deepcritic.prompting import load_prompt, number_steps, render_template, strip_step_prefix
from deepcritic.records import Solution

VERDICT_PREFIX = "**Judgement**: \\boxed{"
# The closing brace is part of each choice, so "1" cannot win as the prefix of "10" or "12".
VERDICT_CHOICES = ("1}", "-1}")
CORRECT, WRONG = 1, -1


@dataclass(frozen=True)
class Verdict:
    """One teacher sample with its step verdict (``1`` correct / ``-1`` wrong)."""

    text: str
    value: int
    forced: bool = False
    reason: str | None = None  # why the verdict was forced

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "verdict": self.value,
            "forced": self.forced,
            "reason": self.reason,
        }


def steps_to_critique(solution: Solution) -> int:
    """Steps 1..k are critiqued: up to the first wrong one, or all of them."""
    return len(solution.steps) if solution.label == grader.NO_ERROR else solution.label + 1


def expected_verdict(solution: Solution, index: int) -> int:
    """The verdict the label implies for the 0-based step ``index``."""
    return WRONG if index == solution.label else CORRECT


def _context(solution: Solution, index: int) -> dict[str, str]:
    """The paper's teacher context: the problem, the whole solution, and the step under review."""
    step = f"Step {index + 1}: {strip_step_prefix(solution.steps[index]).strip()}"
    return {
        "problem": solution.problem.strip(),
        "solution": number_steps(solution.steps),
        "step": step,
    }


def _messages(template: str, **fields: str) -> Prompt:
    return [
        {"role": "system", "content": load_prompt("seed_system.md").strip()},
        {"role": "user", "content": render_template(load_prompt(template), **fields).strip()},
    ]


def initial_prompt(solution: Solution, index: int) -> Prompt:
    return _messages("seed_initial.md", **_context(solution, index))


def indepth_prompt(solution: Solution, index: int, initial: str) -> Prompt:
    return _messages(
        "seed_indepth.md", initial_critique=initial.strip(), **_context(solution, index)
    )


def merge_prompt(solution: Solution, index: int, initial: str, indepth: str) -> Prompt:
    return _messages(
        "seed_merge.md",
        examples=load_prompt("seed_merge_examples.md").strip(),
        initial_critique=initial.strip(),
        indepth_critique=indepth.strip(),
        **_context(solution, index),
    )


def read_verdict(completion: Completion) -> tuple[int | None, str | None]:
    """``(verdict, None)`` when the grader reads a step verdict, else ``(None, reason)``."""
    if completion.finish_reason == "error":
        return None, "backend_error"
    if completion.finish_reason == "length":
        return None, "truncated"
    judgment = grader.parse_critique(completion.text)
    if judgment.status == grader.ParseStatus.NO_BOX:
        return None, "no_box"
    if judgment.status == grader.ParseStatus.NOT_INTEGER:
        return None, "not_integer"
    is_verdict_box = judgment.from_step_verdict or judgment.status == grader.ParseStatus.OK
    if not is_verdict_box:
        return None, "box_not_a_verdict"
    if judgment.step not in (CORRECT, WRONG):
        return None, "verdict_out_of_range"
    return judgment.step, None


def forced_prefill(prompt: Prompt, text: str, verdict_prefix: str = VERDICT_PREFIX) -> Prompt:
    """The prompt continued by the sample and an open verdict line (the teacher picks 1 or -1);
    ``verdict_prefix`` is the prompt set's verdict line up to the open box."""
    body = text.rstrip()
    prefix = f"{body}\n\n{verdict_prefix}" if body else verdict_prefix
    return [*prompt, {"role": "assistant", "content": prefix}]


def finish_verdicts(
    backend: Backend,
    prompts: Sequence[Prompt],
    completions: Sequence[Completion],
    prefixes: Sequence[str] | None = None,
) -> list[Verdict]:
    """Read every sample's verdict; force the unusable ones in one batched ``choose`` call
    (``prefixes``: each sample's open verdict line, default :data:`VERDICT_PREFIX`)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    if prefixes is None:
        prefixes = [VERDICT_PREFIX] * len(prompts)
    if len(prefixes) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(prefixes)} verdict prefixes")
    read = [read_verdict(c) for c in completions]
    todo = [i for i, (value, _) in enumerate(read) if value is None]
    picks = (
        backend.choose(
            [forced_prefill(prompts[i], completions[i].text, prefixes[i]) for i in todo],
            VERDICT_CHOICES,
        )
        if todo
        else []
    )
    if len(picks) != len(todo) or any(not 0 <= p < len(VERDICT_CHOICES) for p in picks):
        raise RuntimeError(f"backend.choose returned {picks!r} for {len(todo)} prompts")
    forced = dict(zip(todo, picks, strict=True))
    out: list[Verdict] = []
    for i, (completion, (value, reason)) in enumerate(zip(completions, read, strict=True)):
        if value is not None:
            out.append(Verdict(completion.text, value))
            continue
        choice = VERDICT_CHOICES[forced[i]]
        text = forced_prefill([], completion.text, prefixes[i])[-1]["content"] + choice
        out.append(Verdict(text, int(choice.rstrip("}")), forced=True, reason=reason))
    return out


def count_verdicts(verdicts: Sequence[Verdict], counts: Counter[str]) -> None:
    """Samples, parsed as written, forced (in total and per reason)."""
    for v in verdicts:
        counts["samples"] += 1
        if v.forced:
            counts["forced"] += 1
            counts[f"forced.{v.reason}"] += 1
        else:
            counts["parsed"] += 1
