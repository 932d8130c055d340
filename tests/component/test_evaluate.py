"""`deepcritic eval` and `deepcritic score` through the real code path (tiny model, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic.cli import main
from deepcritic.generation import BackendConfig
from deepcritic.scoring import compute_metrics
from deepcritic.stages import evaluate


def _config(tmp_path: Path, model: str, bench: Path, **kw: object) -> evaluate.EvalConfig:
    return evaluate.EvalConfig(
        benchmarks=[f"processbench:{bench}"],
        generation=BackendConfig(kind="hf", model=model, batch_size=8),
        limit=6,
        max_tokens=12,
        out=str(tmp_path / "eval"),
        **kw,  # type: ignore[arg-type]
    )


def test_eval_writes_predictions_metrics_and_mlflow(
    tmp_path: Path,
    tiny_model_path: str,
    processbench_dir: Path,
    local_mlflow: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _config(tmp_path, tiny_model_path, processbench_dir / "gsm8k.json", samples=2)
    result = evaluate.run(cfg)
    (name,) = result.metrics
    rows = [
        json.loads(line) for line in (tmp_path / "eval" / "predictions" / f"{name}.jsonl").open()
    ]
    assert len(rows) == 6 and all(len(r["outputs"]) == 2 for r in rows)
    assert result.metrics[name] == compute_metrics(
        [r["label"] for r in rows], [r["prediction"] for r in rows]
    )
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["avg_f1"] == result.avg_f1 and (tmp_path / "eval" / "f1.png").stat().st_size > 0

    import mlflow

    run = mlflow.get_run(result.run_id)
    assert f"{name}.f1" in run.data.metrics and "avg_f1" in run.data.metrics
    assert run.data.params["samples"] == "2"
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"metrics.json", "f1.png", "predictions"} <= arts

    # A rerun with the same settings reuses the finished predictions: no model is loaded.
    def no_backend(_: object) -> None:
        raise AssertionError("rerun must not generate again")

    monkeypatch.setattr(evaluate, "make_backend", no_backend)
    again = evaluate.run(cfg)
    assert again.metrics == result.metrics


def test_eval_cli(
    tmp_path: Path, tiny_model_path: str, processbench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    code = main(
        [
            "eval", "--model", tiny_model_path, "--benchmarks", f"processbench:{processbench_dir / 'math.json'}",
            "--limit", "3", "--max-tokens", "6", "--out", str(out), "--tracking-uri", "off",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "average" in printed and "F1" in printed
    assert json.loads((out / "metrics.json").read_text())["run_id"] is None


def test_score_cli_perfect_and_raw_outputs(
    tmp_path: Path, processbench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = processbench_dir / "gsm8k.json"
    items = json.loads(bench.read_text())
    preds = tmp_path / "p.jsonl"
    # Perfect predictions for all but the first item, whose raw critic output names a wrong step.
    lines = [{"id": items[0]["id"], "output": "**Answer**: \\boxed{99}"}]
    lines += [{"id": it["id"], "prediction": it["label"]} for it in items[1:]]
    preds.write_text("\n".join(json.dumps(x) for x in lines))
    assert main(["score", "--benchmark", str(bench), "--predictions", str(preds)]) == 0
    got = json.loads(capsys.readouterr().out)
    n_err = sum(it["label"] != -1 for it in items)
    n_cor = len(items) - n_err
    first_is_error = items[0]["label"] != -1
    exp = compute_metrics(
        [it["label"] for it in items], [None] + [it["label"] for it in items[1:]]
    ).to_dict()
    assert got == exp
    assert (got["n"], got["n_error"], got["n_correct"]) == (len(items), n_err, n_cor)
    assert got["acc_error"] < 100 if first_is_error else got["acc_correct"] < 100


def test_score_cli_bad_predictions_names_line(
    tmp_path: Path, processbench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "gsm8k-0", "prediction": 1}\n{"id": "x", "prediction": "two"}\n')
    code = main(
        ["score", "--benchmark", str(processbench_dir / "gsm8k.json"), "--predictions", str(preds)]
    )
    assert code == 2
    assert "p.jsonl:2" in capsys.readouterr().err
