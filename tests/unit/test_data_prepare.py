"""``deepcritic prepare``: source -> canonical JSONL, split by problem, counts logged to MLflow."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import pytest

from deepcritic.records import DataError, Solution, read_solutions
from deepcritic.stages import prepare
from deepcritic.stages.prepare import PrepareConfig, eval_path, register_cli, run, split_by_problem

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def main(argv: list[str]) -> int:
    """``deepcritic prepare ...`` through this stage's own ``register_cli``."""
    parser = argparse.ArgumentParser(prog="deepcritic")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _sol(i: int, problem: str) -> Solution:
    return Solution(id=str(i), problem=problem, steps=["s"], label=-1)


def test_split_by_problem_keeps_problems_together() -> None:
    sols = [_sol(i, f"p{i % 10}") for i in range(40)]
    train, held = split_by_problem(sols, 0.3, seed=1)
    assert len({s.problem for s in held}) == 3 and len(train) + len(held) == 40
    assert not {s.problem for s in train} & {s.problem for s in held}
    assert split_by_problem(sols, 0.3, seed=1) == (train, held)
    assert split_by_problem(sols, 0.0, seed=1) == (sols, [])
    with pytest.raises(ValueError, match="eval_fraction"):
        split_by_problem(sols, 1.0, seed=1)


def test_run_champ_with_eval_split(tmp_path: Path, no_mlflow: None) -> None:
    out = tmp_path / "champ.jsonl"
    result = run(PrepareConfig(source="champ", out=str(out), eval_fraction=0.1, seed=3))
    assert (result.read, result.kept, result.skipped) == (540, 540, 0)
    assert result.n_correct == 96 and result.n_error == 444
    assert result.eval_out == str(eval_path(out)) == str(tmp_path / "champ.eval.jsonl")
    train, held = read_solutions(out), read_solutions(result.eval_out)
    assert (len(train), len(held)) == (result.n_train, result.n_eval)
    assert len(train) + len(held) == 540 and len({s.problem for s in held}) == 27


class _Recorder:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.dicts: dict[str, object] = {}

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.update(metrics)

    def log_dict(self, obj: object, name: str) -> None:
        self.dicts[name] = obj


def test_run_logs_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = _Recorder()
    stages: list[str] = []

    @contextlib.contextmanager
    def fake_stage_run(stage: str, config: object, *, tracking_uri: str | None = None):  # type: ignore[no-untyped-def]
        stages.append(stage)
        yield recorder

    monkeypatch.setattr(prepare.tracking, "stage_run", fake_stage_run)
    source = f"prm800k:{FIXTURES / 'prm800k_sample.jsonl'}"
    result = run(PrepareConfig(source=source, out=str(tmp_path / "p.jsonl")))
    assert stages == ["prepare"]
    assert recorder.metrics["kept"] == result.kept == 3
    assert recorder.metrics["skipped.initial screening question"] == 1
    assert recorder.metrics["n_error"] == 2 and recorder.metrics["n_correct"] == 1
    assert recorder.dicts["prepare_result.json"]["reasons"] == result.reasons  # type: ignore[index]


@pytest.mark.slow  # a fresh SQLite MLflow store takes ~15 s to migrate on a busy 2-core machine
def test_cli_prepare_logs_to_mlflow(tmp_path: Path, local_mlflow: str, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "prm.jsonl"
    code = main(
        ["prepare", "--source", f"prm800k:{FIXTURES / 'prm800k_sample.jsonl'}", "--out", str(out)]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kept"] == 3 and printed["skipped"] == 3 and printed["eval_out"] is None
    assert [s.id for s in read_solutions(out)] == [
        "prm800k-prm800k_sample-1",
        "prm800k-prm800k_sample-2",
        "prm800k-prm800k_sample-3",
    ]
    import mlflow

    mlflow.set_tracking_uri(local_mlflow)
    run_ = mlflow.search_runs(experiment_names=["deepcritic"], output_format="list")[0]
    assert run_.data.metrics["kept"] == 3
    assert run_.data.metrics["skipped.finish_reason give_up"] == 1
    assert run_.data.params["source"].startswith("prm800k:")


def test_cli_prepare_bad_input(tmp_path: Path, no_mlflow: None) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "problem": "p", "steps": [], "label": -1}\n', encoding="utf-8")
    argv = ["prepare", "--source", f"jsonl:{bad}", "--out", str(tmp_path / "o.jsonl")]
    with pytest.raises(DataError, match=r"bad\.jsonl:1: field 'steps' is empty"):
        main(argv)
    with pytest.raises(ValueError, match=r"no records kept \(1 skipped\)"):
        main([*argv, "--skip-invalid", "true"])
    assert not (tmp_path / "o.jsonl").exists()
