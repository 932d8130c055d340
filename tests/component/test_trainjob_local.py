"""The TrainJob path rehearsed: the launcher submits the exact TrainJob object to a LocalCluster,
whose LocalTrainer runs its command as 2 worker processes (accelerate, DeepSpeed ZeRO-3 on CPU
over gloo, the tiny model); only the run volume is shared. The checkpoint must load and the loss
curve must be in MLflow, with ZeRO-3 and world size 2 recorded by the trainer itself."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from deepcritic.config import load_config, to_dict
from deepcritic.platform import storage, trainjob
from deepcritic.platform.connect import default_controllers
from deepcritic.platform.local_cluster import LocalCluster
from deepcritic.records import write_jsonl
from deepcritic.stages import seed
from deepcritic.stages.sft import CriticSFTConfig
from support.scripted_backend import ScriptedBackend, SeedTeacher, toy_solution
from support.trainer_crd import validate

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "deepcritic" / "configs"
pytest.importorskip("deepspeed")


class RecordingCluster(LocalCluster):
    """The local cluster, keeping every object the launcher submits."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, default_controllers())
        self.submitted: list[dict[str, object]] = []

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.submitted.append(json.loads(json.dumps(obj)))
        return super().create(obj)


@pytest.fixture()
def run_volume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    volume = tmp_path / "volume"
    volume.mkdir()
    monkeypatch.setenv(storage.RUN_VOLUME_ENV, str(volume))
    monkeypatch.setenv(storage.RUN_ID_ENV, "rehearsal-run-1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return volume


def seed_output(folder: Path) -> Path:
    sols = [toy_solution(f"p{i}", label, 2) for i, label in enumerate((-1, 0, 1, -1))]
    write_jsonl(folder / "in.jsonl", sols)
    cfg = seed.SeedConfig(
        data=str(folder / "in.jsonl"), out_dir=str(folder / "seed"), tracking_uri="off"
    )
    result = seed.run(cfg, ScriptedBackend(SeedTeacher(sols)))
    return Path(result.sft_path or "")


def sft_config(data: Path, model: str, out_dir: Path) -> CriticSFTConfig:
    cfg = load_config(CriticSFTConfig, CONFIGS / "sft.tiny.yaml")
    return replace(
        cfg, data=str(data), model=model, out_dir=str(out_dir), deepspeed="zero3", max_steps=4,
        effective_batch_size=2, per_device_batch_size=1, save_steps=1000, tracking_uri=None,
    )  # fmt: skip


def test_sft_trainjob_on_two_local_workers(
    tmp_path: Path, run_volume: Path, tiny_model_path: str, local_mlflow: str
) -> None:
    import mlflow

    from deepcritic.models import load_causal_lm

    folder = trainjob.stage_files("sft")
    # the launcher copies its KFP input artifact onto the volume; the trainer reads it there
    data = trainjob.put_on_volume(
        seed_output(tmp_path / "launcher"), folder / "inputs" / "sft.jsonl"
    )
    config = sft_config(data, tiny_model_path, folder / "out")
    cluster = RecordingCluster(tmp_path / "cluster")
    env = {"DEEPCRITIC_ARTIFACT_ROOT": str(tmp_path / "mlartifacts")}
    result = trainjob.run_stage(
        "sft", to_dict(config), task="sft", image="local", timeout_s=600, poll_s=2,
        cluster=cluster, num_nodes=1, gpus_per_node=0, procs_per_node=2, volume_claim="run-vol",
        env=env,
    )  # fmt: skip
    # the exact object the launcher submitted is a valid TrainJob
    name = trainjob.trainjob_name("rehearsal-run-1", "sft")
    (submitted,) = cluster.submitted
    validate(submitted)
    assert submitted["spec"]["trainer"]["numProcPerNode"] == 2
    assert result.name == name and cluster.get(trainjob.API_VERSION, "TrainJob", name) is None
    model, tok = load_causal_lm(result.checkpoint, device="cpu")
    assert model.config.num_hidden_layers == 2 and tok.eos_token == "<|im_end|>"
    assert Path(result.checkpoint).is_relative_to(run_volume)
    # the trainer (rank 0) logged the run: ZeRO-3 over 2 ranks and a loss curve of 4 steps
    mlflow.set_tracking_uri(local_mlflow)  # not whatever an earlier test left set in-process
    (run,) = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")
    params = run.data.params
    assert (params["zero_stage"], params["world_size"], params["effective_batch"]) == (
        "3",
        "2",
        "2",
    )
    losses = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train.loss")
    assert len(losses) == 4


def test_grpo_trainjob_on_two_local_workers(
    tmp_path: Path, run_volume: Path, tiny_model_path: str, local_mlflow: str
) -> None:
    import mlflow

    from deepcritic.models import load_causal_lm
    from deepcritic.stages.grpo import CriticGRPOConfig, read_result

    folder = trainjob.stage_files("grpo")
    policy = trainjob.put_on_volume(tiny_model_path, folder / "inputs" / "sft_model")
    sols = [toy_solution(f"g{i}", label, 2) for i, label in enumerate((-1, 0, 1, -1))]
    write_jsonl(tmp_path / "labels.jsonl", sols)
    labels = trainjob.put_on_volume(tmp_path / "labels.jsonl", folder / "inputs" / "data")
    cfg = replace(
        load_config(CriticGRPOConfig, CONFIGS / "grpo.tiny.yaml"), model=str(policy),
        labels_path=str(labels), out_dir=str(folder / "out"), deepspeed="zero3",
        effective_batch_size=4, per_device_train_batch_size=2, max_steps=2,
        mask_truncated_completions=True, tracking_uri=None,
    )  # fmt: skip
    result = trainjob.run_stage(
        "grpo", to_dict(cfg), task="grpo", image="local", timeout_s=600, poll_s=2,
        cluster=LocalCluster(tmp_path / "cluster", default_controllers()), num_nodes=2, gpus_per_node=0,
        procs_per_node=1, volume_claim="run-vol",
        env={"DEEPCRITIC_ARTIFACT_ROOT": str(tmp_path / "mlartifacts")},
    )  # fmt: skip
    model, _ = load_causal_lm(result.checkpoint, device="cpu")
    assert model.config.num_hidden_layers == 2
    assert read_result(cfg.out_dir).steps == 2
    mlflow.set_tracking_uri(local_mlflow)  # not whatever an earlier test left set in-process
    (run,) = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")
    params = run.data.params
    assert (params["zero_stage"], params["world_size"], params["completions_per_step"]) == (
        "3", "2", "4")  # fmt: skip
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "reward")) == 2


