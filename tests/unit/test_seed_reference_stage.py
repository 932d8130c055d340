"""A tiny seed run in ``prompt_set: reference`` with a scripted teacher: the authors' prompts go
out, their verdict format is read and filtered, and the kept records are the authors' SFT format
with the evaluation prompt (process_formatted_sft_data.py, run on the same critiques)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from deepcritic import grader, reference
from deepcritic.config import from_dict
from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.records import DataError, Solution, write_jsonl
from deepcritic.stages.seed import SeedConfig, run
from deepcritic.stages.seed import reference_set as rs
from deepcritic.stages.seed.store import load_records, shard_path
from support import reference_seed as authors
from support.paths import REFERENCE_DIR
from support.reference_cache import seed_reference_cache
from support.scripted_backend import ScriptedBackend
from support.scripted_backend import toy_solution as sol

pytestmark = pytest.mark.skipif(not authors.PRESENT, reason=f"{REFERENCE_DIR} not present")


def ref_file(path: str) -> str:
    with open(REFERENCE_DIR / path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(autouse=True)
def _seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if authors.PRESENT:
        seed_reference_cache(tmp_path / "cache", monkeypatch)


_TAG = re.compile(r"\[item (\w+), step (\d+)\]")


def reference_substep(prompt: Prompt) -> str:
    """Which of the authors' templates a prompt was rendered from (its text up to the first field)."""
    user = prompt[1]["content"]
    for sub, path in (("initial", rs.INITIAL), ("indepth", rs.INDEPTH), ("merge", rs.MERGE)):
        if user.startswith(ref_file(path).split("{", 1)[0]):
            return sub
    raise AssertionError(f"not a reference seed prompt: {user[:80]!r}")


def sample(sub: str, pid: str, k: int, v: int) -> str:
    tag = f"[item {pid}, step {k}]"
    if sub == "initial":
        return f"**Critique of Step {k}**: {tag} 2 + 2 = 4.\n\n**Judgement**: The correctness of Step {k} is: \\boxed{{{v}}}"  # noqa: E501
    if sub == "indepth":
        return f"**Critique of the critique of Step {k}**: {tag} again.\n\n**Judgement**: #### The correctness of Step {k} is: \\boxed{{{v}}}"  # noqa: E501
    return f"\n**Critique of Step {k}**: {tag} First... wait, let me check again.\n\n**Judgement**: The correctness of Step {k} is: \\\\boxed{{{v}}}\n"  # noqa: E501


class ReferenceTeacher:
    """Right by default; ``script`` overrides (pid, step, sub-step). The merge prompt carries no
    problem: the item is read from the tag the scripted critiques carry."""

    def __init__(self, solutions: list[Solution], script: dict | None = None) -> None:
        self.labels = {s.id: s.label for s in solutions}
        self.script = script or {}

    def __call__(self, prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
        sub = reference_substep(prompt)
        user = prompt[1]["content"]
        if sub == "merge":
            pid, step = _TAG.findall(user)[-1]
            k = int(step)
        else:
            pid = re.findall(r"Problem (\w+):", user)[-1]
            k = int(re.findall(r"Step (\d+)", user)[-1])
        if (pid, k, sub) in self.script:
            return list(self.script[(pid, k, sub)])
        v = -1 if grader.step_to_label(k) == self.labels[pid] else 1
        return [sample(sub, pid, k, v)] * params.n


def make_config(tmp_path: Path, solutions: list[Solution], **kw: object) -> SeedConfig:
    data = tmp_path / "solutions.jsonl"
    write_jsonl(data, solutions)
    base: dict[str, object] = dict(
        data=str(data),
        out_dir=str(tmp_path / "out"),
        tracking_uri="off",
        chunk_size=2,
        prompt_set="reference",
        indepth={"n": 2},
    )
    base.update(kw)
    return from_dict(SeedConfig, base)


def _authors_sft(s: Solution, record: dict[str, Any]) -> dict[str, Any]:
    """process_formatted_sft_data.py on this solution and the teacher's merged critiques."""
    merged = [rs.completion_text(st["merged"]["text"]) for st in record["steps"]]
    item = {
        "problem": s.problem,
        "steps": [{"text": t} for t in s.steps],
        "merged_critiques": merged,
        "critic_labels": [st["expected"] for st in record["steps"]],
        "critique_correctness": [True] * len(merged),
    }
    return authors.sft_example(ref_file(reference.CRITIQUE_TEMPLATE), item)


def test_reference_seed_run_keeps_the_authors_format(tmp_path: Path) -> None:
    sols = [sol("a", 1), sol("b", -1, 2), sol("c", 0), sol("d", -1, 2), sol("e", -1, 2)]
    script = {
        ("c", 1, "indepth"): [sample("indepth", "c", 1, 1)] * 2,  # never says "wrong": dropped
        ("d", 2, "merge"): [sample("merge", "d", 2, -1)],  # the merge contradicts the label
        ("e", 1, "initial"): ["I am not sure about [item e, step 1]."],  # no verdict: forced
    }
    backend = ScriptedBackend(ReferenceTeacher(sols, script))
    cfg = make_config(tmp_path, sols)
    result = run(cfg, backend)
    records = {r["id"]: r for r in load_records(shard_path(cfg.out_dir, 0, 1))}
    assert {i: r["reason"] for i, r in records.items()} == {
        "a": None,
        "b": None,
        "c": "indepth_mismatch",
        "d": "merge_mismatch",
        "e": None,
    }
    assert result.kept == 3 and result.forced_verdicts == 1
    rows = [json.loads(x) for x in Path(result.sft_path or "").read_text().splitlines()]
    by_id = {s.id: s for s in sols}
    assert sorted(r["id"] for r in rows) == ["a", "b", "e"]
    for row in rows:
        s, record = by_id[row["id"]], records[row["id"]]
        assert row["prompt_set"] == record["prompt_set"] == "reference"
        assert row["messages"] == record["messages"] == _authors_sft(s, record)["messages"]
        assert row["messages"][:2] == reference.reference_critique_messages(s.problem, s.steps)
        assert grader.is_match(grader.judge(row["messages"][-1]["content"], strict=True), s.label)
    # every prompt is the authors': Qwen's system message, a reference template
    sent = [p for prompts, _ in backend.generate_calls for p in prompts]
    assert {p[0]["content"] for p in sent} == {reference.QWEN_SYSTEM}
    merges = [p for p in sent if reference_substep(p) == "merge"]
    assert merges and not any(s.problem in p[1]["content"] for p in merges for s in sols)
    # the forced verdict continues in the authors' verdict line
    ((prefills, choices),) = backend.choose_calls
    assert prefills[0][-1]["content"].endswith(rs.verdict_prefix(0)) and choices == ["1}", "-1}"]
    assert records["e"]["steps"][0]["initial"]["text"].endswith(rs.verdict_prefix(0) + "1}")


def test_a_resume_never_mixes_prompt_sets(tmp_path: Path) -> None:
    sols = [sol("a", 1)]
    cfg = make_config(tmp_path, sols, mode="generate")
    run(cfg, ScriptedBackend(ReferenceTeacher(sols)))
    other = make_config(tmp_path, sols, mode="generate", prompt_set="deepcritic")
    with pytest.raises(DataError, match="prompt_set 'reference', this run uses 'deepcritic'"):
        run(other, ScriptedBackend(ReferenceTeacher(sols)))
    final = make_config(tmp_path, sols, mode="finalize", prompt_set="deepcritic")
    with pytest.raises(DataError, match="prompt_set"):
        run(final)
