"""CHAMP (Mao et al. 2024; PyPI ``champ-dataset==1.0.0``, MIT): first-wrong-step annotations.

The package file ``champ_dataset/dataset_files/v0.json`` is found with
``importlib.util.find_spec`` and read as JSON; the package itself is never imported (it needs
``natsort``). ``problems[pid].fws_annotations[key]`` holds ``text`` (a model's full solution),
``start_idx`` / ``end_idx`` (the character span of the first wrong step; both null when the
annotator found no mistake) and ``author`` (the model that wrote the solution). 540 annotations on
270 problems, 96 without a mistake.

Step rule: the solution is split into paragraphs at blank lines (a line break followed by only
whitespace up to the next line break); each non-blank paragraph, stripped, is one step. The label is
the paragraph that contains ``start_idx`` (a start inside the blank gap between two paragraphs
belongs to the next one). A span that no paragraph contains (outside the text) raises
:class:`DataError` (``skip_invalid`` counts it as ``"invalid start_idx"``); on v0.json every span maps.

``problem`` is ``problems[pid]._text`` (the package's own ``_raw_text`` with ``@@`` markup removed),
``gold_answer`` is ``_answer``, ``generator`` is ``author``, the id is
``champ-<problem id>-<annotation key>``. ``final_answer_correct`` is not annotated: None.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from deepcritic.data.rows import Row, collect, fail, require
from deepcritic.records import DataError, LoadReport, Solution

PACKAGE = "champ_dataset"
DATA_FILE = ("dataset_files", "v0.json")
SOURCE = "champ"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")


def default_path() -> Path:
    """``v0.json`` inside the installed ``champ-dataset`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "CHAMP data not found: pip install --no-deps champ-dataset==1.0.0, or pass champ:/path/v0.json"
        )
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*DATA_FILE)


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the non-blank paragraphs of ``text``."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _PARAGRAPH_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def span_to_step(spans: list[tuple[int, int]], start_idx: int) -> int | None:
    """Index of the paragraph containing ``start_idx`` (or the next one after a gap); None if none."""
    if start_idx < 0:
        return None
    for i, (_, end) in enumerate(spans):
        if start_idx < end:
            return i
    return None


def _annotation(row: Row, ann: Any) -> tuple[str, int | None, int | None, str]:
    text = require(row, ann, "text", str)
    author = require(row, ann, "author", str)
    start, end = ann.get("start_idx"), ann.get("end_idx")
    for name, value in (("start_idx", start), ("end_idx", end)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise fail(row, name, f"must be an integer or null, got {value!r:.60}")
    if (start is None) != (end is None):
        raise fail(
            row, "end_idx" if end is None else "start_idx", "must be null together with the other"
        )
    if start is not None and end is not None and end < start:
        raise fail(row, "end_idx", f"{end} is before start_idx {start}")
    return text, start, end, author


def to_solution(row: Row) -> Solution:
    """One CHAMP annotation -> a step-labelled solution (see the module docstring).

    ``row.data`` is ``(annotation, problem, problem_id, annotation_key)``.
    """
    ann, problem, pid, key = row.data
    text, start, end, author = _annotation(row, ann)
    spans = paragraph_spans(text)
    if not spans:
        raise fail(row, "text", "is empty")
    label = -1
    if start is not None:
        step = span_to_step(spans, start)
        if step is None:
            raise fail(
                row, "start_idx", f"{start} is not inside any step of the {len(text)}-char text"
            )
        label = step
    return Solution(
        id=f"{SOURCE}-{pid}-{key}",
        problem=problem["_text"],
        steps=[text[s:e].strip() for s, e in spans],
        label=label,
        final_answer_correct=None,
        source=SOURCE,
        generator=author,
        gold_answer=problem.get("_answer"),
        meta={"problem_id": pid, "annotation": key, "span": [start, end]},
    )


@lru_cache(maxsize=2)
def _read_problems(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """``problems`` of the file, keeping only the fields used here (v0.json is 72 MB, mostly model
    conversations; cached per path and modification time so repeated loads parse it once)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(path, e.lineno, None, f"invalid JSON ({e.msg})") from e
    problems = require(Row(data, path, None), data, "problems", dict)
    keep = ("_text", "_answer", "fws_annotations")
    return {
        pid: {k: v for k, v in p.items() if k in keep} if isinstance(p, dict) else p
        for pid, p in problems.items()
    }


def _annotation_rows(path: Path) -> Iterator[Row]:
    stat = path.stat()
    problems = _read_problems(str(path), stat.st_mtime_ns, stat.st_size)
    for pid, problem in problems.items():
        prow = Row(problem, f"{path} problems[{pid}]", None)
        require(prow, problem, "_text", str)
        answer = problem.get("_answer")
        if answer is not None and not isinstance(answer, str):
            raise fail(prow, "_answer", f"must be a string, got {answer!r:.60}")
        annotations = require(prow, problem, "fws_annotations", dict)
        for key, ann in annotations.items():
            where = f"{path} problems[{pid}].fws_annotations[{key}]"
            yield Row((ann, problem, pid, key), where, None)


def load_champ(
    path: str | Path | None = None, *, limit: int | None = None, skip_invalid: bool = False
) -> tuple[list[Solution], LoadReport]:
    """All CHAMP first-wrong-step annotations, in file order (problems, then annotation keys)."""
    path = Path(path) if path else default_path()
    if not path.is_file():
        raise FileNotFoundError(f"CHAMP file {path} does not exist")
    report = LoadReport(str(path))
    solutions = collect(
        _annotation_rows(path),
        to_solution,
        report,
        skip_invalid=skip_invalid,
        limit=limit,
        desc=SOURCE,
    )
    return solutions, report
