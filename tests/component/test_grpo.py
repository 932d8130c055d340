"""GRPO of the critic: a learnable task where the mean reward must rise and the weights move,
and a run on real critique prompts that saves (and resumes from) a loadable checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.bench_grpo import ALL_CORRECT, prime

from deepcritic.data.perturb import load_perturbed
from deepcritic.grader import render_answer
from deepcritic.prompting import critique_messages
from deepcritic.records import DataError, Solution, write_jsonl
from deepcritic.rewards import first_error_reward
from deepcritic.stages.grpo import CriticGRPOConfig, load_training_solutions, run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/component/conftest.py


def _weights(path: str) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def sampled_reward(model_path: str, rows: list[Solution], n: int = 16) -> float:
    """Mean reward of ``n`` sampled critiques per row (temperature 1): the policy's expected reward."""
    from deepcritic.generation import BackendConfig, SamplingParams, make_backend

    backend = make_backend(BackendConfig(kind="hf", model=model_path, batch_size=16))
    outs = backend.generate(
        [critique_messages(r.problem, r.steps) for r in rows],
        SamplingParams(n=n, temperature=1.0, max_tokens=14, seed=1),
    )
    backend.close()
    labels = [r.label for r, group in zip(rows, outs, strict=True) for _ in group]
    rewards = first_error_reward([c.text for group in outs for c in group], labels)
    return sum(rewards) / len(rewards)


def test_reward_rises_on_a_learnable_task(
    tiny_model_path: str, tmp_path: Path, no_mlflow: None
) -> None:
    import torch

    data = tmp_path / "all_correct.jsonl"
    write_jsonl(data, ALL_CORRECT)
    primed = prime(tiny_model_path, tmp_path / "primed", [render_answer(-1), render_answer(10)])
    cfg = CriticGRPOConfig(
        model=primed,
        labels_path=str(data),
        out_dir=str(tmp_path / "grpo"),
        num_generations=8,
        per_device_train_batch_size=16,
        max_completion_length=14,
        learning_rate=3e-3,
        beta=0.0,
        max_steps=10,
        save_steps=100,
        temperature=1.0,
        seed=0,
    )
    result = run(cfg)
    curve = result.reward_curve
    assert len(curve) == 10
    assert sum(curve[-5:]) / 5 > sum(curve[:5]) / 5, curve
    before, after = (
        sampled_reward(primed, ALL_CORRECT),
        sampled_reward(result.checkpoint, ALL_CORRECT),
    )
    assert 0.2 < before < 0.8  # the primed policy answers -1 about half the time
    assert after >= before + 0.15, (before, after, curve)  # GRPO made \boxed{-1} more likely
    w0, w1 = _weights(primed), _weights(result.checkpoint)
    assert [k for k in w0 if not torch.equal(w0[k], w1[k])]  # type: ignore[call-overload]


def test_real_critique_prompts_checkpoint_and_resume(
    tiny_model_path: str, tmp_path: Path, local_mlflow: str
) -> None:
    import mlflow
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = tmp_path / "perturbed.jsonl"
    rows = load_perturbed("test", limit=3)
    write_jsonl(data, rows)
    base = {
        "model": tiny_model_path,
        "labels_path": str(data),
        "out_dir": str(tmp_path / "grpo"),
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "max_completion_length": 16,
        "learning_rate": 1e-4,
        "beta": 0.01,
        "save_steps": 2,
        "format_penalty": -0.5,
    }
    first = run(CriticGRPOConfig(max_steps=2, **base))  # type: ignore[arg-type]
    assert first.steps == 2 and first.resumed_from is None and first.prompts == len(rows)
    assert first.seconds_per_step > 0
    second = run(CriticGRPOConfig(max_steps=3, **base))  # type: ignore[arg-type]
    assert second.resumed_from is not None and second.resumed_from.endswith("checkpoint-2")
    assert second.steps == 3
    final = Path(second.checkpoint)
    assert (final / "model.safetensors").is_file() and not list(final.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(str(final), use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(final))
    assert tok.chat_template and model.config.num_hidden_layers == 2
    mlflow.set_tracking_uri(local_mlflow)
    runs = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")
    metrics = runs[0].data.metrics
    for key in ("reward", "reward_std", "completions/mean_length", "critic/unparsable_frac", "kl"):
        assert key in metrics, sorted(metrics)
    assert metrics["critic/unparsable_frac"] == 1.0  # a random model writes no verdict


def test_data_source_switch(tmp_path: Path) -> None:
    mc = tmp_path / "mc.jsonl"
    row = Solution(id="a", problem="p", steps=["s1", "s2"], label=1, meta={"mc_estimates": [1.0]})
    write_jsonl(mc, [row])
    rows, _ = load_training_solutions(CriticGRPOConfig(data_source="mc", mc_path=str(mc)))
    assert rows == [row]
    write_jsonl(mc, [row, Solution(id="b", problem="p", steps=["s"])])
    with pytest.raises(DataError, match="mc.jsonl:2: field 'meta.mc_estimates'"):
        load_training_solutions(CriticGRPOConfig(data_source="mc", mc_path=str(mc)))
    with pytest.raises(ValueError, match="needs labels_path"):
        load_training_solutions(CriticGRPOConfig(data_source="labels"))
    with pytest.raises(ValueError, match="multiple of num_generations"):
        run(CriticGRPOConfig(labels_path=str(mc), num_generations=8, per_device_train_batch_size=4))
