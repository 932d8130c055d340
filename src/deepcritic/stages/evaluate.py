"""``deepcritic eval``: run a critic on step-labelled benchmarks and score it (ProcessBench formula).

The suite is a list of benchmarks, each a name and its data source (any
:func:`deepcritic.data.loaders.load_solutions` spec: a local file, ``processbench:<split>``, the
bundled slices). In YAML an entry is ``{name: mrgsm8k, source: "mrgsm8k:/data/test.json"}``; on the
command line (and from the pipeline) ``name=source`` or a bare source (the name is derived from it):
``--benchmarks mrgsm8k=mrgsm8k:/data/test.json,processbench:gsm8k``. The paper preset lists the
paper's six: ProcessBench's four splits, MR-GSM8K and the PRM800K test set.

With ``parser: strict`` (the default) single critiques are read in the grader's lenient mode (the
ProcessBench fallback: last box anywhere). With ``samples > 1`` (Maj@k) and ``require_marker``
each sample is read in strict mode, so samples without an ``**Answer**:`` marker are dropped from
the vote (counted) as the DeepCritic reference does for critics trained to write one. ``parser: official`` reads single critiques and
votes exactly as the authors' ``eval.py`` does (:mod:`deepcritic.grader`, official mode).

Writes, under ``out``: ``predictions/<benchmark>.jsonl`` (id, label, prediction, match, statuses,
raw outputs), ``metrics.json`` and ``f1.png``; prints a table; logs params, metrics and artifacts to
MLflow. A benchmark whose predictions file is complete for the same settings (model, backend,
sampling, ``require_marker``, prompt, data source) is not generated again (rerun after a crash
resumes where it stopped, benchmark by benchmark). With ``paper_results`` (the paper-reference
preset) the F1 table is also printed beside the paper's published numbers, ours - paper per
benchmark, and written to ``paper_comparison.json``/``.md`` (:mod:`deepcritic.stages.paper_compare`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from deepcritic.config import add_dataclass_arguments, config_from_args, to_dict
from deepcritic.critique_stats import CritiqueStats, critique_stats
from deepcritic.data.select import SELECTIONS, select_items
from deepcritic.generation import Backend, BackendConfig, Prompt, SamplingParams, make_backend
from deepcritic.grader import OFFICIAL_MARKER, is_match, official_extract_answer, parse_critique
from deepcritic.prompting import load_prompt
from deepcritic.records import Solution, iter_jsonl, write_jsonl
from deepcritic.reference import (
    CRITIQUE_TEMPLATE,
    FILES,
    QWEN_SYSTEM,
    check_prompt_set,
    critic_prompt,
    released_steps,
)
from deepcritic.scoring import (
    BenchmarkMetrics,
    average,
    check_parser,
    compute_metrics,
    majority_vote,
    read_output,
    read_outputs,
    usable_label,
)
from deepcritic.stages.paper_compare import PaperComparison, paper_reference, publish
from deepcritic.tracking import Tracker, stage_run

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[\w.\-]+$")


@dataclass(frozen=True)
class Benchmark:
    """One benchmark of the suite: its name (metrics, predictions file) and its data source."""

    name: str
    source: str  # a load_solutions spec, e.g. mrgsm8k:/data/Mr-GSM8K/processed_test.json


def bench_name(source: str) -> str:
    """A file- and metric-safe name derived from a source spec (``processbench:gsm8k`` ->
    ``processbench-gsm8k``)."""
    return source.replace("/", "_").replace(":", "-").strip("-_") or "benchmark"


def parse_benchmark(entry: Any, where: str = "benchmarks") -> Benchmark:
    """``{name, source}`` mapping, ``"name=source"`` or a bare source -> :class:`Benchmark`."""
    if isinstance(entry, Benchmark):
        return entry
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"name", "source"}
        source = entry.get("source")
        if unknown or not isinstance(source, str) or not source.strip():
            raise ValueError(
                f"{where}: expected {{name, source}} with a non-empty source, got {dict(entry)!r}"
            )
        name = entry.get("name") or bench_name(source)
        return _checked(Benchmark(str(name).strip(), source.strip()), where)
    if isinstance(entry, str) and entry.strip():
        name, sep, source = entry.strip().partition("=")
        if sep and name.strip() and source.strip():
            return _checked(Benchmark(name.strip(), source.strip()), where)
        return Benchmark(bench_name(entry.strip()), entry.strip())
    raise ValueError(f"{where}: expected a source spec, name=source or a mapping, got {entry!r}")


def _checked(bench: Benchmark, where: str) -> Benchmark:
    if not _NAME.match(bench.name):
        raise ValueError(
            f"{where}.name: {bench.name!r} must be letters, digits, '.', '_' or '-' "
            "(it names the predictions file and the metrics)"
        )
    return bench


@dataclass
class EvalConfig:
    # the suite: each entry a {name, source} mapping, "name=source" or a bare source spec
    benchmarks: list[Any] = field(
        default_factory=lambda: ["processbench:gsm8k", "processbench:math"]
    )
    generation: BackendConfig = field(default_factory=BackendConfig)
    samples: int = 1  # k critiques per item; k > 1 = majority vote (paper: Maj@8)
    temperature: float = 0.6  # paper: single-sample evaluation at T=0.6
    vote_temperature: float = 1.0  # paper: Maj@8 samples at T=1.0
    top_p: float = 0.9  # paper
    max_tokens: int = 4096  # ours: long enough for deliberate critiques of ~10 steps
    seed: int = 0  # sampling seed (reference: 42)
    limit: int | None = None  # N items per benchmark (None = all)
    # which items: first = the first `limit` in file order (paper: all items); balanced = `limit`
    # items, half erroneous and half correct, by a seeded shuffle (released files are sorted by label)
    select: str = "first"
    max_steps: int | None = None  # only solutions of at most this many steps (None = all: paper)
    # Maj@k (samples > 1): drop samples without an **Answer**: marker (grader's strict mode), as the
    # reference does for DeepCritic critics; set false for baseline models never trained to write it
    require_marker: bool = True
    # how critiques are read: strict = the project's grader (marker, balanced braces, stripping);
    # official = the authors' ProcessBench eval.py exactly (last box, int(), Counter over boxes);
    # paper-reference preset: official
    parser: str = "strict"
    # deepcritic = the project's prompts (prompts/critique_*.md); reference = the authors' template,
    # Qwen's default system message and eval.py's step numbering (deepcritic.reference)
    prompt_set: str = "deepcritic"
    # the paper's published F1 to print beside ours (with ours - paper): a YAML file or a packaged
    # name (paper/results.yaml, arXiv 2505.00662); None = no comparison (paper-reference: set)
    paper_results: str | None = None
    paper_row: str | None = None  # the paper_results row; None = the row naming generation.model
    out: str = "outputs/eval"  # folder for predictions, metrics.json and the F1 plot
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables

    CLI_ALIASES: ClassVar[dict[str, str]] = {
        "model": "generation.model",
        "backend": "generation.kind",
    }

    def __post_init__(self) -> None:
        check_parser(self.parser)
        if self.select not in SELECTIONS:
            raise ValueError(f"select: {self.select!r} is not one of {', '.join(SELECTIONS)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: must be >= 1 or null, got {self.max_steps}")
        check_prompt_set(self.prompt_set)
        if self.paper_row is not None and self.paper_results is None:
            raise ValueError("paper_row: set paper_results too (the file the row is in)")
        suite = [parse_benchmark(b, f"benchmarks[{i}]") for i, b in enumerate(self.benchmarks)]
        names = Counter(b.name for b in suite)
        dupes = sorted(n for n, c in names.items() if c > 1)
        if dupes:
            raise ValueError(f"benchmarks: names must be unique, {dupes} repeat")
        self.benchmarks = suite

    def suite(self) -> list[Benchmark]:
        """The benchmarks as :class:`Benchmark` objects (normalized at construction)."""
        return [parse_benchmark(b) for b in self.benchmarks]

    @property
    def voting_strict(self) -> bool:
        """Whether votes are read in the grader's strict mode (Maj@k with ``require_marker``)."""
        return self.samples > 1 and self.require_marker

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
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # drops per benchmark
    stats: dict[str, CritiqueStats] = field(default_factory=dict)  # output shape per benchmark
    paper: PaperComparison | None = None  # beside the paper's numbers (paper_results)

    @property
    def avg_f1(self) -> float:
        return self.averages["avg_f1"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmarks": {k: m.to_dict() for k, m in self.metrics.items()},
            "counts": self.counts,
            "stats": {k: st.to_dict() for k, st in self.stats.items()},
            **self.averages,
            "run_id": self.run_id,
            **({"paper_comparison": self.paper.to_dict()} if self.paper else {}),
        }

    def flat(self) -> dict[str, float]:
        """Averages plus ``f1.<benchmark>`` and ``answer_rate.<benchmark>``: one flat mapping."""
        out = dict(self.averages)
        for name, bench in self.metrics.items():
            out[f"f1.{name}"] = float(bench.f1)
        for name, st in self.stats.items():
            out[f"answer_rate.{name}"] = st.answer_rate
        return out


