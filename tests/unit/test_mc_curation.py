"""Monte Carlo annotation curated as the reference does: answerless wrong samples dropped, one
correct solution per problem, truncated rollouts no evidence of an error, invalid NuminaMath rows
skipped, every drop counted (and in MLflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic.data.problems import load_problems
from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.records import DataError, read_solutions
from deepcritic.stages.mc import MCConfig, run
from support.scripted_backend import ScriptedBackend

PROBLEM = {
    "id": "eggs",
    "problem": "16 eggs, 3 eaten, 4 baked, $2 each. Revenue?",
    "gold_answer": "18",
}
RIGHT = " 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 18 dollars.\nStep 3: So \\boxed{18}."
WRONG = " 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 20 dollars BAD.\nStep 3: So \\boxed{20}."
NO_ANSWER = " 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 20 dollars BAD.\nStep 3: I am done."


def _problems(tmp_path: Path, rows: list[dict[str, object]]) -> str:
    path = tmp_path / "problems.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rollouts_reach_gold(prompt: Prompt, n: int) -> list[str | Completion]:
    answer = "20" if "BAD" in prompt[-1]["content"] else "18"
    return [f" then \\boxed{{{answer}}}"] * n


def _config(tmp_path: Path, samples: int, **kw: object) -> MCConfig:
    base: dict[str, object] = {
        "problems": _problems(tmp_path, [PROBLEM]),
        "out_dir": str(tmp_path / "out"),
        "samples": samples,
        "rollouts": 2,
        "tracking_uri": "off",
    }
    return MCConfig(**{**base, **kw})  # type: ignore[arg-type]


def _scripted(samples: list[str]) -> ScriptedBackend:
    def respond(prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
        if prompt[-1]["content"] == "Step 1:":
            return list(samples)
        return _rollouts_reach_gold(prompt, params.n)

    return ScriptedBackend(respond)


def test_answerless_wrong_sample_is_dropped_and_counted(tmp_path: Path) -> None:
    result = run(_config(tmp_path, 3), _scripted([RIGHT, WRONG, NO_ANSWER]))
    rows = {r.id: r.label for r in read_solutions(result.out_path)}
    assert rows == {"eggs-mc0": -1, "eggs-mc1": 1}  # mc2 had no answer: never labelled
    assert result.counts["dropped:wrong_no_answer"] == 1
    kept = run(
        _config(tmp_path / "b", 3, drop_answerless_wrong=False),
        _scripted([RIGHT, WRONG, NO_ANSWER]),
    )
    assert {r.id: r.label for r in read_solutions(kept.out_path)}["eggs-mc2"] == 1


def test_two_correct_solutions_of_one_problem_keep_one(tmp_path: Path) -> None:
    backend = _scripted([RIGHT, RIGHT, WRONG])
    result = run(_config(tmp_path, 3), backend)
    assert sorted(r.id for r in read_solutions(result.out_path)) == ["eggs-mc0", "eggs-mc2"]
    assert result.counts["dropped:correct_over_cap"] == 1
    # only the kept solutions were rolled out: 2 solutions x 2 prefixes
    assert sum(len(ps) for ps, p in backend.generate_calls if p.n == 2) == 4


def test_truncated_rollouts_do_not_place_the_error_too_early(tmp_path: Path) -> None:
    """Step 3 of WRONG is the first wrong one for real (step 2 is marked BAD only for the answer).
    Every rollout after prefix 2 runs out of tokens: counted as failures, they would move the
    error to step 2; left out, the solution has no estimate there and is dropped, counted."""
    wrong_late = " 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 18 dollars.\nStep 3: So \\boxed{20}."

    def respond(prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
        if prompt[-1]["content"] == "Step 1:":
            return [RIGHT, wrong_late]
        if "Step 3:" in prompt[-1]["content"] and "18 dollars" in prompt[-1]["content"]:
            return [Completion(" 18 dollars, so the", "length")] * params.n
        return _rollouts_reach_gold(prompt, params.n)

    failing = run(
        _config(tmp_path / "fail", 2, truncated_rollouts="fail"), ScriptedBackend(respond)
    )
    labels = {r.id: r.label for r in read_solutions(failing.out_path)}
    assert labels["eggs-mc1"] == 1  # the cut rollouts blame step 2: too early
    excluded = run(_config(tmp_path / "excl", 2), ScriptedBackend(respond))
    assert "eggs-mc1" not in {r.id for r in read_solutions(excluded.out_path)}
    assert excluded.counts["dropped:rollouts_all_truncated"] == 2  # both solutions' prefix 2
    assert excluded.counts["rollouts_truncated"] == 4


def test_numinamath_rows_without_a_boxed_answer(tmp_path: Path) -> None:
    rows = [
        {"source": "amc", "problem": "What is 1+1?", "solution": "It is \\boxed{2}."},
        {"source": "olympiads", "problem": "Prove it.", "solution": "Done, no box."},
        {"source": "cn_k12", "problem": "What is 2+3?", "solution": "So $\\boxed{5}$"},
    ]
    path = tmp_path / "numina.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"numina\.jsonl:2: field 'solution'"):
        load_problems(f"numinamath:{path}")
    problems, report = load_problems(f"numinamath:{path}", skip_invalid=True)
    assert [(p.id, p.gold_answer) for p in problems] == [
        ("numinamath-0", "2"),
        ("numinamath-2", "5"),
    ]
    assert problems[0].meta == {"source": "amc"} and report.reasons == {"invalid solution": 1}

    cfg = _config(tmp_path, 2, problems=f"numinamath:{path}", skip_invalid=True)
    result = run(cfg, ScriptedBackend(lambda p, params: [" 1 + 1 = \\boxed{2}."] * params.n))
    assert result.counts["input.invalid"] == 1 and result.counts["input.read"] == 3
    assert result.counts["input.invalid.invalid solution"] == 1
    with pytest.raises(DataError):
        run(_config(tmp_path / "strict", 2, problems=f"numinamath:{path}"), ScriptedBackend(str))


def test_paper_preset_budgets() -> None:
    from deepcritic.config import load_config
    from deepcritic.stages import mc

    cfg = load_config(MCConfig, Path(mc.__file__).parents[1] / "configs" / "mc.paper.yaml")
    assert cfg.problems.startswith("numinamath:") and cfg.skip_invalid
    assert (cfg.sample_max_tokens, cfg.sample_top_p, cfg.sample_temperature) == (2048, 1.0, 1.0)
    assert (cfg.rollout_max_tokens, cfg.rollout_top_p, cfg.rollout_temperature) == (4096, 0.9, 0.7)
    assert cfg.max_correct_per_problem == 1 and cfg.drop_answerless_wrong
    assert cfg.truncated_rollouts == "fail"  # the reference rollout scripts


def test_drop_counts_reach_mlflow(tmp_path: Path, local_mlflow: str) -> None:
    import mlflow

    run(_config(tmp_path, 3, tracking_uri=None), _scripted([RIGHT, RIGHT, NO_ANSWER]))
    (found,) = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")
    metrics = found.data.metrics
    assert metrics["dropped.wrong_no_answer"] == 1
    assert metrics["problems_dropped.all_correct"] == 1  # no answered wrong sample is left
    assert metrics["input.invalid"] == 0 and metrics["input.read"] == 1
