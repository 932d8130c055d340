r"""The learning benchmark: does each stage teach the critic something? base -> SFT -> GRPO.

One run chains the real stages on disjoint data and evaluates every stage's model on the same
held-out items:

* **train** (GSM8K *train* problems, ``gsm8k-perturbed:train``): the first ``sft_examples``
  solutions get seed critiques from the configured teacher and train SFT; the next
  ``grpo_examples`` (other problems) are GRPO's labelled prompts;
* **held out**: ``gsm8k-perturbed:test`` (GSM8K *test* problems: disjoint from train), plus
  balanced ProcessBench slices (as many erroneous as correct items, chosen by a seeded shuffle:
  the released files are sorted by label) when ``processbench_dir`` is given.

Per stage and benchmark: readable-verdict rate, acc_error, acc_correct, F1, predicted-label
histogram, mean critique length, truncation rate and wall time (:mod:`deepcritic.critique_stats`),
next to the trivial baselines (always -1; always the most frequent erroneous step). Everything is
printed, written to ``<work_dir>/report.json`` + ``learning.png`` and logged to MLflow (the stage
runs nest under one ``learning`` run). Finished work is reused on a rerun: seed records, a trained
``final`` checkpoint, and evaluate's cached predictions.

``teacher: calculator`` is a labelled CPU stand-in (:mod:`deepcritic.stages.seed.calculator`); the
method's LLM teacher (``teacher: llm``, the seed stage's production default) runs with
``teacher_model``. The held-out items are never used to choose settings.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from deepcritic import tracking
from deepcritic.config import to_dict
from deepcritic.critique_stats import trivial_baselines
from deepcritic.data.loaders import load_solutions
from deepcritic.data.select import balanced_slice
from deepcritic.generation import BackendConfig
from deepcritic.records import write_jsonl

log = logging.getLogger(__name__)
STAGES = ("base", "sft", "grpo")


@dataclass
class LearningConfig:
    """The CPU defaults fit ~60 minutes on 2 cores with SmolLM2-135M-Instruct (the embedded
    default); on a GPU pass a bigger ``model`` and more data."""

    model: str = "default"  # the base critic (default = SmolLM2-135M-Instruct, offline)
    teacher: Literal["llm", "calculator"] = "calculator"  # calculator: CPU stand-in, see above
    teacher_model: str = "default"  # teacher: llm only (paper: Qwen2.5-72B-Instruct)
    work_dir: str = "outputs/bench_learning"
    sft_examples: int = 128  # training solutions for seed critiques (half correct, half wrong)
    grpo_examples: int = 64  # further training solutions, other problems, for GRPO
    eval_perturbed: int = 40  # held-out GSM8K test solutions (20 problems, balanced)
    processbench_dir: str = ""  # folder with ProcessBench <split>.json files ("" = skip)
    processbench_splits: list[str] = field(default_factory=lambda: ["gsm8k", "math"])
    eval_processbench: int = 12  # items per split, balanced erroneous / correct (6 + 6)
    processbench_max_steps: int = 6  # only solutions this short (the CPU token budget)
    max_tokens: int = 448  # critique budget at evaluation (and GRPO's completion length)
    eval_temperature: float = 0.6  # paper
    device: str = "cpu"
    batch_size: int = 32  # generation rows decoding together
    sft_learning_rate: float = 1e-4  # ours: 135M, a few hundred examples (paper: 1e-5 for 7B)
    sft_epochs: float = (
        1.0  # paper: 3 (SFT runs at ~130 tokens/s on 2 cores: 16 steps of 8 take ~11 min)
    )
    sft_batch_size: int = 8  # examples per optimizer step (paper: 64)
    # rows per forward pass: on CPU one row pads nothing (compute-bound either way) and keeps the
    # fp32 logits (rows x tokens x 49K vocabulary) small; 8 rows of ~1K tokens spent most time
    # allocating them
    sft_micro_batch_size: int = 1
    sft_max_steps: int = -1  # > 0 overrides epochs
    # SFT and GRPO: auto = bf16 on GPU and autocast on CPUs with AMX, else fp32
    train_precision: Literal["auto", "bf16", "fp32"] = "auto"
    grpo_steps: int = 4  # ~2 min per step on 2 cores (HF generation of 8 critiques + update)
    grpo_learning_rate: float = 1e-5  # ours (the local preset's)
    grpo_generations: int = 4  # group size (paper-scale runs: 8)
    grpo_batch_size: int = 8  # completions per step (2 prompts x 4)
    seed: int = 0
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off"

    def __post_init__(self) -> None:
        for name in ("sft_examples", "grpo_examples", "eval_perturbed", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.teacher not in ("llm", "calculator"):
            raise ValueError(f"teacher: expected llm or calculator, got {self.teacher!r}")


@dataclass
class StageReport:
    stage: str
    model: str
    seconds: float  # training time of the stage (0 for base) + its evaluation
    benchmarks: dict[str, dict[str, Any]]  # name -> metrics + critique stats
    train: dict[str, Any] = field(default_factory=dict)  # loss / reward figures


@dataclass
class LearningResult:
    stages: list[StageReport]
    baselines: dict[str, dict[str, dict[str, float]]]  # benchmark -> baseline -> metrics
    data: dict[str, int]
    report_path: str
    plot_path: str
    run_id: str | None = None


def prepare_data(config: LearningConfig, data_dir: Path) -> dict[str, Path]:
    """Write the training files and the held-out benchmark files; return their paths by name."""
    data_dir.mkdir(parents=True, exist_ok=True)
    train, _ = load_solutions(
        "gsm8k-perturbed:train", limit=config.sft_examples + config.grpo_examples
    )
    files = {
        "sft_train": (train[: config.sft_examples]),
        "grpo_train": (train[config.sft_examples :]),
        "gsm8k-perturbed": load_solutions("gsm8k-perturbed:test", limit=config.eval_perturbed)[0],
    }
    if config.processbench_dir:
        for split in config.processbench_splits:
            path = Path(config.processbench_dir) / f"{split}.json"
            items, _ = load_solutions(f"processbench:{path}")
            files[f"processbench-{split}"] = balanced_slice(
                items, config.eval_processbench, config.seed, config.processbench_max_steps
            )
    out = {}
    for name, rows in files.items():
        out[name] = data_dir / f"{name}.jsonl"
        write_jsonl(out[name], rows)
    return out


def seed_critiques(
    config: LearningConfig, data: Path, out_dir: Path
) -> tuple[Path, dict[str, int]]:
    """SFT data from the configured teacher (the seed stage itself, resumable)."""
    from deepcritic.stages.seed import SeedConfig
    from deepcritic.stages.seed import run as run_seed

    seed_config = SeedConfig(
        teacher=config.teacher,
        data=str(data),
        out_dir=str(out_dir),
        generation=BackendConfig(model=config.teacher_model, device=config.device),
        one_per_problem=False,  # both solutions of a problem: the clean one and the wrong one
        balance_cap=config.sft_examples,  # keep every correct solution (balanced already)
        tracking_uri=config.tracking_uri,
    )
    result = run_seed(seed_config)
    if not result.sft_path:
        raise RuntimeError(f"seed: no SFT data written under {out_dir}")
    counts = {k: v for k, v in result.counts.items() if k.startswith("total.")}
    return Path(result.sft_path), counts


def evaluate_stage(
    config: LearningConfig, model: str, benchmarks: dict[str, Path], out: Path
) -> dict[str, dict[str, Any]]:
    """The evaluate stage on every held-out file; metrics and critique stats per benchmark."""
    from deepcritic.stages.evaluate import EvalConfig
    from deepcritic.stages.evaluate import run as run_eval

    result = run_eval(
        EvalConfig(
            benchmarks=[f"{name}=jsonl:{path}" for name, path in benchmarks.items()],
            generation=BackendConfig(
                model=model, device=config.device, batch_size=config.batch_size
            ),
            temperature=config.eval_temperature,
            max_tokens=config.max_tokens,
            seed=config.seed,
            out=str(out),
            tracking_uri=config.tracking_uri,
        )
    )
    return {
        name: {**m.to_dict(), **result.stats[name].to_dict()} for name, m in result.metrics.items()
    }


def _finished(out_dir: Path, stage: str) -> str | None:
    """The stage's ``final`` checkpoint when an earlier run finished it (then it is reused)."""
    final = out_dir / "final"
    if not (final / "config.json").is_file():
        return None
    log.info("%s: reusing %s", stage, final)
    return str(final)