def settings_key(config: EvalConfig, bench: Benchmark) -> str:
    """Everything a prediction depends on: the backend (model, kind, engine settings), sampling,
    how votes are read, the critique prompt and the benchmark's data source."""
    if config.prompt_set == "reference":
        prompt = "reference:" + FILES[CRITIQUE_TEMPLATE].sha256 + QWEN_SYSTEM
    else:
        prompt = load_prompt("critique_system.md") + load_prompt("critique_user.md")
    parts = {
        "generation": to_dict(config.generation),
        "sampling": to_dict(config.sampling()),
        "voting_strict": config.voting_strict,
        "parser": config.parser,
        "prompt": hashlib.sha256(prompt.encode()).hexdigest(),
        "source": bench.source,
    }
    s = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(s.encode()).hexdigest()[:16]


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


def item_messages(record: Solution, prompt_set: str) -> Prompt:
    """One item's critique prompt in the chosen prompt set (:func:`deepcritic.reference.critic_prompt`,
    the one dispatcher); the reference set numbers the released step texts, as eval.py does."""
    steps = released_steps(record) if prompt_set == "reference" else record.steps
    return critic_prompt(record.problem, steps, prompt_set)


def predict_rows(
    backend: Backend, records: list[Solution], config: EvalConfig, desc: str
) -> list[dict[str, Any]]:
    """Critique every record (k samples), read them with the one grader, vote, and compare.

    ``votes`` counts the samples that entered the vote; the others were dropped (unreadable, or no
    marker under ``require_marker``)."""
    prompts = [item_messages(r, config.prompt_set) for r in records]
    outputs = backend.generate(prompts, config.sampling(), desc=desc)
    rows = []
    for rec, outs in zip(records, outputs, strict=True):
        judgments = [parse_critique(c.text) for c in outs]
        texts = [c.text for c in outs]
        if config.parser == "official":
            pred = (
                read_output(texts[0], parser="official")
                if len(texts) == 1
                else read_outputs(texts, parser="official", require_marker=config.require_marker)
            )
            kept = _official_kept(texts, config)
            votes = sum(official_extract_answer(t) is not None for t in kept)
        else:
            labels = [usable_label(t, require_marker=config.voting_strict) for t in texts]
            pred, votes = majority_vote(labels), sum(lab is not None for lab in labels)
        rows.append(
            {
                "id": rec.id,
                "label": rec.label,
                "prediction": pred,
                "match": is_match(pred, rec.label),
                "votes": votes,
                "statuses": [j.status.value for j in judgments],
                "outputs": [c.text for c in outs],
                "finish_reasons": [c.finish_reason for c in outs],
                "completion_tokens": sum(c.completion_tokens for c in outs),
            }
        )
    return rows


