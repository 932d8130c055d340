"""Critique-guided refinement: plans from critiques, refine prompts, w->c / c->w bookkeeping."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from deepcritic.critic import refine
from deepcritic.critic.refine import (
    Attempt,
    Plan,
    RefineConfig,
    RefineTrace,
    RoundRecord,
    make_attempt,
    plan_refinement,
    refine_messages,
    refine_prefill,
    summarize,
)
from deepcritic.data.problems import Problem
from deepcritic.generation import Prompt
from support.scripted_backend import ScriptedBackend

SECTIONED = (
    "**Critique of Step 1**\n1+1 is 2, fine.\n**Judgement**: \\boxed{1}\n\n"
    "**Critique of Step 2**\n2 is not 3.\n**Judgement**: \\boxed{-1}\n\n"
    "**Answer**: \\boxed{2}"
)
STEPS = ["1+1=2.", "so the answer is \\boxed{3}"]


# --------------------------------------------------------------------------- plans


def test_plan_critic_says_all_right() -> None:
    assert plan_refinement(STEPS, "All good. **Answer**: \\boxed{-1}", 100) == (
        -1,
        Plan("accepted"),
    )


def test_plan_unparsable_critic_keeps_the_solution() -> None:
    assert plan_refinement(STEPS, "I am not sure what to say.", 100) == (None, Plan("unparsable"))
    assert plan_refinement(STEPS, "**Answer**: \\boxed{two}", 100)[1].action == "unparsable"
    assert plan_refinement(STEPS, "**Answer**: \\boxed{0}", 100)[1].action == "unparsable"


def test_plan_step_beyond_the_solution() -> None:
    assert plan_refinement(STEPS, "**Answer**: \\boxed{3}", 100) == (2, Plan("out_of_range"))


def test_plan_without_steps() -> None:
    assert plan_refinement([], "**Answer**: \\boxed{1}", 100) == (None, Plan("no_steps"))


def test_plan_uses_the_critique_of_the_named_step() -> None:
    label, plan = plan_refinement(STEPS, SECTIONED, 1000)
    assert label == 1 and plan.action == "refined" and plan.error_index == 1
    assert plan.feedback is not None and plan.feedback.startswith("2 is not 3.")
    assert "1+1 is 2" not in plan.feedback


def test_plan_falls_back_to_the_whole_critique_and_cuts_from_the_end() -> None:
    critique = "Step one adds wrongly: 1+1 is not 3. **Answer**: \\boxed{1}"
    _, plan = plan_refinement(STEPS, critique, 1000)
    assert plan == Plan("refined", 0, critique)
    _, short = plan_refinement(STEPS, critique, 20)
    assert short.feedback == critique[-20:]


# --------------------------------------------------------------------------- prompts


def test_refine_prefill_keeps_steps_before_the_error() -> None:
    assert refine_prefill(STEPS, 0) == "Step 1:"
    assert refine_prefill(["a", "Step 2: b", "c"], 2) == "Step 1: a\n\nStep 2: b\n\nStep 3:"


def test_refine_messages() -> None:
    plan = Plan("refined", 1, "2 is not 3.")
    msgs = refine_messages("What is 1+1?", STEPS, plan)
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    user = msgs[1]["content"]
    assert "What is 1+1?" in user and "Step 2: so the answer is \\boxed{3}" in user
    assert "2 is not 3." in user and "{{" not in user
    assert msgs[2]["content"] == "Step 1: 1+1=2.\n\nStep 2:"
    with pytest.raises(ValueError, match="accepted"):
        refine_messages("q", STEPS, Plan("accepted"))


def test_make_attempt_splits_and_grades() -> None:
    a = make_attempt("Step 1: 1+1=2.\nStep 2: so \\boxed{2}", "2")
    assert a.steps == ["1+1=2.", "so \\boxed{2}"] and a.answer == "2" and a.correct
    b = make_attempt("Step 1:", "2")
    assert b.steps == [] and b.answer is None and not b.correct


# --------------------------------------------------------------------------- transitions


def _att(correct: bool) -> Attempt:
    return Attempt("", ["x"], "1" if correct else "0", correct)


def _trace(corrects: Sequence[bool], actions: Sequence[str]) -> RefineTrace:
    t = RefineTrace("i", "q", "1", [_att(c) for c in corrects])
    t.rounds = [RoundRecord("", None, Plan(a)) for a in actions]  # type: ignore[arg-type]
    return t


def test_summarize_counts_w2c_and_c2w() -> None:
    traces = [
        _trace([False, True], ["refined", "accepted"]),  # w -> c
        _trace([True, False], ["refined", "accepted"]),  # c -> w
        _trace([False, False, True], ["refined", "refined"]),  # w -> w -> c (two rounds)
        _trace([True], ["accepted"]),  # c, untouched
        _trace([False], ["unparsable"]),  # w, untouched
        _trace([True], ["no_steps"]),
    ]
    s = summarize(traces, "critic", "m", rounds=2)
    assert (s.w2c, s.c2w, s.refined, s.refined_initially_wrong) == (2, 1, 3, 2)
    assert s.accuracy_before == pytest.approx(3 / 6) and s.accuracy_after == pytest.approx(4 / 6)
    assert s.accuracy_by_round == [pytest.approx(3 / 6), pytest.approx(3 / 6), pytest.approx(4 / 6)]
    assert s.actions == {
        "accepted": 1,
        "refined": 3,
        "unparsable": 1,
        "out_of_range": 0,
        "no_steps": 1,
    }
    assert s.metrics()["w2c"] == 2.0 and s.metrics()["first_round_refined"] == 3.0
    with pytest.raises(ValueError):
        summarize([], "critic", "m", 1)


def test_config_validation_and_presets() -> None:
    from importlib import resources

    from deepcritic.config import load_config

    with pytest.raises(ValueError, match="rounds"):
        RefineConfig(rounds=0)
    for preset in ("paper", "local", "tiny"):
        path = resources.files("deepcritic.configs").joinpath(f"refine.{preset}.yaml")
        cfg = load_config(RefineConfig, str(path))
        assert cfg.rounds >= 1 and cfg.baseline_critic.model


# --------------------------------------------------------------------------- run, scripted models


def scripted(script: Callable[[Prompt], str]) -> ScriptedBackend:
    """Each prompt's completions: ``script(prompt)``, once per requested sample."""
    return ScriptedBackend(lambda prompt, params: [script(prompt)] * params.n)


