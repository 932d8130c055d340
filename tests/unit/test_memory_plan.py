"""benchmarks/bench_memory.py: exact parameter counts, the paper presets fit 8 (and 16) x 80 GB,
the pre-ZeRO setup does not, ZeRO-3 states scale with the world, DeepSpeed's estimator agrees."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest

from support.scripts import load_script

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"
GB = 1e9


@pytest.fixture(scope="module")
def mem() -> ModuleType:
    return load_script(PATH, "bench_memory")


@pytest.mark.parametrize("key", ["qwen2.5-7b", "qwen2.5-1.5b"])
def test_parameter_count_matches_transformers(mem: ModuleType, key: str) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    s = mem.SHAPES[key]
    cfg = Qwen2Config(hidden_size=s.hidden, num_hidden_layers=s.layers,
                      intermediate_size=s.intermediate, num_attention_heads=s.heads,
                      num_key_value_heads=s.kv_heads, vocab_size=s.vocab,
                      tie_word_embeddings=s.tied)  # fmt: skip
    with torch.device("meta"):
        model = Qwen2ForCausalLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == s.params
    assert s.params == {"qwen2.5-7b": 7_615_616_512, "qwen2.5-1.5b": 1_543_714_304}[key]


@pytest.mark.parametrize("stage", ["sft", "grpo"])
@pytest.mark.parametrize("gpus", [8, 16])
def test_paper_presets_fit_80gb(mem: ModuleType, stage: str, gpus: int) -> None:
    case = mem.Case(stage, "paper", mem.SHAPES["qwen2.5-7b"], gpus, 8, 80.0)
    run, rows, _ = mem.evaluate(case)
    assert run.zero == 3 and run.checkpointing and run.flash
    assert rows["peak"] < 80 * GB and rows["headroom"] > 0


@pytest.mark.parametrize("stage", ["sft", "grpo"])
def test_small_presets_fit_one_gpu(mem: ModuleType, stage: str) -> None:
    case = mem.Case(stage, "small", mem.SHAPES["qwen2.5-1.5b"], 1, 1, 80.0)
    assert mem.evaluate(case)[1]["peak"] < 80 * GB


def test_without_zero_the_7b_does_not_fit(mem: ModuleType) -> None:
    case = mem.Case("sft", "paper", mem.SHAPES["qwen2.5-7b"], 8, 8, 80.0, deepspeed="")
    run, rows, _ = mem.evaluate(case)
    assert run.zero == 0 and rows["peak"] > 80 * GB  # 16 B x 7.6B of model states alone
    old_grpo = replace(mem.run_from_config(mem.load_preset("grpo", "paper"), 8),
                       micro_batch=8, flash=False)  # the pre-issue GRPO preset  # fmt: skip
    assert mem.plan(mem.SHAPES["qwen2.5-7b"], old_grpo, 80 * GB)["peak"] > 75 * GB


def test_zero3_states_scale_with_the_world(mem: ModuleType) -> None:
    shape = mem.SHAPES["qwen2.5-7b"]
    run8 = mem.run_from_config(mem.load_preset("sft", "paper"), 8)
    s8 = sum(mem.model_states(shape, run8).values())
    s16 = sum(mem.model_states(shape, replace(run8, world=16)).values())
    assert s8 == pytest.approx(16 * shape.params / 8) and s16 == pytest.approx(s8 / 2)


@pytest.mark.parametrize("gpus", [1, 8, 16])
def test_agrees_with_deepspeeds_estimator(mem: ModuleType, gpus: int) -> None:
    pytest.importorskip("deepspeed")
    shape = mem.SHAPES["qwen2.5-7b"]
    run = mem.run_from_config(mem.load_preset("sft", "paper"), 8)
    run = replace(run, world=gpus)
    ds = mem.deepspeed_estimate(shape, run, min(gpus, 8))
    ours = sum(mem.model_states(shape, run).values()) + 4 * shape.largest_layer
    assert ds is not None and abs(ours - ds) / ds < 0.12  # DeepSpeed counts 18 B/param, we 16
