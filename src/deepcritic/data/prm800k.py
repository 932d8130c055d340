"""PRM800K (Lightman et al. 2023, github.com/openai/prm800k) phase 1 / phase 2 raw label JSONL.

Each line is one labelled trajectory::

    {"labeler": "...", "generation": 9, "is_quality_control_question": false,
     "is_initial_screening_question": false,
     "question": {"problem": "...", "ground_truth_answer": "...",
                  "pre_generated_steps": [...], "pre_generated_answer": "..."},  # phase 2 only
     "label": {"steps": [{"completions": [{"text": "...", "rating": -1|0|1, "flagged": ...}],
                          "human_completion": null | {"text": "...", "rating": null, ...},
                          "chosen_completion": 0 | null}, ...],
               "finish_reason": "solution" | "found_error" | "give_up" | "bad_problem"}}

Labelling rule (one per trajectory):

* The step text is the chosen completion; when ``chosen_completion`` is null, the labeller's
  ``human_completion`` (phase 1, written because every completion was wrong: counted as correct);
  when both are null the labeller stopped on this step, and it is the first completion rated -1.
* Ratings +1 and 0 count as correct; the label is the index of the first step rated -1 and the
  trajectory ends there (labelling stops at the first error).
* ``finish_reason``: ``give_up`` / ``bad_problem`` rows are skipped and counted;
  ``found_error`` must contain a -1 step and ``solution`` must not (else :class:`DataError`).
  Rows flagged ``is_initial_screening_question`` (the same 30 screening problems served to every
  labeller) are skipped and counted, so they do not repeat in training data. Rows flagged
  ``is_quality_control_question`` (quality-control problems served to every labeller) are kept,
  marked ``meta["quality_control"] = True``: the seed stage skips (and counts) them, as the
  DeepCritic reference does, while the labels stay available to other uses.
* Phase 2: when the labelled steps are a prefix of ``question.pre_generated_steps``, the whole
  pre-generated solution is kept (as in ProcessBench), and ``final_answer_correct`` compares
  ``pre_generated_answer`` with the ground truth (math-verify). ``solution`` rows are correct by
  definition; otherwise (truncated phase-1 trajectories) it is unknown (None).

Ids are ``prm800k-<file stem>-<line>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepcritic.data.rows import (
    Row,
    SkipRow,
    fail,
    load_json_file,
    require,
)
from deepcritic.records import LoadReport, Solution

KEEP = ("solution", "found_error")
SKIP = ("give_up", "bad_problem")
RATINGS = (-1, 0, 1)


def _completion(row: Row, name: str, completion: Any) -> tuple[str, int]:
    text = require(row, completion, "text", str, f"{name}.text")
    rating = require(row, completion, "rating", int, f"{name}.rating")
    if rating not in RATINGS:
        raise fail(row, f"{name}.rating", f"must be -1, 0 or 1, got {rating}")
    return text, rating


def _human_text(row: Row, name: str, human: Any) -> str:
    text = human.get("text") if isinstance(human, dict) else human
    if not isinstance(text, str) or not text.strip():
        raise fail(
            row, f"{name}.human_completion", f"must hold a non-empty text, got {human!r:.60}"
        )
    return text


def step_choice(row: Row, i: int, step: Any) -> tuple[str, int, bool]:
    """``(text, rating, is_human)`` of step ``i`` of the trajectory (see the module docstring)."""
    name = f"label.steps[{i}]"
    if not isinstance(step, dict):
        raise fail(row, name, f"must be an object, got {step!r:.60}")
    completions = step.get("completions") or []
    if not isinstance(completions, list):
        raise fail(row, f"{name}.completions", f"must be a list, got {completions!r:.60}")
    chosen = step.get("chosen_completion")
    if chosen is not None:
        if not isinstance(chosen, int) or isinstance(chosen, bool):
            raise fail(row, f"{name}.chosen_completion", f"must be an integer, got {chosen!r}")
        if not 0 <= chosen < len(completions):
            raise fail(
                row,
                f"{name}.chosen_completion",
                f"{chosen} is outside the {len(completions)} completions",
            )
        text, rating = _completion(row, f"{name}.completions[{chosen}]", completions[chosen])
        return text, rating, False
    if step.get("human_completion") is not None:
        return _human_text(row, name, step["human_completion"]), 1, True
    for j, completion in enumerate(completions):
        text, rating = _completion(row, f"{name}.completions[{j}]", completion)
        if rating == -1:
            return text, -1, False
    raise fail(
        row,
        f"{name}.chosen_completion",
        "is null, with no human_completion and no completion rated -1",
    )


def _trajectory(row: Row, steps: list[Any]) -> tuple[list[str], int, int]:
    """Step texts up to and including the first -1, that index (-1 if none), human step count."""
    texts: list[str] = []
    humans = 0
    for i, step in enumerate(steps):
        text, rating, human = step_choice(row, i, step)
        texts.append(text)
        humans += human
        if rating == -1:
            return texts, i, humans
    return texts, -1, humans


def _full_solution(
    question: dict[str, Any], texts: list[str], finish: str, gold: str | None
) -> tuple[list[str], bool | None]:
    """The whole phase-2 solution when the labelled steps are its prefix, and answer correctness."""
    if finish == "solution":
        return texts, True
    pre = question.get("pre_generated_steps")
    if not (isinstance(pre, list) and all(isinstance(s, str) for s in pre)):
        return texts, None
    if len(pre) < len(texts) or any(
        a.strip() != b.strip() for a, b in zip(texts, pre, strict=False)
    ):
        return texts, None
    answer = question.get("pre_generated_answer")
    if gold is None or not isinstance(answer, str):
        return list(pre), None
    from deepcritic.answers import answers_match

    return list(pre), answers_match(answer, gold)


def _check_finish(row: Row, finish: str, label: int) -> None:
    if finish == "found_error" and label == -1:
        raise fail(row, "label.finish_reason", "is 'found_error' but no step is rated -1")
    if finish == "solution" and label != -1:
        raise fail(row, "label.finish_reason", f"is 'solution' but step {label} is rated -1")


def to_solution(row: Row, stem: str) -> Solution:
    """Convert one PRM800K line (raises :class:`SkipRow` for rows the format says to drop)."""
    data = row.data
    question = require(row, data, "question", dict)
    problem = require(row, question, "problem", str, "question.problem")
    gold = question.get("ground_truth_answer")
    if gold is not None and not isinstance(gold, str):
        raise fail(row, "question.ground_truth_answer", f"must be a string, got {gold!r:.60}")
    label = require(row, data, "label", dict)
    finish = require(row, label, "finish_reason", str, "label.finish_reason")
    if finish in SKIP:
        raise SkipRow(f"finish_reason {finish}")
    if finish not in KEEP:
        raise fail(row, "label.finish_reason", f"unknown value {finish!r}; expected {KEEP + SKIP}")
    if data.get("is_initial_screening_question") is True:
        raise SkipRow("initial screening question")
    steps = require(row, label, "steps", list, "label.steps")
    if not steps:
        raise fail(row, "label.steps", "is empty")
    texts, first_wrong, humans = _trajectory(row, steps)
    _check_finish(row, finish, first_wrong)
    full, correct = _full_solution(question, texts, finish, gold)
    where = row.line if row.line is not None else row.source.rsplit(" ", 1)[-1]
    return Solution(
        id=f"prm800k-{stem}-{where}",
        problem=problem,
        steps=full,
        label=first_wrong,
        final_answer_correct=correct,
        source=f"prm800k:{stem}",
        generator=str(data.get("generator") or "prm800k"),
        gold_answer=gold,
        meta={
            "finish_reason": finish,
            "human_steps": humans,
            "labelled_steps": len(texts),
            "labeler": data.get("labeler"),
            "generation": data.get("generation"),
            "quality_control": data.get("is_quality_control_question") is True,
        },
    )


def load_prm800k(
    path: str | Path, *, limit: int | None = None, skip_invalid: bool = False
) -> tuple[list[Solution], LoadReport]:
    """Load a PRM800K ``phase{1,2}_{train,test}.jsonl`` file."""
    stem = Path(path).stem
    return load_json_file(
        path,
        "PRM800K",
        lambda r: to_solution(r, stem),
        desc=f"prm800k:{stem}",
        limit=limit,
        skip_invalid=skip_invalid,
    )
