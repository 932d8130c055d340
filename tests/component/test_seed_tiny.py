"""All of stage 1 for real on the tiny random model over a few ProcessBench items."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from deepcritic import grader
from deepcritic.config import load_config
from deepcritic.records import Solution, write_jsonl
from deepcritic.stages.seed import SeedConfig, run
from deepcritic.stages.seed.store import load_records, shard_path

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "deepcritic" / "configs"


def processbench_items(processbench_dir: Path, n: int) -> list[Solution]:
    rows = json.loads((processbench_dir / "gsm8k.json").read_text())
    # few critiqued steps and short prompts keep it fast on CPU: the shortest all-correct item
    # and the error items whose first error comes earliest
    rows = sorted(rows, key=lambda r: (r["label"], len(r["steps"]), len("".join(r["steps"]))))
    picked = [r for r in rows if r["label"] == -1][:1] + [r for r in rows if r["label"] >= 0][
        : n - 1
    ]
    return [Solution.from_dict(r, source="processbench:gsm8k") for r in picked]


def test_seed_stage_on_tiny_model(
    tmp_path: Path, processbench_dir: Path, tiny_model_path: str, local_mlflow: str
) -> None:
    sols = processbench_items(processbench_dir, 3)
    data = tmp_path / "in.jsonl"
    write_jsonl(data, sols)
    cfg = load_config(
        SeedConfig,
        CONFIGS / "seed.tiny.yaml",
        [
            f"data={data}",
            f"out_dir={tmp_path / 'seed'}",
            f"generation.model={tiny_model_path}",
            "generation.batch_size=32",
        ],
    )
    result = run(cfg)
    c = result.counts
    n_steps = sum(len(s.steps) if s.label == -1 else s.label + 1 for s in sols)
    assert c["total.solutions.in"] == len(sols) == c["run.processed"]
    assert c["total.initial.requests"] == n_steps == c["total.indepth.requests"]
    assert c["total.initial.samples"] == n_steps
    assert c["total.indepth.samples"] == n_steps * cfg.indepth.n
    for sub in ("initial", "indepth", "merge"):
        assert c[f"total.{sub}.samples"] == c[f"total.{sub}.parsed"] + c[f"total.{sub}.forced"]
    # a random model writes no verdicts: they are forced, and the stage still produces data
    assert c["total.forced.total"] == result.forced_verdicts > 0
    dropped = sum(v for k, v in c.items() if k.startswith("total.filter.dropped."))
    assert c["total.filter.kept"] + dropped == len(sols)
    assert c["total.sft.examples"] == c["total.filter.kept"] - c["total.balance.dropped"]
    assert c["total.merge.requests"] == sum(
        len(r["steps"])
        for r in load_records(shard_path(cfg.out_dir, 0, 1))
        if r["reason"] != "indepth_mismatch"
    )
    by_id = {s.id: s for s in sols}
    rows = [json.loads(x) for x in Path(result.sft_path or "").read_text().splitlines()]
    assert len(rows) == result.kept
    for row in rows:
        assert grader.is_match(
            grader.predicted_label(row["messages"][-1]["content"]), by_id[row["id"]].label
        )
    # MLflow: counts as metrics, the sample of kept critiques as an artifact
    run_info = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")[0]
    assert run_info.data.metrics["total.solutions.in"] == len(sols)
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_info.info.run_id)}
    assert {"counts.json", "kept_sample"} <= artifacts