def train_sft(config: LearningConfig, data: Path, out_dir: Path) -> tuple[str, dict[str, Any]]:
    """SFT of the base model on the seed critiques (skipped when ``final`` already exists)."""
    from deepcritic.stages.sft import CriticSFTConfig
    from deepcritic.stages.sft import run as run_sft

    if final := _finished(out_dir, "sft"):
        return final, {"reused": True}
    result = run_sft(
        CriticSFTConfig(
            data=str(data),
            model=config.model,
            out_dir=str(out_dir),
            learning_rate=config.sft_learning_rate,
            num_train_epochs=config.sft_epochs,
            effective_batch_size=config.sft_batch_size,
            per_device_batch_size=config.sft_micro_batch_size,
            max_length=2048,
            max_steps=config.sft_max_steps,
            gradient_checkpointing=False,  # small models on CPU: memory is not the limit
            precision=config.train_precision,
            save_steps=50,
            save_total_limit=1,
            seed=config.seed,
            tracking_uri=config.tracking_uri,
        )
    )
    return result.checkpoint, {"train_loss": result.train_loss, "steps": result.global_step}


def train_grpo(
    config: LearningConfig, model: str, data: Path, out_dir: Path
) -> tuple[str, dict[str, Any]]:
    """GRPO from the SFT model with the method's reward (the one grader, strict mode)."""
    from deepcritic.stages.grpo import CriticGRPOConfig
    from deepcritic.stages.grpo import run as run_grpo

    if final := _finished(out_dir, "grpo"):
        return final, {"reused": True}
    result = run_grpo(
        CriticGRPOConfig(
            model=model,
            data_source="labels",
            labels_path=str(data),
            out_dir=str(out_dir),
            num_generations=config.grpo_generations,
            max_completion_length=config.max_tokens,
            learning_rate=config.grpo_learning_rate,
            per_device_train_batch_size=config.grpo_batch_size,
            max_steps=config.grpo_steps,
            precision=config.train_precision,
            save_steps=max(1, config.grpo_steps // 2),
            save_total_limit=1,
            seed=config.seed,
            tracking_uri=config.tracking_uri,
        )
    )
    curve = result.reward_curve
    return result.checkpoint, {
        "steps": result.steps,
        "reward_first": curve[0] if curve else float("nan"),
        "reward_last": curve[-1] if curve else float("nan"),
        "reward_mean": sum(curve) / len(curve) if curve else float("nan"),
        "reward_curve": curve,
    }


def baselines(benchmarks: dict[str, Path]) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for name, path in benchmarks.items():
        labels = [s.label for s in load_solutions(f"jsonl:{path}")[0]]
        out[name] = {k: m.to_dict() for k, m in trivial_baselines(labels).items()}
    return out


def _stage(
    config: LearningConfig,
    name: str,
    train: Any,
    benchmarks: dict[str, Path],
    work: Path,
) -> tuple[str, StageReport]:
    """Train (``train`` returns the model and its figures; None for the base) and evaluate."""
    start = time.monotonic()
    model, figures = train() if train is not None else (config.model, {})
    train_s = time.monotonic() - start
    print(f"== {name}: evaluating {model} ==", flush=True)
    metrics = evaluate_stage(config, model, benchmarks, work / "eval" / name)
    seconds = time.monotonic() - start
    figures = {**figures, "train_seconds": train_s, "eval_seconds": seconds - train_s}
    return model, StageReport(name, model, seconds, metrics, figures)


def run(config: LearningConfig) -> LearningResult:
    """base -> SFT -> GRPO, each evaluated on the same held-out items; report + plot + MLflow."""
    work = Path(config.work_dir)
    files = prepare_data(config, work / "data")
    held = {k: v for k, v in files.items() if k not in ("sft_train", "grpo_train")}
    with tracking.stage_run("learning", config, tracking_uri=config.tracking_uri) as t:
        run_id = t.run_id  # the stages' runs nest under it (opened and closed by each stage)
    with tracking.nested_under(run_id):
        sft_data, seed_counts = seed_critiques(config, files["sft_train"], work / "seed")
        data = {"sft_examples": _count(sft_data), "grpo_prompts": _count(files["grpo_train"])}
        data |= {f"heldout.{k}": _count(v) for k, v in held.items()} | seed_counts
        _, base = _stage(config, "base", None, held, work)
        sft_model, sft = _stage(
            config, "sft", lambda: train_sft(config, sft_data, work / "sft"), held, work
        )
        grpo_train = lambda: train_grpo(config, sft_model, files["grpo_train"], work / "grpo")  # noqa: E731
        _, grpo = _stage(config, "grpo", grpo_train, held, work)
    result = LearningResult([base, sft, grpo], baselines(held), data, "", "", run_id)
    with tracking.stage_run("learning", tracking_uri=config.tracking_uri, run_id=run_id) as t:
        _write_report(result, work, t)
    print(format_report(result), flush=True)
    return result


def _count(path: Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _write_report(result: LearningResult, work: Path, tracker: tracking.Tracker) -> None:
    report = {
        "stages": [to_dict(s) for s in result.stages],
        "baselines": result.baselines,
        "data": result.data,
    }
    path = work / "report.json"
    path.write_text(json.dumps(report, indent=1))
    result.report_path, result.plot_path = str(path), str(work / "learning.png")
    fig = plot(result, Path(result.plot_path))
    for s in result.stages:
        for bench, m in s.benchmarks.items():
            keys = ("f1", "acc_error", "acc_correct", "answer_rate", "parse_rate",
                    "truncation_rate", "mean_tokens")  # fmt: skip
            tracker.log_metrics({f"{s.stage}.{bench}.{k}": float(m[k]) for k in keys})
        tracker.log_metrics({f"{s.stage}.seconds": s.seconds})
    tracker.log_metrics({f"data.{k}": float(v) for k, v in result.data.items()})
    tracker.log_artifact(path)
    tracker.log_figure(fig, "learning.png")
    tracker.log_text(format_report(result), "learning.txt")


def plot(result: LearningResult, path: Path) -> Any:
    """F1 and readable-verdict rate by stage, one panel each, a bar per held-out benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s.stage for s in result.stages]
    benches = list(result.stages[0].benchmarks)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / max(1, len(benches))
    for ax, key, title in (
        (axes[0], "f1", "F1 (%)"),
        (axes[1], "answer_rate", "readable verdict (%)"),
    ):
        for i, bench in enumerate(benches):
            xs = [j + (i - (len(benches) - 1) / 2) * width for j in range(len(stages))]
            vals = [s.benchmarks[bench][key] for s in result.stages]
            bars = ax.bar(xs, vals, width, label=bench)
            ax.bar_label(bars, fmt="%.0f", fontsize=8)
        ax.set_xticks(range(len(stages)), stages)
        ax.set_ylim(0, 110)
        ax.set_title(title)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Critic by training stage (same held-out items)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def format_report(result: LearningResult) -> str:
    """One table: a row per stage and benchmark, then the trivial baselines."""
    head = (f"{'stage':<6}{'benchmark':<26}{'n':>4}{'answer%':>9}{'acc_err':>9}{'acc_cor':>9}"
            f"{'F1':>7}{'tokens':>8}{'trunc%':>8}{'wall_s':>8}  predicted steps")  # fmt: skip
    lines = [head, "-" * len(head)]
    for s in result.stages:
        for bench, m in s.benchmarks.items():
            hist = " ".join(f"{k}:{v}" for k, v in m["histogram"].items())
            lines.append(
                f"{s.stage:<6}{bench:<26}{m['n']:>4}{m['answer_rate']:>9.1f}{m['acc_error']:>9.1f}"
                f"{m['acc_correct']:>9.1f}{m['f1']:>7.1f}{m['mean_tokens']:>8.0f}"
                f"{m['truncation_rate']:>8.1f}{s.seconds:>8.0f}  {hist}"
            )
    lines.append("-" * len(head))
    for bench, rows in result.baselines.items():
        for name, m in rows.items():
            lines.append(f"{'-':<6}{bench:<26}{int(m['n']):>4}{'':>9}{m['acc_error']:>9.1f}"
                         f"{m['acc_correct']:>9.1f}{m['f1']:>7.1f}  baseline {name}")  # fmt: skip
    labels = {b: m["label_histogram"] for b, m in result.stages[0].benchmarks.items()}
    lines.append("labels: " + "; ".join(
        f"{b} " + " ".join(f"{k}:{v}" for k, v in h.items()) for b, h in labels.items()))  # fmt: skip
    return "\n".join(lines)
