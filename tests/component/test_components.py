"""KFP components run for real with kfp.local (SubprocessRunner, this Python, no Docker)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@pytest.fixture()
def kfp_local(tmp_path: Path, local_mlflow: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    from kfp import local

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "pipeline_root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root),
               raise_on_error=True)  # fmt: skip
    return root


def test_plan_shards_and_prepare_data(kfp_local: Path) -> None:
    from components.prepare_data.component import prepare_data
    from components.seed_critiques.component import plan_shards

    assert plan_shards(num_shards=3).output == ["0/3", "1/3", "2/3"]
    task = prepare_data(profile="tiny", source="champ", limit=5, overrides=[])
    assert task.outputs["Output"] == 5
    rows = Path(task.outputs["train"].path).read_text().splitlines()
    assert len(rows) == 5 and json.loads(rows[0])["steps"]


def _checkpoint(path: Path, seed: int) -> Path:
    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    save_file({"w": torch.full((2, 2), float(seed))}, str(path / "model.safetensors"))
    return path


def test_register_then_promote_components(
    kfp_local: Path, tmp_path: Path, local_mlflow: str
) -> None:
    from components.promote.component import promote
    from components.register.component import register
    from kfp import dsl
    from mlflow import MlflowClient

    model_dir = _checkpoint(tmp_path / "ckpt", 1)
    results = tmp_path / "results"
    (results / "predictions").mkdir(parents=True)  # what the evaluate component writes
    (results / "metrics.json").write_text(json.dumps({"avg_f1": 42.0, "f1.gsm8k": 42.0}))
    rows = [{"id": "a", "label": -1, "prediction": -1}, {"id": "b", "label": 1, "prediction": None}]
    (results / "predictions" / "gsm8k.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows)
    )
    data = tmp_path / "train.jsonl"
    data.write_text('{"id": "a"}\n')

    @dsl.pipeline(name="register-promote")
    def flow(model_uri: str, results_uri: str, data_uri: str) -> None:
        m = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        r = dsl.importer(artifact_uri=results_uri, artifact_class=dsl.Dataset)
        d = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset)
        reg = register(model=m.output, eval_results=r.output, train_data=d.output,
                       model_name="critic", base_model="tiny")  # fmt: skip
        below_base = promote(model_name="critic", version=reg.outputs["version"], margin=0.0,
                             floor="base", base_f1=45.0)  # fmt: skip  # the base model did better: refused
        promote(model_name="critic", version=reg.outputs["version"], margin=0.0, floor="30",
                min_parse_rate=50.0).after(below_base)  # fmt: skip

    flow(model_uri=str(model_dir), results_uri=str(results), data_uri=str(data))
    client = MlflowClient(local_mlflow, local_mlflow)
    mv = client.get_model_version_by_alias("critic", "champion")
    assert str(mv.version) == "1" and float(mv.tags["metric.avg_f1"]) == pytest.approx(42.0)
    assert float(mv.tags["metric.avg_parse_rate"]) == pytest.approx(50.0)
    assert mv.tags["base_model"] == "tiny" and len(mv.tags["data_hash"]) == 64
    assert mv.tags["deepcritic.promotion.decision"] == "promoted"
    assert mv.tags["deepcritic.gate"] == "passed"
    gates = {}
    for out in kfp_local.glob("*/promote*/executor_output.json"):
        gates[out.parent.name] = json.loads(out.read_text())["parameterValues"]
    assert gates["promote"]["promoted"] is False and "floor" in gates["promote"]["reason"]
    assert gates["promote-2"]["promoted"] is True


def test_optional_branch_verify_vote_and_refine(kfp_local: Path, tiny_model_path: str) -> None:
    """The optional branch after evaluation, for real on the tiny critic (tiny presets)."""
    from components.refine.component import refine
    from components.verify_vote.component import verify_vote
    from kfp import dsl

    @dsl.pipeline(name="use-critic")
    def use_critic() -> None:
        critic = dsl.importer(artifact_uri=tiny_model_path, artifact_class=dsl.Model)
        verify_vote(
            profile="tiny", critic=critic.output, problems="gsm8k:test", limit=2, overrides=[]
        )
        refine(profile="tiny", critic=critic.output, baseline_model="tiny", problems="gsm8k:test",
               limit=2, overrides=["rounds=1"])  # fmt: skip

    use_critic()
    votes = list(kfp_local.glob("*/verify-vote/results/table.md"))
    refined = list(kfp_local.glob("*/refine/results/table.md"))
    assert len(votes) == 1 and "verified" in votes[0].read_text().lower()
    assert len(refined) == 1 and "c->w" in refined[0].read_text()
