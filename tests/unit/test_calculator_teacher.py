"""The calculator stand-in teacher: critiques that recompute, filtered by the labels like the LLM's."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from deepcritic import grader
from deepcritic.generation import BackendConfig
from deepcritic.records import Solution, read_solutions, write_jsonl
from deepcritic.stages.seed import SeedConfig, run
from deepcritic.stages.seed.calculator import critique_record, critique_step

PROBLEM = "Natalia sold clips to 48 friends in April and half as many in May. How many in all?"
STEPS = ["Natalia sold 48/2 = 24 clips in May.", "Natalia sold 48+24 = 72 clips in all."]


def _solution(steps: list[str], label: int, sid: str = "s") -> Solution:
    return Solution(id=sid, problem=PROBLEM, steps=steps, label=label, source="test")


def test_step_critique_recomputes_and_checks_the_other_way() -> None:
    body, verdict = critique_step("Natalia sold 48/2 = 25 clips in May.")
    assert verdict == -1
    assert "Recompute 48/2 = 24; the step writes 25, which does not match." in body
    assert "Check the other way: 25 * 2 = 50, not 48." in body
    assert body.endswith("The step is wrong: 48/2 is 24, not 25.")
    body, verdict = critique_step(STEPS[1])
    assert verdict == 1 and "72 - 24 = 48, as it should." in body
    assert critique_step("Let x be the clips sold in May.")[1] == 1


def test_kept_critiques_parse_back_to_the_label_with_the_one_grader() -> None:
    wrong = _solution([STEPS[0], "Natalia sold 48+24 = 82 clips in all."], 1)
    for sol in (_solution(STEPS, grader.NO_ERROR), wrong):
        rec = critique_record(sol)
        assert rec["status"] == "kept", rec["reason"]
        text = rec["messages"][-1]["content"]
        assert grader.judge(text, strict=True) == sol.label
        assert text.endswith(grader.render_answer(grader.label_to_step(sol.label)))


def test_verdicts_that_contradict_the_label_are_dropped_with_a_reason() -> None:
    blind = _solution(["Natalia sold 25 clips in May.", STEPS[1]], 0)  # no equation to check
    assert critique_record(blind)["reason"] == "calculator_blind"
    mislabelled = _solution(STEPS, 1)  # step 2 labelled wrong but it recomputes
    assert critique_record(mislabelled)["reason"] == "calculator_disagrees"
    assert critique_record(mislabelled)["messages"] is None


def test_seed_stage_with_the_calculator_needs_no_model(tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    sols = [
        _solution(STEPS, grader.NO_ERROR, "a-ok"),
        _solution([STEPS[0], "Natalia sold 48+24 = 70 clips in all."], 1, "a-err1"),
        _solution(["Natalia sold 25 clips in May.", STEPS[1]], 0, "b-err0"),
    ]
    write_jsonl(data, sols)
    config = SeedConfig(
        teacher="calculator",
        data=str(data),
        out_dir=str(tmp_path / "seed"),
        generation=BackendConfig(model="no-such-model"),  # never loaded
        one_per_problem=False,
        tracking_uri="off",
    )
    result = run(config)
    assert result.kept == 2
    assert result.counts["total.filter.dropped.calculator_blind"] == 1
    assert len(read_solutions(data)) == 3
    rows = [json.loads(x) for x in (tmp_path / "seed" / "sft.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["a-err1", "a-ok"]
    assert Counter(r["messages"][-1]["role"] for r in rows) == Counter({"assistant": 2})
    # a rerun finds every solution done and writes the same SFT data
    again = run(config)
    assert again.counts["shard.already_done"] == 3 and again.kept == 2
