"""The evaluation suite: benchmarks with their data sources, Maj@k with require_marker, a complete
cache key, drop counts in MLflow, and the released MR-GSM8K layout (an empty step) scored in full."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic.config import ConfigError, load_config
from deepcritic.generation import BackendConfig, Completion, Prompt, SamplingParams
from deepcritic.grader import render_answer
from deepcritic.stages import evaluate
from deepcritic.stages.evaluate import Benchmark, EvalConfig, parse_benchmark, settings_key
from support.scripted_backend import ScriptedBackend

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
MRGSM8K = FIXTURES / "mrgsm8k_released_format.json"
PAPER = Path(evaluate.__file__).parents[1] / "configs" / "evaluate.paper.yaml"


def test_benchmark_entries_in_every_shape() -> None:
    assert parse_benchmark("processbench:gsm8k") == Benchmark(
        "processbench-gsm8k", "processbench:gsm8k"
    )
    assert parse_benchmark("mr=mrgsm8k:/d/t.json") == Benchmark("mr", "mrgsm8k:/d/t.json")
    assert parse_benchmark({"name": "pb", "source": "processbench:/d/g.json"}) == Benchmark(
        "pb", "processbench:/d/g.json"
    )
    with pytest.raises(ValueError, match=r"benchmarks\[1\]"):
        EvalConfig(benchmarks=["a", {"name": "x"}])
    with pytest.raises(ValueError, match=r"benchmarks\[0\]\.name: 'a/b'"):
        EvalConfig(benchmarks=["a/b=processbench:gsm8k"])
    with pytest.raises(ValueError, match="unique"):
        EvalConfig(benchmarks=["x=a", "x=b"])


def test_cli_string_and_yaml_mapping_forms_load(tmp_path: Path) -> None:
    cfg = load_config(EvalConfig, None, ["benchmarks=mr=mrgsm8k:/d/t.json,processbench:math"])
    assert cfg.suite() == [
        Benchmark("mr", "mrgsm8k:/d/t.json"),
        Benchmark("processbench-math", "processbench:math"),
    ]
    path = tmp_path / "e.yaml"
    path.write_text("benchmarks:\n  - {name: mr, source: 'mrgsm8k:/d/t.json'}\n")
    assert load_config(EvalConfig, path).suite() == [Benchmark("mr", "mrgsm8k:/d/t.json")]
    with pytest.raises((ConfigError, ValueError)):
        load_config(EvalConfig, None, ["samples=two"])


def test_paper_preset_lists_the_six_benchmarks_of_the_paper() -> None:
    cfg = load_config(EvalConfig, PAPER)
    names = [b.name for b in cfg.suite()]
    assert names == [
        "processbench-gsm8k",
        "processbench-math",
        "processbench-olympiadbench",
        "processbench-omnimath",
        "mrgsm8k",
        "prm800k-test",
    ]
    # ProcessBench from the hub; the others as URIs the stage fetches once (never a laptop path)
    assert all(b.source.split(":", 1)[1].startswith(("https://", "gsm8k", "math", "olympiad", "omni"))
               for b in cfg.suite())  # fmt: skip
    assert cfg.max_tokens == 32768 and cfg.require_marker


def test_pipeline_default_suite_is_the_paper_preset() -> None:
    import sys

    sys.path.insert(0, str(PAPER.parents[3]))
    from pipelines.deepcritic import PAPER_BENCHMARKS

    cfg = load_config(EvalConfig, PAPER)
    assert [f"{b.name}={b.source}" for b in cfg.suite()] == PAPER_BENCHMARKS


def test_cache_key_covers_every_setting_a_prediction_depends_on() -> None:
    bench = Benchmark("b", "processbench:gsm8k")
    base = EvalConfig(samples=8)
    key = settings_key(base, bench)
    changed = [
        EvalConfig(samples=8, require_marker=False),
        EvalConfig(samples=8, max_tokens=8192),
        EvalConfig(samples=8, generation=BackendConfig(kind="vllm")),
        EvalConfig(samples=8, generation=BackendConfig(dtype="float16")),
    ]
    assert all(settings_key(c, bench) != key for c in changed)
    assert settings_key(base, Benchmark("b", "processbench:/other/gsm8k.json")) != key
    assert settings_key(EvalConfig(samples=8), bench) == key
    # require_marker only shapes votes: single-sample keys do not depend on it
    single = [EvalConfig(require_marker=flag) for flag in (True, False)]
    assert settings_key(single[0], bench) == settings_key(single[1], bench)


def _voter(prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
    """Per item: 3 marked votes for step 2 minority vs 5 unmarked last boxes for step 3."""
    if params.n == 1:
        return ["\\boxed{3}"]  # official reading: last box anywhere
    marked = [render_answer(2)] * 3
    unmarked: list[str | Completion] = ["so \\boxed{3}"] * 4
    return [*marked, *unmarked, Completion("**Critique of Step 1**\nok", "length")]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **kw: object) -> evaluate.EvalResult:
    backend = ScriptedBackend(_voter)
    monkeypatch.setattr(evaluate, "make_backend", lambda _cfg: backend)
    kw.setdefault("tracking_uri", "off")
    cfg = EvalConfig(
        benchmarks=[f"mrgsm8k=mrgsm8k:{MRGSM8K}"],
        out=str(tmp_path / "eval"),
        **kw,  # type: ignore[arg-type]
    )
    return evaluate.run(cfg)


def _rows(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "eval" / "predictions" / "mrgsm8k.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_released_mrgsm8k_file_is_scored_in_full_with_its_empty_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = _run(tmp_path, monkeypatch)
    rows = _rows(tmp_path)
    assert result.metrics["mrgsm8k"].n == len(rows) == 12
    assert rows[4]["id"] == "mrgsm8k-4" and rows[4]["label"] == 2 and rows[4]["prediction"] == 2
    assert result.metrics["mrgsm8k"].n_error == 5  # labels 1, 2, 1, 0, 2 in the fixture


def test_majority_vote_drops_unmarked_samples_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    strict = _run(tmp_path / "a", monkeypatch, samples=8)
    rows = _rows(tmp_path / "a")
    assert {r["prediction"] for r in rows} == {1}  # the 3 marked votes win over 4 unmarked
    assert all(r["votes"] == 3 for r in rows)
    counts = strict.counts["mrgsm8k"]
    assert counts["samples"] == 96 and counts["samples_dropped"] == 60
    assert counts["samples_no_marker"] == 48 and counts["samples_truncated"] == 12
    saved = json.loads((tmp_path / "a" / "eval" / "metrics.json").read_text())
    assert saved["counts"]["mrgsm8k"]["samples_dropped"] == 60

    lenient = _run(tmp_path / "b", monkeypatch, samples=8, require_marker=False)
    assert {r["prediction"] for r in _rows(tmp_path / "b")} == {2}  # 4 unmarked outvote 3
    assert lenient.counts["mrgsm8k"]["samples_dropped"] == 12  # only the unreadable ones


def test_changing_require_marker_does_not_reuse_old_votes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path, monkeypatch, samples=8)
    again = _run(tmp_path, monkeypatch, samples=8, require_marker=False)
    assert {r["prediction"] for r in _rows(tmp_path)} == {2}
    assert again.metrics["mrgsm8k"].n == 12


def test_drop_counts_reach_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_mlflow: str
) -> None:
    import mlflow

    result = _run(tmp_path, monkeypatch, samples=8, tracking_uri=None)
    assert result.run_id is not None
    metrics = mlflow.get_run(result.run_id).data.metrics
    assert metrics["mrgsm8k.samples_dropped"] == 60 and metrics["mrgsm8k.load_skipped"] == 0
    assert metrics["mrgsm8k.n"] == 12


def _odd(prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
    """Outputs the two parsers read differently (issue 23's examples)."""
    if params.n == 1:
        return ["**Answer**: \\boxed{2} ... \\boxed{3}"]  # official: last box 3; strict: 2
    return ["**Answer**: \\boxed{x}"] * 3 + ["**Answer**: \\boxed{2}"] * 2 + ["\\boxed{2}"] * 3


@pytest.mark.parametrize(
    ("samples", "parser", "require_marker", "expected", "votes"),
    [
        (1, "strict", True, 1, 1),
        (1, "official", True, 2, 1),
        (8, "strict", True, 1, 2),  # the x boxes are unreadable and dropped
        (8, "official", True, None, 5),  # Counter over box strings: "x" wins, int() fails
        (8, "official", False, 1, 8),  # unmarked samples vote: "2" x5 beats "x" x3
    ],
)
def test_official_parser_reads_as_eval_py(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    samples: int,
    parser: str,
    require_marker: bool,
    expected: int | None,
    votes: int,
) -> None:
    backend = ScriptedBackend(_odd)
    monkeypatch.setattr(evaluate, "make_backend", lambda _cfg: backend)
    cfg = EvalConfig(
        benchmarks=[f"mrgsm8k=mrgsm8k:{MRGSM8K}"],
        out=str(tmp_path / "eval"),
        tracking_uri="off",
        samples=samples,
        parser=parser,
        require_marker=require_marker,
    )
    evaluate.run(cfg)
    rows = _rows(tmp_path)
    assert {r["prediction"] for r in rows} == {expected}
    assert {r["votes"] for r in rows} == {votes}


def test_parser_is_checked_and_keys_the_cache() -> None:
    bench = Benchmark("b", "processbench:gsm8k")
    assert settings_key(EvalConfig(parser="official"), bench) != settings_key(EvalConfig(), bench)
    with pytest.raises(ValueError, match="parser"):
        EvalConfig(parser="loose")
