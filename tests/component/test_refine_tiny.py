"""`deepcritic refine` through the real code path: real problems, the tiny model as generator."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pytest

from deepcritic.cli import main
from deepcritic.critic import refine, voting
from deepcritic.data.loaders import load_problems
from deepcritic.generation import Backend, Completion, GenerationStats, Prompt, SamplingParams
from support.backends import KeepOpen


class FirstStepWrongCritic:
    """A critic double that always names step 1, so every solution with steps is rewritten."""

    name = "first-step-wrong"

    def __init__(self) -> None:
        self.stats = GenerationStats()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, desc: str | None = None
    ) -> list[list[Completion]]:
        text = "**Critique of Step 1**\nThe sum is off.\n**Judgement**: \\boxed{-1}\n\n**Answer**: \\boxed{1}"
        return [[Completion(text)] for _ in prompts]

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        raise AssertionError("not used")

    def close(self) -> None:
        pass


def test_refine_rewrites_with_the_tiny_generator(
    tmp_path: Path, tiny_backend: Backend, local_mlflow: str
) -> None:
    problems, _ = load_problems("gsm8k:test", limit=2)
    cfg = refine.RefineConfig(
        rounds=2, gen_max_tokens=8, critic_max_tokens=8, out=str(tmp_path / "r")
    )
    live = {"generator": tiny_backend, "critic": FirstStepWrongCritic(), "baseline": tiny_backend}
    result = refine.run(cfg, problems=problems, backends=live)

    traces = [
        json.loads(line) for line in Path(result.traces_paths["critic"]).read_text().splitlines()
    ]
    with_steps = [t for t in traces if t["attempts"][0]["steps"]]
    crit = result.summaries["critic"]
    assert crit.actions["refined"] == len(with_steps) and crit.refined == len(with_steps)
    for t in with_steps:  # round 1 rewrote from step 1 with the step-1 critique as feedback
        assert t["rounds"][0]["feedback"].startswith("The sum is off.")
        assert len(t["attempts"]) >= 2 and t["attempts"][1]["text"].startswith("Step 1:")
    base = result.summaries["baseline"]
    assert base.accuracy_before == crit.accuracy_before  # same initial solutions
    assert sum(base.actions.values()) == 2

    import mlflow

    run = mlflow.get_run(result.run_id)
    assert run.data.metrics["critic/refined"] == crit.refined
    assert "baseline/w2c" in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "critic/accuracy")
    assert sorted(m.step for m in history) == [0, 1, 2]


def test_refine_cli_tiny_preset(
    tmp_path: Path,
    tiny_backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The preset's `tiny` model is the session's tiny model: reuse it instead of loading it again.
    opened: list[object] = []

    def make(cfg: object) -> KeepOpen:
        opened.append(cfg)
        return KeepOpen(tiny_backend)

    monkeypatch.setattr(voting, "make_backend", make)
    preset = resources.files("deepcritic.configs").joinpath("refine.tiny.yaml")
    out = tmp_path / "cli"
    argv = ["refine", "--config", str(preset), "--out", str(out), "--rounds", "1", "--limit", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| critic | model |" in printed and "| baseline | tiny |" in printed
    assert (out / "traces_critic.jsonl").is_file() and (out / "accuracy_by_round.png").is_file()
    assert len(opened) == 1  # generator, critic and baseline share one config: loaded once
