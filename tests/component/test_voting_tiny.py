"""`deepcritic verify-vote` through the real code path: real problems, the tiny model, MLflow."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from deepcritic.answers import answers_match
from deepcritic.cli import main
from deepcritic.critic import voting
from deepcritic.data.loaders import load_problems
from deepcritic.generation import Backend
from support.backends import KeepOpen


def test_verify_vote_tiny_model_logs_to_mlflow(
    tmp_path: Path, tiny_backend: Backend, local_mlflow: str
) -> None:
    problems, _ = load_problems("gsm8k:test", limit=2)
    cfg = voting.VotingConfig(
        k=[1, 2, 4], gen_max_tokens=8, critic_max_tokens=8, out=str(tmp_path / "vv")
    )
    live = {"generator": tiny_backend, "critic": tiny_backend}
    result = voting.run(cfg, problems=problems, backends=live)

    rows = [json.loads(line) for line in Path(result.samples_path).read_text().splitlines()]
    assert len(rows) == 2 * 4 and {r["id"] for r in rows} == {p.id for p in problems}
    for r in rows:  # grading and verdicts are consistent with what was written
        assert r["correct"] == answers_match(r["answer"], r["gold_answer"])
        assert len(r["critiques"]) == (1 if r["steps"] else 0)
        assert r["verdict"] == voting.critic_verdict(r["critic_labels"]) or not r["steps"]
    assert [r.k for r in result.rows] == [1, 2, 4]
    for r in result.rows:
        assert 0 <= r.pass_at_1 <= r.pass_at_k <= 1 and 0 <= r.verified <= r.pass_at_k
        assert r.majority <= r.pass_at_k

    import mlflow

    run = mlflow.get_run(result.run_id)
    assert (
        run.data.params["k"] == "[1, 2, 4]" and run.data.tags["deepcritic.stage"] == "verify-vote"
    )
    assert run.data.metrics["verified_k4"] == result.rows[-1].verified
    history = mlflow.MlflowClient().get_metric_history(result.run_id, "majority")
    assert sorted(m.step for m in history) == [1, 2, 4]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "verify_vote")}
    assert {
        "verify_vote/accuracy_vs_k.png",
        "verify_vote/samples.jsonl",
        "verify_vote/table.json",
    } <= arts


def test_verify_vote_cli_tiny_preset(
    tmp_path: Path,
    tiny_backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The preset's `tiny` model is the session's tiny model: reuse it instead of loading it again.
    monkeypatch.setattr(voting, "make_backend", lambda cfg: KeepOpen(tiny_backend))
    preset = resources.files("deepcritic.configs").joinpath("voting.tiny.yaml")
    out = tmp_path / "cli"
    assert (
        main(
            [
                "verify-vote",
                "--config",
                str(preset),
                "--out",
                str(out),
                "--k",
                "1,2",
                "--limit",
                "1",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| k | problems | pass@1 |" in printed and (out / "accuracy_vs_k.png").is_file()
    assert len((out / "samples.jsonl").read_text().splitlines()) == 1 * 2
