"""The grpo KFP component (kfp.local, in-process launcher, the tiny model): on its curation branch
(a preset that curates names ``exclude_problems_from``; the component hands over the seed stage's
folder, its ``seed_data`` input, in its place, so the seed's problems stay out of RL) and on an MC
folder of several shards (every shard read)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from deepcritic.records import write_jsonl
from deepcritic.stages import seed
from support.scripted_backend import ScriptedBackend, SeedTeacher, toy_solution

ROOT = Path(__file__).resolve().parents[2]


def _run_grpo(
    tmp_path: Path, model: str, data: Path, seed_dir: Path, source: str, overrides: list[str]
) -> Path:
    """The grpo component alone in a KFP local pipeline; returns its stage folder (out_dir)."""
    from kfp import dsl, local

    sys.path.insert(0, str(ROOT))
    from components.grpo.component import grpo

    local.init(runner=local.SubprocessRunner(use_venv=False),
               pipeline_root=str(tmp_path / "root"), raise_on_error=True)  # fmt: skip

    def flow(data_uri: str, seed_uri: str, model_uri: str) -> None:
        rows = dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset)
        seed_data = dsl.importer(artifact_uri=seed_uri, artifact_class=dsl.Dataset)
        sft_model = dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model)
        grpo(profile="tiny", sft_model=sft_model.output, data=rows.output,
             seed_data=seed_data.output, data_source=source, launcher="inprocess",
             namespace="local", overrides=overrides)  # fmt: skip

    flow.__annotations__ = {"data_uri": str, "seed_uri": str, "model_uri": str, "return": None}
    dsl.pipeline(name="grpo-component")(flow)(
        data_uri=str(data), seed_uri=str(seed_dir), model_uri=model
    )
    (out,) = list((tmp_path / "root").glob("*/grpo/model"))
    assert (out / "model.safetensors").is_file()  # the trained policy is the task's output
    (work,) = list((tmp_path / "root").glob("*/grpo/model.work"))
    return work


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
    work = _run_grpo(tmp_path, tiny_model_path, tmp_path / "labels.jsonl", seed_dir, "labels",
                     overrides)  # fmt: skip
    counts = json.loads((work / "result.json").read_text())["data_counts"]
    assert counts["read"] == 8 and counts["curated"] == (4 if curate else 8)
    assert counts["dropped_seed_overlap"] == (4 if curate else 0)
    if curate:  # the seed folder's shard records named all four of its problems
        assert counts["exclude_problems"] == 4


def test_grpo_component_reads_every_shard_of_an_mc_folder(
    tmp_path: Path, tiny_model_path: str, no_mlflow: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process, an MC folder is read whole (every shard file), not its first file."""
    from dataclasses import replace

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mc = tmp_path / "mc"
    for shard in range(2):
        rows = [replace(toy_solution(f"m{shard}{i}", label, 2), meta={"mc_estimates": [1.0]})
                for i, label in enumerate((-1, 0, 1))]  # fmt: skip
        write_jsonl(mc / f"mc-{shard:03d}-of-002.jsonl", rows)
    work = _run_grpo(tmp_path, tiny_model_path, mc, _seed_folder(tmp_path), "mc",
                     ["max_steps=1", "limit=null", "save_steps=1000"])  # fmt: skip
    counts = json.loads((work / "result.json").read_text())["data_counts"]
    assert counts["read"] == counts["curated"] == 6