def test_a_failing_trainer_fails_the_launcher_with_its_own_message(
    tmp_path: Path, run_volume: Path, tiny_model_path: str, no_mlflow: None
) -> None:
    folder = trainjob.stage_files("sft-broken")
    config = sft_config(folder / "inputs" / "missing.jsonl", tiny_model_path, folder / "out")
    cluster = LocalCluster(tmp_path / "cluster", default_controllers())
    with pytest.raises(trainjob.TrainJobFailed) as err:
        trainjob.run_stage(
            "sft", to_dict(config), task="sft-broken", image="local", timeout_s=300, poll_s=1,
            cluster=cluster, gpus_per_node=0, procs_per_node=2, volume_claim="run-vol",
        )  # fmt: skip
    message = str(err.value)
    assert "missing.jsonl does not exist" in message  # the trainer's own words, from its log
    assert "exited with" in message  # the Trainer condition's reason
    assert cluster.list(trainjob.API_VERSION, "TrainJob", {}) == []  # deleted after failing


def test_sft_component_launches_a_trainjob(
    tmp_path: Path, run_volume: Path, tiny_model_path: str, local_mlflow: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """The KFP component (kfp.local) as the CPU-only launcher: files onto the volume, a TrainJob
    on the local cluster, the checkpoint back as the task's output artifact."""
    import sys

    from kfp import dsl, local

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from components.sft.component import sft

    monkeypatch.setenv("DEEPCRITIC_CLUSTER", f"local:{tmp_path / 'cluster'}")
    monkeypatch.chdir(tmp_path)
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)  # fmt: skip
    data = seed_output(tmp_path / "seed")
    overrides = ["deepspeed=zero3", "max_steps=2", "effective_batch_size=2",
                 "per_device_batch_size=1", "save_steps=1000"]  # fmt: skip

    def flow(data_uri: str) -> None:
        d = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset)
        sft(profile="tiny", data=d.output, base_model=tiny_model_path, launcher="trainjob",
            namespace="local", overrides=overrides, gpus_per_node=0, procs_per_node=2,
            run_volume_claim="run-vol", timeout_s=600)  # fmt: skip

    flow.__annotations__ = {"data_uri": str, "return": None}  # KFP reads real types
    dsl.pipeline(name="sft-trainjob")(flow)(data_uri=str(data))
    (out,) = list((tmp_path / "root").glob("*/sft/model"))
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert (run_volume / "runs" / "rehearsal-run-1" / "sft" / "inputs" / "data").is_file()
    assert not list((tmp_path / "cluster" / "objects" / "trainjob").glob("*.json"))  # deleted