def prompts_of(backend: ScriptedBackend) -> list[Prompt]:
    return [p for prompts, _ in backend.generate_calls for p in prompts]


def _generator(prompt: Prompt) -> str:
    user = prompt[1]["content"]
    rewrite = "reviewer" in user
    if "Problem A" in user:  # wrong at step 2, fixed by the rewrite
        return " 1+1 = 2, so \\boxed{2}" if rewrite else " 1+1=2.\nStep 2: so \\boxed{3}"
    if "Problem B" in user:  # right, but broken by the rewrite
        return " \\boxed{8}" if rewrite else " \\boxed{7}"
    return ""  # Problem C: no steps at all


def _critic(prompt: Prompt) -> str:
    user = prompt[1]["content"]
    if "\\boxed{3}" in user:
        return SECTIONED
    if "\\boxed{7}" in user:
        return "Step 1 is wrong. **Answer**: \\boxed{1}"
    return "**Answer**: \\boxed{-1}"


def _problems() -> list[Problem]:
    return [
        Problem("a", "Problem A", "2"),
        Problem("b", "Problem B", "7"),
        Problem("c", "Problem C", "1"),
    ]


def test_run_critic_vs_baseline(tmp_path: Path, no_mlflow: None) -> None:
    gen = scripted(_generator)
    backends = {
        "generator": gen,
        "critic": scripted(_critic),
        "baseline": scripted(lambda p: "**Answer**: \\boxed{-1}"),
    }
    cfg = RefineConfig(rounds=2, out=str(tmp_path / "r"), tracking_uri="off")
    result = refine.run(cfg, problems=_problems(), backends=backends)
    crit, base = result.summaries["critic"], result.summaries["baseline"]
    assert (crit.w2c, crit.c2w, crit.refined, crit.refined_initially_wrong) == (1, 1, 2, 1)
    assert crit.accuracy_before == pytest.approx(1 / 3) == crit.accuracy_after
    assert crit.actions["no_steps"] == 1 and crit.accuracy_by_round == [pytest.approx(1 / 3)] * 3
    assert (base.w2c, base.c2w, base.refined, base.actions["accepted"]) == (0, 0, 0, 2)
    # The rewrite of A kept step 1, and was told about step 2 with the critique of step 2 only.
    rewrite_a = next(p for p in prompts_of(gen)[3:] if "Problem A" in p[1]["content"])
    assert rewrite_a[2]["content"] == "Step 1: 1+1=2.\n\nStep 2:"
    assert (
        "2 is not 3." in rewrite_a[1]["content"] and "1+1 is 2, fine" not in rewrite_a[1]["content"]
    )
    assert (
        len(prompts_of(gen)) == 3 + 2
    )  # initial solutions once (shared by both critics) + 2 rewrites
    lines = Path(result.traces_paths["critic"]).read_text().splitlines()
    assert len(lines) == 3 and '"action": "refined"' in lines[0]
    assert Path(result.plot_path).read_bytes()[:4] == b"\x89PNG"
    assert result.metrics()["critic/c2w"] == 1.0
    assert not any(b.closed for b in backends.values())  # given backends are the caller's
