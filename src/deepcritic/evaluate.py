"""``deepcritic eval``: run a critic on step-labelled benchmarks and score it (ProcessBench formula).

Writes, under ``out``: ``predictions/<benchmark>.jsonl`` (id, label, prediction, match, statuses,
raw outputs), ``metrics.json`` and ``f1.png``; prints a table; logs params, metrics and artifacts to
MLflow. A benchmark whose predictions file is complete for the same settings is not generated
again (rerun after a crash resumes where it stopped, benchmark by benchmark).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deepcritic.config import add_dataclass_arguments, config_from_args, to_dict
from deepcritic.generation import Backend, BackendConfig, SamplingParams, make_backend
from deepcritic.grader import is_match, parse_critique
from deepcritic.prompting import critique_messages
from deepcritic.records import Solution, iter_jsonl, write_jsonl
from deepcritic.scoring import (
    BenchmarkMetrics,
    average,
    compute_metrics,
    majority_vote,
    usable_label,
)
from deepcritic.tracking import Tracker, stage_run

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    benchmarks: list[str] = field(
        default_factory=lambda: ["processbench:gsm8k", "processbench:math"]
    )
    generation: BackendConfig = field(default_factory=BackendConfig)
    samples: int = 1  # k critiques per item; k > 1 = majority vote (paper: Maj@8)
    temperature: float = 0.6  # paper: single-sample evaluation at T=0.6
    vote_temperature: float = 1.0  # paper: Maj@8 samples at T=1.0
    top_p: float = 0.9  # paper
    max_tokens: int = 4096  # ours: long enough for deliberate critiques of ~10 steps
    seed: int = 0
    limit: int | None = None  # first N items per benchmark (None = all)
    require_marker: bool = False  # voting: drop samples without an **Answer**: marker
    out: str = "outputs/eval"
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables

    CLI_ALIASES: ClassVar[dict[str, str]] = {
        "model": "generation.model",
        "backend": "generation.kind",
    }

    def sampling(self) -> SamplingParams:
        temp = self.temperature if self.samples == 1 else self.vote_temperature
        return SamplingParams(
            n=self.samples,
            temperature=temp,
            top_p=self.top_p,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )


@dataclass
class EvalResult:
    metrics: dict[str, BenchmarkMetrics]
    averages: dict[str, float]
    out_dir: str
    run_id: str | None = None

    @property
    def avg_f1(self) -> float:
        return self.averages["avg_f1"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmarks": {k: m.to_dict() for k, m in self.metrics.items()},
            **self.averages,
            "run_id": self.run_id,
        }


def _settings_key(config: EvalConfig) -> str:
    s = json.dumps([config.generation.model, to_dict(config.sampling())], sort_keys=True)
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def _bench_name(spec: str) -> str:
    return spec.replace("/", "_").replace(":", "-").strip("-_") or "benchmark"


def _load_cached(path: Path, records: list[Solution], key: str) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    rows = [r for _, r in iter_jsonl(path)]
    if [r.get("id") for r in rows] != [r.id for r in records] or any(
        r.get("settings") != key for r in rows
    ):
        return None
    log.info("%s: reusing %d finished predictions", path.name, len(rows))
    return rows


def predict_rows(
    backend: Backend, records: list[Solution], config: EvalConfig, desc: str
) -> list[dict[str, Any]]:
    """Critique every record (k samples), parse with the one grader, vote, and compare."""
    prompts = [critique_messages(r.problem, r.steps) for r in records]
    outputs = backend.generate(prompts, config.sampling(), desc=desc)
    rows = []
    for rec, outs in zip(records, outputs, strict=True):
        judgments = [parse_critique(c.text) for c in outs]
        pred = majority_vote(
            usable_label(j, require_marker=config.require_marker) for j in judgments
        )
        rows.append(
            {
                "id": rec.id,
                "label": rec.label,
                "prediction": pred,
                "match": is_match(pred, rec.label),
                "statuses": [j.status.value for j in judgments],
                "outputs": [c.text for c in outs],
                "completion_tokens": sum(c.completion_tokens for c in outs),
            }
        )
    return rows


def _bar_chart(metrics: dict[str, BenchmarkMetrics], path: Path) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(metrics), 3.2))
    names = list(metrics)
    bars = ax.bar(names, [metrics[n].f1 for n in names], color="#3b6ea5")
    ax.bar_label(bars, fmt="%.1f")
    ax.set_ylabel("F1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Critic F1 per benchmark")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def format_table(metrics: dict[str, BenchmarkMetrics], averages: dict[str, float]) -> str:
    head = f"{'benchmark':<28}{'n':>6}{'acc_err':>10}{'acc_cor':>10}{'F1':>8}"
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        lines.append(f"{name:<28}{m.n:>6}{m.acc_error:>10.1f}{m.acc_correct:>10.1f}{m.f1:>8.1f}")
    lines.append("-" * len(head))
    avg = averages
    lines.append(
        f"{'average':<28}{'':>6}{avg['avg_acc_error']:>10.1f}{avg['avg_acc_correct']:>10.1f}{avg['avg_f1']:>8.1f}"
    )
    return "\n".join(lines)


def _evaluate_one(
    spec: str, config: EvalConfig, backend_box: list[Backend], out: Path
) -> tuple[str, BenchmarkMetrics]:
    from deepcritic.data.loaders import load_solutions

    records, report = load_solutions(spec, limit=config.limit)
    name = _bench_name(spec)
    path = out / "predictions" / f"{name}.jsonl"
    key = _settings_key(config)
    rows = _load_cached(path, records, key)
    if rows is None:
        if not backend_box:
            backend_box.append(make_backend(config.generation))
        rows = predict_rows(backend_box[0], records, config, desc=f"critique {name}")
        write_jsonl(path, ({**r, "settings": key} for r in rows))
    metrics = compute_metrics([r["label"] for r in rows], [r["prediction"] for r in rows])
    log.info(
        "%s: %d items (%d skipped at load), F1 %.2f", name, len(rows), report.skipped, metrics.f1
    )
    return name, metrics


def _log(tracker: Tracker, result: EvalResult, out: Path, backend: Backend | None) -> None:
    for name, m in result.metrics.items():
        tracker.log_metrics({f"{name}.{k}": float(v) for k, v in m.to_dict().items()})
    tracker.log_metrics(result.averages)
    if backend is not None:
        tracker.log_metrics({"generation.tokens_per_s": backend.stats.tokens_per_second})
    tracker.log_artifact(out / "metrics.json")
    tracker.log_artifact(out / "predictions", "predictions")
    tracker.log_artifact(out / "f1.png")


def run(config: EvalConfig) -> EvalResult:
    """Evaluate ``config.generation.model`` on every benchmark; write, print and log results."""
    if config.samples < 1:
        raise ValueError(f"samples must be >= 1, got {config.samples}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    backend_box: list[Backend] = []
    with stage_run("evaluate", config, tracking_uri=config.tracking_uri) as tracker:
        metrics = dict(_evaluate_one(spec, config, backend_box, out) for spec in config.benchmarks)
        result = EvalResult(metrics, average(metrics), str(out), tracker.run_id)
        (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
        _bar_chart(metrics, out / "f1.png")
        _log(tracker, result, out, backend_box[0] if backend_box else None)
    for b in backend_box:
        b.close()
    print(format_table(metrics, result.averages))
    return result


def register_cli(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "eval", help="evaluate a critic on ProcessBench-style benchmarks", description=__doc__
    )
    add_dataclass_arguments(p, EvalConfig)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = run(config_from_args(EvalConfig, args))
    print(f"metrics: {Path(result.out_dir) / 'metrics.json'}")
    if result.run_id:
        print(f"MLflow run: {result.run_id}")
    return 0
