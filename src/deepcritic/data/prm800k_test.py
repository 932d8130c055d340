"""PRM800K test as the DeepCritic authors evaluate it (``prm800k-test:<path or URI>``).

The authors score ``data/prm800k/phase2_test.json`` of RUCBM/DeepCritic (their
``scripts/run_eval.sh``): a JSON array in the ProcessBench layout (``problem``, ``steps``,
``label``), committed at the pinned commit (git blob :data:`AUTHORS_BLOB`) but with no script
saying how it was made from OpenAI's ``phase2_test.jsonl``. This loader reads either:

* **the authors' file** (text starting with ``[``): items taken as they are, steps verbatim (their
  ``eval.py`` numbers them), ``final_answer_correct`` and ``generator`` optional, ids
  ``prm800k-test-<its id>`` (the item index when it has none), the file's own id kept in
  ``meta["source_id"]`` so predictions keyed by it score;
* **OpenAI's raw ``phase2_test.jsonl``**: the derivation below, our best reconstruction of theirs
  (docs/benchmark-data.md says which parts are documented and which are guesses).

Derivation, per raw line (the labelling rule of :mod:`deepcritic.data.prm800k`: ratings +1 and 0
count as correct, the label is the first step rated -1, ``give_up``/``bad_problem`` and screening
rows are dropped), then, counted in the load report:

* quality-control rows are dropped (the same solutions are served to every labeller; the authors'
  seed data skips them too);
* a solution already seen (same problem and steps, i.e. another labeller's trajectory of it) is
  dropped: the first labeller's trajectory in file order is kept;
* a solution with no step rated -1 is kept only when its final answer is right
  (``pre_generated_answer`` equals the ground truth): ProcessBench's correct items all are;
* the whole pre-generated solution is kept past the first error (as in ProcessBench and in the
  authors' processed training file, whose steps after the error carry no rating);
  ``cut_at_error=True`` keeps only the steps up to the first error instead.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from deepcritic.data import prm800k
from deepcritic.data.rows import Row, SkipRow, fail, head, load_json_file, require
from deepcritic.records import NO_ERROR, LoadReport, Solution

log = logging.getLogger(__name__)

SOURCE = "prm800k-test"
AUTHORS_PATH = "data/prm800k/phase2_test.json"  # in RUCBM/DeepCritic
AUTHORS_BLOB = "3a61a76c490734d96da764d76b487087b09cd1e6"  # git blob id at 14ce58e .. 6a0cde9


def git_blob_id(path: Path) -> str:
    """The id git gives the file's bytes (``git hash-object``): compared with :data:`AUTHORS_BLOB`."""
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _note_provenance(path: Path) -> None:
    blob = git_blob_id(path)
    if blob == AUTHORS_BLOB:
        log.info("%s: the authors' %s (git blob %s)", path, AUTHORS_PATH, blob[:12])
    else:
        log.warning(
            "%s: git blob %s is not the authors' %s (%s): read as a file in their layout",
            path,
            blob[:12],
            AUTHORS_PATH,
            AUTHORS_BLOB[:12],
        )


def processed_item(row: Row) -> Solution:
    """One item of the authors' processed file (ProcessBench layout, steps verbatim)."""
    data = row.data
    require(row, data, "problem", str)
    own = data.get("id") if isinstance(data, dict) else None
    if own is None:
        own = row.source.rsplit(" ", 1)[-1]  # "<file> item <i>"
    elif isinstance(own, bool) or not isinstance(own, (str, int)):
        raise fail(row, "id", f"must be a string or an integer, got {own!r:.60}")
    fac = data.get("final_answer_correct")
    item = {
        **{k: v for k, v in data.items() if k not in ("source", "meta", "generator")},
        "id": f"{SOURCE}-{own}",
        "generator": data.get("generator") if isinstance(data.get("generator"), str) else "",
        "final_answer_correct": fac if isinstance(fac, bool) else None,
        "source": SOURCE,
        "meta": {"source_id": own},
    }
    return Solution.from_dict(item, source=row.source, line=row.line)


def _answer_right(solution: Solution, row: Row) -> bool:
    question = row.data["question"]
    answer = question.get("pre_generated_answer")
    if solution.gold_answer is None or not isinstance(answer, str):
        return False
    from deepcritic.answers import answers_match

    return answers_match(answer, solution.gold_answer)


def raw_converter(stem: str, *, cut_at_error: bool = False) -> Callable[[Row], Solution]:
    """The derivation of the module docstring, as a row converter (it remembers seen solutions)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()

    def convert(row: Row) -> Solution:
        sol = prm800k.to_solution(row, stem)
        if sol.meta.get("quality_control"):
            raise SkipRow("quality-control question")
        key = (sol.problem, tuple(s.strip() for s in sol.steps))
        if key in seen:
            raise SkipRow("solution already labelled (another labeller)")
        seen.add(key)
        if sol.label == NO_ERROR and not _answer_right(sol, row):
            raise SkipRow("no step rated -1 but the final answer is not the ground truth")
        steps = sol.steps[: sol.label + 1] if cut_at_error and sol.has_error else sol.steps
        fac = sol.final_answer_correct if sol.has_error else True
        return replace(sol, steps=list(steps), source=SOURCE, final_answer_correct=fac)

    return convert


def load_prm800k_test(
    path: str | Path,
    *,
    limit: int | None = None,
    skip_invalid: bool = False,
    cut_at_error: bool = False,
) -> tuple[list[Solution], LoadReport]:
    """The authors' processed file as it is, or the raw ``phase2_test.jsonl`` derived as theirs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PRM800K test file {path} does not exist")
    if head(path, 64).startswith("["):
        _note_provenance(path)
        convert: Callable[[Row], Solution] = processed_item
    else:
        convert = raw_converter(path.stem, cut_at_error=cut_at_error)
    return load_json_file(
        path, "PRM800K test", convert, desc=SOURCE, limit=limit, skip_invalid=skip_invalid
    )
