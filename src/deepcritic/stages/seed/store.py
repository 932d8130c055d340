"""Shard assignment and the per-shard JSONL store that makes the stage resumable.

Each shard appends one line per finished solution to ``shards/critiques-IIIII-of-NNNNN.jsonl``,
flushed and fsynced, so a kill loses at most the chunk in flight. A rerun reads the ids already
there and skips them. A partly written last line (killed mid-write) is cut off on resume; a
corrupt line anywhere else is an error naming the line. When a shard has processed all its
solutions it writes ``...done.json`` with its counts; finalize waits for every marker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from deepcritic.records import DataError, Solution

log = logging.getLogger(__name__)


def shard_of(solution_id: str, total: int) -> int:
    """Stable shard index of an id (independent of input order, so resumes stay correct)."""
    digest = hashlib.sha256(solution_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total


def select_shard(solutions: Sequence[Solution], index: int, total: int) -> list[Solution]:
    return [s for s in solutions if shard_of(s.id, total) == index]


def shard_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "shards"


def shard_path(out_dir: str | Path, index: int, total: int) -> Path:
    return shard_dir(out_dir) / f"critiques-{index:05d}-of-{total:05d}.jsonl"


def done_path(out_dir: str | Path, index: int, total: int) -> Path:
    return shard_path(out_dir, index, total).with_suffix(".done.json")


def _parse_line(raw: bytes, path: Path, n: int) -> dict[str, Any]:
    try:
        row = json.loads(raw)
    except ValueError as e:
        raise DataError(str(path), n, None, f"corrupt record ({e})") from e
    if not isinstance(row, dict) or "id" not in row:
        raise DataError(str(path), n, "id", "record is not an object with an id")
    return row


def load_records(path: Path) -> list[dict[str, Any]]:
    """Records already written to a shard file. A torn last line (no newline) is cut off."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    body, sep, tail = data.rpartition(b"\n")
    lines = body.split(b"\n") if sep else []
    records = [_parse_line(raw, path, n) for n, raw in enumerate(lines, 1) if raw.strip()]
    if tail.strip():
        try:
            records.append(_parse_line(tail, path, len(lines) + 1))
            with open(path, "ab") as f:  # complete but unterminated: terminate it
                f.write(b"\n")
        except DataError as e:
            log.warning("%s: cutting off a partly written last line (%s)", path, e.reason)
            with open(path, "r+b") as f:
                f.truncate(len(body) + len(sep))
    return records


def check_unique(records: Iterable[dict[str, Any]], source: str) -> set[str]:
    seen: set[str] = set()
    for n, row in enumerate(records, start=1):
        rid = str(row["id"])
        if rid in seen:
            raise DataError(source, n, "id", f"duplicate record for id {rid!r}")
        seen.add(rid)
    return seen


def check_prompt_set(records: Iterable[dict[str, Any]], prompt_set: str, source: str) -> None:
    """Every record must have been written with this run's ``prompt_set`` (records before the
    field existed are ``deepcritic``): a resume never mixes two formats in one SFT file."""
    for n, row in enumerate(records, start=1):
        found = row.get("prompt_set", "deepcritic")
        if found != prompt_set:
            raise DataError(
                source,
                n,
                "prompt_set",
                f"record {row['id']!r} was written with prompt_set {found!r}, this run uses "
                f"{prompt_set!r}: keep the prompt_set or use another out_dir",
            )


def append_records(f: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append whole lines and make them durable before returning."""
    for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())


def write_atomic(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    write_atomic(path, "".join(line + "\n" for line in lines))
    return len(lines)
