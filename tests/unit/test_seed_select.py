"""Seed input selection as the reference does it (QC rows out, one solution per problem, a
paper-sized cap), every skip counted; and the teacher sees the whole solution."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from deepcritic.config import from_dict
from deepcritic.data.prm800k import load_prm800k
from deepcritic.records import Solution, write_jsonl
from deepcritic.stages.seed import SeedConfig, run
from deepcritic.stages.seed.select import select_inputs
from deepcritic.stages.seed.teacher import indepth_prompt, initial_prompt, merge_prompt
from support.scripted_backend import ScriptedBackend, SeedTeacher

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def _sol(sid: str, problem: str, label: int = -1, **meta: object) -> Solution:
    steps = ["Let x = 2.", "Then 2x = 4.", "So the answer is 4."]
    return Solution(sid, problem, steps, label, source="prm800k:phase2_train", meta=dict(meta))


def _config(tmp_path: Path, solutions: list[Solution], **kw: object) -> SeedConfig:
    data = tmp_path / "in.jsonl"
    write_jsonl(data, solutions)
    base: dict[str, object] = {"data": str(data), "out_dir": str(tmp_path / "out")}
    return from_dict(SeedConfig, {**base, "tracking_uri": "off", **kw})


def test_two_solutions_of_one_problem_keep_one_and_count_it(tmp_path: Path) -> None:
    sols = [_sol("p1-a", "What is 2x?"), _sol("p1-b", "What is 2x?", 1), _sol("p2", "Other?")]
    counts: Counter[str] = Counter()
    kept = select_inputs(sols, _config(tmp_path, sols), counts)
    assert len(kept) == 2 and kept[-1].id == "p2"
    assert counts["input.skipped.same_problem"] == 1 and counts["input.problems"] == 2
    # the pick is a stable function of (seed, id): any order of the input gives the same one
    again = select_inputs(list(reversed(sols)), _config(tmp_path, sols), Counter())
    assert {s.id for s in again} == {s.id for s in kept}


def test_quality_control_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    sols = [_sol("qc", "Q?", quality_control=True), _sol("ok", "P?", quality_control=False)]
    counts: Counter[str] = Counter()
    assert [s.id for s in select_inputs(sols, _config(tmp_path, sols), counts)] == ["ok"]
    assert counts["input.skipped.quality_control"] == 1
    keep_qc = _config(tmp_path, sols, skip_quality_control=False)
    assert len(select_inputs(sols, keep_qc, Counter())) == 2


def test_max_problems_caps_problems_not_rows(tmp_path: Path) -> None:
    sols = [_sol(f"s{i}", f"Problem {i % 5}?") for i in range(20)]
    cfg = _config(tmp_path, sols, one_per_problem=False, max_problems=3)
    counts: Counter[str] = Counter()
    kept = select_inputs(sols, cfg, counts)
    assert len({s.problem for s in kept}) == 3 and len(kept) == 12
    assert counts["input.skipped.over_max_problems"] == 8
    assert [s.id for s in kept] == sorted((s.id for s in kept), key=lambda x: int(x[1:]))
    with pytest.raises(ValueError, match="max_problems"):
        _config(tmp_path, sols, max_problems=-1)


def test_prm800k_quality_control_flag_reaches_the_seed_stage(tmp_path: Path) -> None:
    row = json.loads((FIXTURES / "prm800k_sample.jsonl").read_text().splitlines()[0])
    rows = [row, {**row, "is_quality_control_question": True}]
    raw = tmp_path / "phase2_train.jsonl"
    raw.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sols, report = load_prm800k(raw)
    assert [s.meta["quality_control"] for s in sols] == [False, True]
    cfg = _config(tmp_path, sols, one_per_problem=False)
    counts: Counter[str] = Counter()
    assert [s.id for s in select_inputs(sols, cfg, counts)] == [sols[0].id]
    assert counts["input.skipped.quality_control"] == 1
    # the stage reads the prepared JSONL: raw PRM800K is a clear error naming the field
    with pytest.raises(ValueError, match=r"data: .*raw PRM800K.*deepcritic prepare"):
        run(replace(cfg, data=str(raw)), ScriptedBackend(SeedTeacher(sols)))


def test_selection_counts_reach_the_stage_result(tmp_path: Path) -> None:
    sols = [
        Solution(f"{p}-{k}", f"Problem {p}: add things.", ["1 + 1 = 2.", "2 + 2 = 4."], -1)
        for p in ("a", "b", "c")
        for k in range(2)
    ]
    cfg = _config(tmp_path, sols, max_problems=2)
    teacher = SeedTeacher([_sol(p, "", -1) for p in "abc"])  # the script keys on the problem
    result = run(cfg, ScriptedBackend(teacher))
    c = result.counts
    assert c["input.skipped.same_problem"] == 3 and c["input.skipped.over_max_problems"] == 1
    assert c["input.used"] == 2 and result.kept == 2


def test_teacher_prompts_show_the_whole_solution_and_the_transition_rule() -> None:
    s = Solution("x", "Compute 3 * 4 + 1.", ["3 * 4 = 12.", "Now add one.", "12 + 1 = 13."], -1)
    prompts = [initial_prompt(s, 0), indepth_prompt(s, 0, "first"), merge_prompt(s, 0, "a", "b")]
    for prompt in prompts:
        user = prompt[-1]["content"]
        assert "Step 3: 12 + 1 = 13." in user  # later steps are shown too (paper)
        assert "[Step under review]\nStep 1: 3 * 4 = 12." in user
    for prompt in prompts[:2]:
        assert "irrelevant transition" in prompt[-1]["content"]
        assert "counts as correct" in prompt[-1]["content"]
