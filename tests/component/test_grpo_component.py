"""The grpo KFP component (kfp.local, in-process launcher, the tiny model) on its curation branch:
a preset that curates names ``exclude_problems_from``, and the component hands over the seed stage's
folder (its ``seed_data`` input) in its place, so the seed's problems stay out of RL."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deepcritic.records import write_jsonl
from deepcritic.stages import seed
from support.scripted_backend import ScriptedBackend, SeedTeacher, toy_solution

ROOT = Path(__file__).resolve().parents[2]


def _seed_folder(tmp_path: Path) -> Path:
    """A real seed stage output (scripted teacher) over problems p0..p3."""
    sols = [toy_solution(f"p{i}", label, 2) for i, label in enumerate((-1, 0, 1, -1))]
    write_jsonl(tmp_path / "seed-in.jsonl", sols)
    out = tmp_path / "seed"
    cfg = seed.SeedConfig(data=str(tmp_path / "seed-in.jsonl"), out_dir=str(out),
                          tracking_uri="off")  # fmt: skip
    seed.run(cfg, ScriptedBackend(SeedTeacher(sols)))
    return out


@pytest.mark.parametrize("curate", [True, False], ids=["curates", "keeps-all"])
def test_grpo_component_excludes_the_seed_problems_when_the_preset_curates(
    tmp_path: Path, tiny_model_path: str, no_mlflow: None, monkeypatch: pytest.MonkeyPatch,
    curate: bool,
) -> None:  # fmt: skip
    from kfp import dsl, local

    sys.path.insert(0, str(ROOT))
    from components.grpo.component import grpo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seed_dir = _seed_folder(tmp_path)
    # the RL labels: the seed's four problems and four fresh ones (q0..q3)
    rows = [toy_solution(f"{p}{i}", label, 2) for p in "pq" for i, label in
            enumerate((-1, 0, 1, -1))]  # fmt: skip
    write_jsonl(tmp_path / "labels.jsonl", rows)
    # a placeholder path: the component must put the seed folder in its place
    overrides = ["max_steps=1", "limit=null", "save_steps=1000"]
    overrides += [f"exclude_problems_from={tmp_path / 'not-the-seed-folder'}"] if curate else []
    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)  # fmt: skip

    def flow(labels_uri: str, seed_uri: str, model_uri: str) -> None:
        labels = dsl.importer(artifact_uri=labels_uri, artifact_class=dsl.Dataset)
        seed_data = dsl.importer(artifact_uri=seed_uri, artifact_class=dsl.Dataset)
        sft_model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        grpo(profile="tiny", sft_model=sft_model.output, data=labels.output,
             seed_data=seed_data.output, data_source="labels", launcher="inprocess",
             namespace="local", overrides=overrides)  # fmt: skip

    flow.__annotations__ = {"labels_uri": str, "seed_uri": str, "model_uri": str, "return": None}
    dsl.pipeline(name="grpo-curation")(flow)(
        labels_uri=str(tmp_path / "labels.jsonl"), seed_uri=str(seed_dir), model_uri=tiny_model_path
    )
    (work,) = list((tmp_path / "root").glob("*/grpo/model.work"))
    counts = json.loads((work / "result.json").read_text())["data_counts"]
    assert counts["read"] == 8 and counts["curated"] == (4 if curate else 8)
    assert counts["dropped_seed_overlap"] == (4 if curate else 0)
    if curate:  # the seed folder's shard records named all four of its problems
        assert counts["exclude_problems"] == 4
    (out,) = list((tmp_path / "root").glob("*/grpo/model"))
    assert (out / "model.safetensors").is_file()
