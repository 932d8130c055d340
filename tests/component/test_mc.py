"""Monte Carlo annotation: exact labels with a scripted generator, resume, and the real tiny model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from deepcritic.generation import BackendConfig, Completion, GenerationStats, Prompt, SamplingParams
from deepcritic.records import read_solutions
from deepcritic.stages.mc import MCConfig, estimate_prefixes, run, shard_paths

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/component/conftest.py


PROBLEMS = [
    {
        "id": "eggs",
        "problem": "Janet has 16 eggs, eats 3 and bakes 4. She sells the rest at $2. Revenue?",
        "gold_answer": "18",
    },
    {"id": "easy", "problem": "What is 2 + 3?", "gold_answer": "5"},
    {
        "id": "robe",
        "problem": "A robe takes 2 bolts of blue and half that of white. Total bolts?",
        "gold_answer": "3",
    },
]
# solutions after the "Step 1:" prefill; "BAD" marks the first wrong step
SOLUTIONS = {
    "eggs": [
        " 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 18 dollars.\nStep 3: The answer is \\boxed{18}.",
        " 16 - 3 - 4 = 9 eggs.\nStep 2: 9 * 2 = 20 dollars BAD.\nStep 3: The answer is \\boxed{20}.",
        " 16 - 3 = 12 eggs BAD.\nStep 2: 12 * 2 = 24.\nStep 3: The answer is \\boxed{24}.",
    ],
    "easy": [" 2 + 3 = 5, so \\boxed{5}."] * 3,
    "robe": [
        " White is 2 / 2 = 1.\nStep 2: Total 2 + 1 = 3, \\boxed{3}.",
        " White is 2 / 2 = 1.\nStep 2: Total 2 + 1 = 4 BAD, \\boxed{4}.",
        " White is 2 * 2 = 4 BAD.\nStep 2: Total 4 + 2 = 6, \\boxed{6}.",
    ],
}


class ScriptedGenerator:
    """A test double behind the Backend interface: fixed samples; a rollout reaches the gold answer
    unless its prefix already contains a step marked BAD."""

    name = "scripted"

    def __init__(self, fail_after: int | None = None) -> None:
        self.stats = GenerationStats()
        self.calls: list[tuple[int, int]] = []  # (prompts, n) per call
        self.fail_after = fail_after

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, desc: str | None = None
    ) -> list[list[Completion]]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls.append((len(prompts), params.n))
        return [self._one(p, params.n) for p in prompts]

    def _one(self, prompt: Prompt, n: int) -> list[Completion]:
        item = next(p for p in PROBLEMS if p["problem"] in prompt[1]["content"])
        prefix = prompt[-1]["content"]
        if prefix == "Step 1:":
            texts = SOLUTIONS[item["id"]]
            return [Completion(texts[i % len(texts)]) for i in range(n)]
        answer = "wrong" if "BAD" in prefix else item["gold_answer"]
        return [Completion(f" continue. \\boxed{{{answer}}}") for _ in range(n)]

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        return [0 for _ in prompts]

    def close(self) -> None:
        pass


@pytest.fixture()
def problems_file(tmp_path: Path) -> str:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return str(path)


def _config(problems_file: str, out: Path, **kw: object) -> MCConfig:
    base = {
        "problems": problems_file,
        "out_dir": str(out),
        "samples": 3,
        "rollouts": 2,
        "problems_per_batch": 2,
        "tracking_uri": "off",
    }
    base.update(kw)
    return MCConfig(**base)  # type: ignore[arg-type]


def test_scripted_labels_counts_and_batching(problems_file: str, tmp_path: Path) -> None:
    gen = ScriptedGenerator()
    result = run(_config(problems_file, tmp_path / "out"), backend=gen)
    rows = {r.id: r for r in read_solutions(result.out_path)}
    assert {k: v.label for k, v in rows.items()} == {
        "eggs-mc0": -1,
        "eggs-mc1": 1,
        "eggs-mc2": 0,
        "robe-mc0": -1,
        "robe-mc1": 1,
        "robe-mc2": 0,
    }
    assert rows["eggs-mc1"].meta["mc_estimates"] == [1.0, 0.0]
    assert rows["eggs-mc1"].final_answer_correct is False and rows["eggs-mc0"].gold_answer == "18"
    assert result.counts["problems_dropped:all_correct"] == 1  # "easy": nothing to learn
    assert result.counts["problems_kept"] == 2 and result.written == 6
    # one call per batch of problems for samples, then one call per solution with all its prefixes
    assert gen.calls[0] == (2, 3)
    assert (2, 2) in gen.calls and (1, 2) in gen.calls
    assert all(n in (2, 3) for _, n in gen.calls)


def test_ambiguous_solutions_are_dropped_and_counted(problems_file: str, tmp_path: Path) -> None:
    # succeed_at=1.0: the empty prefix (1 of 3 samples right) is gray, so an error in step 1
    # cannot be told from an unsolvable start: those two solutions are dropped and counted
    cfg = _config(problems_file, tmp_path / "out", fail_at=0.0, succeed_at=1.0)
    result = run(cfg, backend=ScriptedGenerator())
    ids = sorted(r.id for r in read_solutions(result.out_path))
    assert ids == ["eggs-mc0", "eggs-mc1", "robe-mc0", "robe-mc1"]
    assert result.counts["rule:ambiguous:gray_before_error"] == 2


def test_crash_and_resume_loses_and_duplicates_nothing(problems_file: str, tmp_path: Path) -> None:
    reference = run(_config(problems_file, tmp_path / "ref"), backend=ScriptedGenerator())
    want = sorted(r.id for r in read_solutions(reference.out_path))
    cfg = _config(problems_file, tmp_path / "out", problems_per_batch=1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(
            cfg, backend=ScriptedGenerator(fail_after=3)
        )  # dies inside the first problem's rollouts
    resumed = run(cfg, backend=ScriptedGenerator())
    got = [r.id for r in read_solutions(resumed.out_path)]
    assert sorted(got) == want and len(set(got)) == len(got)
    again = run(
        cfg, backend=ScriptedGenerator(fail_after=0)
    )  # everything done: no generation at all
    assert again.skipped_done == 3 and again.problems == 0


def test_shards_split_the_problems(problems_file: str, tmp_path: Path) -> None:
    ids: list[str] = []
    for i in range(2):
        res = run(
            _config(problems_file, tmp_path / "out", shard=f"{i}/2"), backend=ScriptedGenerator()
        )
        done = [json.loads(x)["problem_id"] for x in Path(res.done_path).read_text().splitlines()]
        ids += done
        assert Path(res.out_path) == shard_paths(tmp_path / "out", f"{i}/2")[0]
    assert sorted(ids) == ["easy", "eggs", "robe"]


def test_estimate_plot_logged_to_mlflow(
    problems_file: str, tmp_path: Path, local_mlflow: str
) -> None:
    import mlflow

    run(_config(problems_file, tmp_path / "out", tracking_uri=None), backend=ScriptedGenerator())
    mlflow.set_tracking_uri(local_mlflow)
    (found,) = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")
    assert found.data.metrics["written"] == 6
    names = [
        a.path
        for a in mlflow.artifacts.list_artifacts(run_id=found.info.run_id, artifact_path="mc")
    ]
    assert "mc/estimates_per_step.png" in names


def test_real_tiny_model_end_to_end(tiny_model_path: str, tmp_path: Path) -> None:
    gen = BackendConfig(kind="hf", model=tiny_model_path, batch_size=8)
    cfg = MCConfig(
        problems="gsm8k:test",
        limit=3,
        out_dir=str(tmp_path / "out"),
        generation=gen,
        samples=2,
        rollouts=2,
        sample_max_tokens=12,
        rollout_max_tokens=12,
        drop_truncated=False,
        tracking_uri="off",
    )
    result = run(cfg)
    c = result.counts
    assert c["solutions_sampled"] == 6 and result.problems == 3
    # a random model never writes a final answer: its wrong samples are dropped (paper rule) and
    # every problem is then dropped as all-wrong; both counted
    assert c.get("problems_dropped:all_wrong_or_empty", 0) + c.get("problems_kept", 0) == 3
    assert c.get("dropped:wrong_no_answer", 0) + c.get("dropped:too_many_steps", 0) == 6
    assert len(Path(result.done_path).read_text().splitlines()) == 3
    assert run(cfg).skipped_done == 3


def test_real_tiny_model_prefix_rollouts(tiny_backend: object) -> None:
    from deepcritic.data.problems import Problem

    problem = Problem(
        "p", "Janet has 16 eggs, eats 3, bakes 4, sells the rest at $2. Revenue?", "18"
    )
    steps = ["16 - 3 - 4 = 9 eggs.", "9 * 2 = 18, so the answer is \\boxed{18}.", "Done."]
    cfg = MCConfig(rollouts=3, rollout_max_tokens=8, truncated_rollouts="fail")
    est = estimate_prefixes(tiny_backend, problem, steps, cfg)  # type: ignore[arg-type]
    # prefix 2 already holds the gold box, which random continuations keep; prefix 1 has none
    assert est == [0.0, 1.0]
    # a random model is always cut at 8 tokens: excluded, no rollout is left to estimate from
    cfg = MCConfig(rollouts=3, rollout_max_tokens=8)
    assert estimate_prefixes(tiny_backend, problem, steps, cfg) == [None, None]  # type: ignore[arg-type]
