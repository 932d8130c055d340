"""The canonical record for a step-labelled solution, and its JSONL reader/writer.

Index convention (used everywhere inside the package): ``label`` is the 0-based index of the
first wrong step, ``-1`` when every step is correct. The critic speaks 1-based step numbers;
the conversion happens once, in :mod:`deepcritic.grader`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NO_ERROR = -1


class DataError(ValueError):
    """A malformed input row: the message names the file, the line and the field."""

    def __init__(self, source: str, line: int | None, field_name: str | None, reason: str):
        where = source if line is None else f"{source}:{line}"
        what = f" field '{field_name}'" if field_name else ""
        super().__init__(f"{where}:{what} {reason}")
        self.source = source
        self.line = line
        self.field = field_name
        self.reason = reason


@dataclass(frozen=True)
class Solution:
    """A solution split into steps, with the first wrong step (0-based, -1 if none)."""

    id: str
    problem: str
    steps: list[str]
    label: int = NO_ERROR
    final_answer_correct: bool | None = None
    source: str = ""
    generator: str = ""
    gold_answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_error(self) -> bool:
        return self.label != NO_ERROR

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["meta"]:
            d.pop("meta")
        return d

    @classmethod
    def from_dict(cls, row: Any, *, source: str = "<dict>", line: int | None = None) -> Solution:
        """Validate one row; raise :class:`DataError` naming the bad field."""
        if not isinstance(row, dict):
            raise DataError(source, line, None, f"expected a JSON object, got {type(row).__name__}")

        def need(name: str, typ: type | tuple[type, ...]) -> Any:
            if name not in row:
                raise DataError(source, line, name, "is missing")
            value = row[name]
            if not isinstance(value, typ) or isinstance(value, bool) and typ is int:
                raise DataError(source, line, name, f"must be {_tname(typ)}, got {value!r:.60}")
            return value

        rid = row.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
            raise DataError(source, line, "id", "is missing or not a string/int")
        problem = need("problem", str)
        steps = need("steps", list)
        if not steps:
            raise DataError(source, line, "steps", "is empty")
        for i, s in enumerate(steps):
            if not isinstance(s, str):
                raise DataError(source, line, f"steps[{i}]", f"must be a string, got {s!r:.60}")
        label = need("label", int)
        if not NO_ERROR <= label < len(steps):
            raise DataError(source, line, "label", f"{label} is outside [-1, {len(steps) - 1}]")
        fac = row.get("final_answer_correct")
        if fac is not None and not isinstance(fac, bool):
            raise DataError(source, line, "final_answer_correct", f"must be a bool, got {fac!r}")
        gold = row.get("gold_answer")
        return cls(
            id=str(rid),
            problem=problem,
            steps=list(steps),
            label=label,
            final_answer_correct=fac,
            source=str(row.get("source") or ""),
            generator=str(row.get("generator") or ""),
            gold_answer=None if gold is None else str(gold),
            meta=dict(row.get("meta") or {}),
        )


def _tname(typ: type | tuple[type, ...]) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return {"str": "a string", "int": "an integer", "list": "a list"}.get(
        typ.__name__, typ.__name__
    )


@dataclass
class LoadReport:
    """Counts from one load: always reported, so nothing is dropped silently."""

    source: str
    read: int = 0
    kept: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def log(self) -> None:
        msg = f"{self.source}: read {self.read}, kept {self.kept}, skipped {self.skipped}"
        if self.reasons:
            msg += " " + json.dumps(self.reasons, sort_keys=True)
        (log.warning if self.skipped else log.info)(msg)


def iter_jsonl(
    path: str | Path, *, skip_invalid: bool = False, report: LoadReport | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, parsed_object)``.

    A line that is not JSON raises :class:`DataError`, or with ``skip_invalid`` is counted in
    ``report`` under "invalid JSON" and skipped.
    """
    with open(path, encoding="utf-8") as f:
        for n, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                if not skip_invalid:
                    raise DataError(str(path), n, None, f"invalid JSON ({e.msg})") from e
                if report is not None:
                    report.read += 1
                    report.skip("invalid JSON")
                continue
            yield n, obj


def write_jsonl(path: str | Path, rows: Iterable[Any], *, append: bool = False) -> int:
    """Write dicts or :class:`Solution` records, one per line. Returns the count written."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for row in rows:
            obj = row.to_dict() if isinstance(row, Solution) else row
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_solutions(
    path: str | Path, *, skip_invalid: bool = False, report: LoadReport | None = None
) -> list[Solution]:
    """Read canonical JSONL. Malformed rows raise, or with ``skip_invalid`` are counted."""
    report = report or LoadReport(str(path))
    out: list[Solution] = []
    for n, row in iter_jsonl(path, skip_invalid=skip_invalid, report=report):
        report.read += 1
        try:
            out.append(Solution.from_dict(row, source=str(path), line=n))
        except DataError as e:
            if not skip_invalid:
                raise
            report.skip(f"invalid {e.field or 'row'}")
    report.kept = len(out)
    report.log()
    return out