def _official_kept(texts: list[str], config: EvalConfig) -> list[str]:
    """The samples eval.py lets vote (Maj@k of a DeepCritic model: those with the marker)."""
    if len(texts) > 1 and config.require_marker:
        return [t for t in texts if OFFICIAL_MARKER in t]
    return texts


def drop_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Per benchmark: samples dropped from votes, unreadable items, truncated samples."""
    samples = sum(len(r["outputs"]) for r in rows)
    votes = sum(int(r.get("votes", len(r["outputs"]))) for r in rows)
    return {
        "samples": samples,
        "samples_dropped": samples - votes,
        "samples_no_marker": sum(
            s == "no_answer_marker" for r in rows for s in r.get("statuses", [])
        ),
        "samples_truncated": sum(f == "length" for r in rows for f in r.get("finish_reasons", [])),
        "items_unreadable": sum(r["prediction"] is None for r in rows),
    }


def _bar_chart(metrics: dict[str, BenchmarkMetrics], path: Path) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # horizontal bars: long benchmark names stay readable on the y axis, never overlap
    names = list(metrics)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.45 * len(names)))
    bars = ax.barh(names, [metrics[n].f1 for n in names], color="#3b6ea5")
    ax.bar_label(bars, fmt="%.1f", padding=3)
    ax.invert_yaxis()  # first benchmark on top
    ax.set_xlabel("F1 (%)")
    ax.set_xlim(0, 105)
    ax.set_title("Critic F1 per benchmark")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def format_table(
    metrics: dict[str, BenchmarkMetrics],
    averages: dict[str, float],
    stats: dict[str, CritiqueStats] | None = None,
) -> str:
    """The results table; ``answer%`` = items with a readable ``**Answer**: \\boxed{k}``."""
    stats = stats or {}
    head = f"{'benchmark':<28}{'n':>6}{'acc_err':>10}{'acc_cor':>10}{'F1':>8}{'answer%':>9}"
    lines = [head, "-" * len(head)]
    for name, m in metrics.items():
        rate = f"{stats[name].answer_rate:>9.1f}" if name in stats else f"{'':>9}"
        lines.append(
            f"{name:<28}{m.n:>6}{m.acc_error:>10.1f}{m.acc_correct:>10.1f}{m.f1:>8.1f}{rate}"
        )
    lines.append("-" * len(head))
    avg = averages
    rate = f"{avg['avg_answer_rate']:>9.1f}" if "avg_answer_rate" in avg else ""
    lines.append(
        f"{'average':<28}{'':>6}{avg['avg_acc_error']:>10.1f}{avg['avg_acc_correct']:>10.1f}"
        f"{avg['avg_f1']:>8.1f}{rate}"
    )
    return "\n".join(lines)


@dataclass
class BenchOutcome:
    metrics: BenchmarkMetrics
    counts: dict[str, int]
    stats: CritiqueStats


def _evaluate_one(
    bench: Benchmark, config: EvalConfig, backend_box: list[Backend], out: Path
) -> BenchOutcome:
    from deepcritic.data.loaders import load_solutions

    limit = config.limit if config.select == "first" and config.max_steps is None else None
    loaded, report = load_solutions(bench.source, limit=limit)
    records = select_items(loaded, config.select, config.limit, config.seed, config.max_steps)
    path = out / "predictions" / f"{bench.name}.jsonl"
    key = settings_key(config, bench)
    rows = _load_cached(path, records, key)
    if rows is None:
        if not backend_box:
            backend_box.append(make_backend(config.generation))
        rows = predict_rows(backend_box[0], records, config, desc=f"critique {bench.name}")
        write_jsonl(path, ({**r, "settings": key} for r in rows))
    metrics = compute_metrics([r["label"] for r in rows], [r["prediction"] for r in rows])
    counts = {"load_skipped": report.skipped, **drop_counts(rows)}
    log.info(
        "%s: %d items (%d skipped at load), F1 %.2f; %s",
        bench.name,
        len(rows),
        report.skipped,
        metrics.f1,
        json.dumps(counts, sort_keys=True),
    )
    return BenchOutcome(metrics, counts, critique_stats(rows))


def _log(
    tracker: Tracker,
    result: EvalResult,
    counts: dict[str, dict[str, int]],
    out: Path,
    backend: Backend | None,
) -> None:
    for name, m in result.metrics.items():
        tracker.log_metrics({f"{name}.{k}": float(v) for k, v in m.to_dict().items()})
        tracker.log_metrics({f"{name}.{k}": float(v) for k, v in counts[name].items()})
        tracker.log_metrics({f"{name}.{k}": v for k, v in result.stats[name].scalars().items()})
    tracker.log_metrics(result.averages)
    if backend is not None:
        tracker.log_metrics({"generation.tokens_per_s": backend.stats.tokens_per_second})
    tracker.log_artifact(out / "metrics.json")
    tracker.log_artifact(out / "predictions", "predictions")
    tracker.log_artifact(out / "f1.png")


def _mean(values: Any) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else 0.0


def run(config: EvalConfig) -> EvalResult:
    """Evaluate ``config.generation.model`` on every benchmark; write, print and log results."""
    if config.samples < 1:
        raise ValueError(f"samples must be >= 1, got {config.samples}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    backend_box: list[Backend] = []
    paper = None  # checked before anything is generated
    if config.paper_results:
        paper = paper_reference(
            config.paper_results, config.generation.model, config.samples, config.paper_row
        )
    with stage_run("evaluate", config, tracking_uri=config.tracking_uri) as tracker:
        suite = config.suite()
        done = {b.name: _evaluate_one(b, config, backend_box, out) for b in suite}
        metrics = {name: o.metrics for name, o in done.items()}
        counts = {name: o.counts for name, o in done.items()}
        stats = {name: o.stats for name, o in done.items()}
        averages = {
            **average(metrics),
            "avg_answer_rate": _mean(s.answer_rate for s in stats.values()),
        }
        result = EvalResult(metrics, averages, str(out), tracker.run_id, counts, stats)
        if paper is not None:
            scored = [(b.name, b.source, metrics[b.name].n, metrics[b.name].f1) for b in suite]
            result.paper = paper.compare(scored, averages["avg_f1"])
            publish(result.paper, out, tracker)
        (out / "metrics.json").write_text(json.dumps(result.to_dict(), indent=2))
        _bar_chart(metrics, out / "f1.png")
        _log(tracker, result, counts, out, backend_box[0] if backend_box else None)
    for b in backend_box:
        b.close()
    print(format_table(metrics, result.averages, stats))
    if result.paper is not None:
        print("\n" + result.paper.table())
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
