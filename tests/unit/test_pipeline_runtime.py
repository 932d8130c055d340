"""deepcritic.runtime helpers the components use: stage configs, parent runs, KServe patch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from deepcritic import runtime
from deepcritic.config import ConfigError
from deepcritic.stages.seed.config import SeedConfig


def test_stage_config_layers_preset_and_overrides() -> None:
    cfg = runtime.stage_config(SeedConfig, "seed", "tiny", ["max_solutions=3", "data=/x.jsonl"])
    assert cfg.generation.model == "tiny"  # from seed.tiny.yaml
    assert (cfg.max_solutions, cfg.data) == (3, "/x.jsonl")
    assert runtime.stage_config(SeedConfig, "seed", "", []).max_solutions is None  # defaults
    with pytest.raises(ConfigError, match="key=value"):
        runtime.stage_config(SeedConfig, "seed", "tiny", ["max_solutions"])
    with pytest.raises(ConfigError, match="no_such_field"):
        runtime.stage_config(SeedConfig, "seed", "tiny", ["no_such_field=1"])


def test_pipeline_arguments_profiles() -> None:
    tiny = runtime.pipeline_arguments("tiny", {"seed_num_shards": 3})
    assert tiny["base_model"] == "tiny" and tiny["seed_num_shards"] == 3
    assert runtime.pipeline_arguments("paper")["sft_launcher"] == "trainjob"
    with pytest.raises(ConfigError, match="profile"):
        runtime.pipeline_arguments("huge")


def test_ensure_parent_run_uses_env_then_kfp_run_id(
    local_mlflow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEEPCRITIC_PARENT_RUN_ID", "abc")
    assert runtime.ensure_parent_run() == "abc"
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID")
    assert runtime.ensure_parent_run() is None  # no KFP run id: stage runs stay top level
    monkeypatch.setenv("KFP_RUN_ID", "run-42")
    first = runtime.ensure_parent_run()
    monkeypatch.delenv("DEEPCRITIC_PARENT_RUN_ID")
    assert first and runtime.ensure_parent_run() == first  # later stages find the same parent


@dataclass
class _Config:
    out_dir: str = ""
    lr: float = 1.0


@dataclass
class _Result:
    out_dir: str
    checkpoint: str = ""


def test_trainjob_train_runs_the_config_and_returns_the_jobs_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from deepcritic.platform import trainjob
    from deepcritic.platform.images import image

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def run_stage(*args: Any, **kw: Any) -> trainjob.TrainJobResult:
        calls.append((args, kw))
        return trainjob.TrainJobResult("job", "/vol/run/out/final", 1.0)

    monkeypatch.setattr(trainjob, "run_stage", run_stage)
    launch = trainjob.Launch("ns", 2, 8, 0, "claim", 60, {"pool": "gpu"}, [{"key": "k"}])
    config = runtime.stage_config(_Config, "grpo", "", ["lr=0.5", "out_dir=/vol/run/out"])
    result = trainjob.train("grpo", config, _Result, launch)
    assert result == _Result("/vol/run/out", "/vol/run/out/final")
    [(args, kw)] = calls
    assert args == ("grpo", {"out_dir": "/vol/run/out", "lr": 0.5})
    assert kw == {
        "task": "grpo", "image": image("train"), "timeout_s": 60, "namespace": "ns",
        "num_nodes": 2, "gpus_per_node": 8, "procs_per_node": 0, "volume_claim": "claim",
        "node_selector": {"pool": "gpu"}, "tolerations": [{"key": "k"}],
    }  # fmt: skip
