"""MR-GSM8K (Zeng et al. 2023) as processed by DeepCritic (``data/Mr-GSM8K/processed_test.json`` in
the RUCBM/DeepCritic repository).

That file is a JSON array in the ProcessBench layout::

    {"id": 0, "generator": "", "problem": "...",
     "steps": ["Step 1:  He drank 2*8=<<2*8=16>>16 ounces", "Step 2: ...", "Step 3: #### 48"],
     "final_answer_correct": true, "label": -1}

The steps already carry a ``Step i:`` prefix, which is stripped (``prompting.strip_step_prefix``)
so prompts never number a step twice. A step that is empty once its prefix is gone (item 98 of the
released file: ``"Step 1: "``) is kept as an empty step: labels index steps by position, so dropping
it would shift every later step. Its index is recorded in ``meta["empty_steps"]``.

The released step texts are kept, byte for byte, in ``meta["raw_steps"]`` (:data:`RAW_STEPS`): the
authors' prompt (``prompt_set: reference``, :func:`deepcritic.reference.released_steps`) numbers
those as their ``eval.py`` does (a step containing ``"Step "`` is left as it is), while the
project's prompts use the cleaned ``steps``. Also accepted: JSONL with the same fields,
``question`` in place of ``problem``, a missing ``final_answer_correct`` (kept as unknown) and an
optional ``gold_answer``. Integer ids become ``mrgsm8k-<id>`` so they cannot collide with other
sources; a predictions file may still use the file's own ids (:func:`deepcritic.scoring.record_keys`).
"""

from __future__ import annotations

from pathlib import Path

from deepcritic.data.rows import Row, fail, load_json_file
from deepcritic.prompting import strip_step_prefix
from deepcritic.records import LoadReport, Solution

SOURCE = "mrgsm8k"
RAW_STEPS = "raw_steps"  # meta key: the step texts exactly as released


def to_solution(row: Row) -> Solution:
    """Validate one MR-GSM8K item and strip the ``Step i:`` prefixes of its steps."""
    data = row.data
    if not isinstance(data, dict):
        raise fail(row, None, f"expected a JSON object, got {type(data).__name__}")
    item = dict(data)
    if "problem" not in item and "question" in item:
        item["problem"] = item.pop("question")
    rid = item.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool):
        item["id"] = f"{SOURCE}-{rid}"
    steps = item.get("steps")
    if isinstance(steps, list):
        item["steps"] = [strip_step_prefix(s).strip() if isinstance(s, str) else s for s in steps]
        meta = item.get("meta")
        extra: dict[str, object] = {RAW_STEPS: list(steps)}
        empty = [i for i, s in enumerate(item["steps"]) if s == ""]
        if empty:
            extra["empty_steps"] = empty
        item["meta"] = {**(meta if isinstance(meta, dict) else {}), **extra}
    item["source"] = SOURCE
    return Solution.from_dict(item, source=row.source, line=row.line)


def load_mrgsm8k(
    path: str | Path, *, limit: int | None = None, skip_invalid: bool = False
) -> tuple[list[Solution], LoadReport]:
    """Load DeepCritic's processed MR-GSM8K file (JSON array or JSONL)."""
    return load_json_file(
        path, "MR-GSM8K", to_solution, desc=SOURCE, limit=limit, skip_invalid=skip_invalid
    )
