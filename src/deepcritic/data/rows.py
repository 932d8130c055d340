"""Reading raw input rows, shared by every format module and the loader hub.

A format module (``champ``, ``processbench``, ``prm800k``, ``mrgsm8k``, ``problems``) converts
:class:`Row` objects into records with :func:`require` / :func:`fail` (errors name the file, line
and field) and :func:`collect` (counts reads, kept rows and skips in a :class:`LoadReport`). The hub
(:mod:`deepcritic.data.loaders`) picks the format; no format module imports it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from deepcritic.records import DataError, LoadReport, iter_jsonl

T = TypeVar("T")


class SkipRow(Exception):
    """A well-formed row that its format says to drop (counted under ``reason``, never an error)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Row:
    """One raw input row and where it came from (for error messages)."""

    data: Any
    source: str  # file (or dataset) name, plus " item i" for JSON arrays
    line: int | None  # 1-based line for JSONL, None otherwise


def fail(row: Row, field_name: str | None, reason: str) -> DataError:
    """A :class:`DataError` located at ``row``."""
    return DataError(row.source, row.line, field_name, reason)


def require(row: Row, obj: Any, key: str, typ: type | tuple[type, ...], name: str = "") -> Any:
    """``obj[key]`` checked against ``typ``; ``name`` is the dotted field name for messages."""
    name = name or key
    if not isinstance(obj, dict):
        raise fail(row, name.rpartition(".")[0] or None, f"must be an object, got {obj!r:.60}")
    if key not in obj or obj[key] is None:
        raise fail(row, name, "is missing")
    value = obj[key]
    bad_bool = isinstance(value, bool) and bool not in (typ if isinstance(typ, tuple) else (typ,))
    if not isinstance(value, typ) or bad_bool:
        names = " or ".join(t.__name__ for t in typ) if isinstance(typ, tuple) else typ.__name__
        raise fail(row, name, f"must be {names}, got {value!r:.60}")
    return value


def iter_json_rows(
    path: str | Path, *, skip_invalid: bool = False, report: LoadReport | None = None
) -> Iterator[Row]:
    """Rows of a JSON array file (``source`` says ``item i``) or a JSONL file (``line`` set).

    A file whose text starts with ``[`` is a JSON array; anything else is JSONL.
    """
    path = Path(path)
    if head(path, 64).startswith("["):
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(str(path), e.lineno, None, f"invalid JSON ({e.msg})") from e
        for i, item in enumerate(items):
            yield Row(item, f"{path} item {i}", None)
        return
    for n, obj in iter_jsonl(path, skip_invalid=skip_invalid, report=report):
        yield Row(obj, str(path), n)


def collect(
    rows: Iterable[Row],
    convert: Callable[[Row], T],
    report: LoadReport,
    *,
    skip_invalid: bool = False,
    limit: int | None = None,
    desc: str | None = None,
) -> list[T]:
    """Convert rows, counting reads, kept rows and skips; stop once ``limit`` rows are kept."""
    out: list[T] = []
    if limit is not None and limit <= 0:
        return out
    for row in tqdm(rows, desc=desc or report.source, unit=" rows", disable=None, leave=False):
        report.read += 1
        try:
            out.append(convert(row))
        except SkipRow as s:
            report.skip(s.reason)
        except DataError as e:
            if not skip_invalid:
                raise
            report.skip(f"invalid {e.field or 'row'}")
        if limit is not None and len(out) >= limit:
            break
    report.kept = len(out)
    report.log()
    return out


def load_json_file(
    path: str | Path,
    kind: str,
    convert: Callable[[Row], T],
    *,
    desc: str,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> tuple[list[T], LoadReport]:
    """A local JSON array / JSONL file converted row by row (``kind`` names it in errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {path} does not exist")
    report = LoadReport(str(path))
    rows = iter_json_rows(path, skip_invalid=skip_invalid, report=report)
    out = collect(rows, convert, report, skip_invalid=skip_invalid, limit=limit, desc=desc)
    return out, report


def head(path: Path, size: int = 4096) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(size).lstrip()
