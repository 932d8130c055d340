r"""Stage 3a: Monte Carlo step annotation (first-error labels without humans).

For each problem with a gold answer:

1. A generator samples ``samples`` solutions (paper: 8, temperature 1.0, top_p 1.0, 2048 tokens)
   from :func:`deepcritic.prompting.solver_messages` (assistant turn prefilled with ``Step 1:``);
   each is split into steps and its final answer graded with math-verify
   (:func:`deepcritic.answers.is_correct_solution`).
2. As the reference curates them (every drop counted): wrong samples with no extractable final
   answer are dropped (the rule would otherwise blame their last step); problems left without both
   a right and a wrong sample are dropped (``require_mixed``); at most ``max_correct_per_problem``
   right samples (reference: 1) are rolled out.
3. For every kept solution and every step prefix ``1..n-1``, ``rollouts`` continuations (paper: 8,
   temperature 0.7, top_p 0.9, 4096 tokens) are sampled; the fraction that reaches the gold answer
   is the prefix's MC estimate. A continuation cut by ``rollout_max_tokens`` never wrote its answer:
   it is left out of the fraction (``truncated_rollouts: exclude``), not counted as a failure that
   would place the error too early; a prefix whose every rollout was cut drops the solution
   (counted). All prefixes of one solution go to the backend in one call, so an engine with
   prefix caching (vLLM) shares the problem and the common steps.
4. :func:`label_from_estimates` turns the estimates into a first-error label (the rule is in its
   docstring); ambiguous solutions are dropped and counted by reason.

Problems come from any :func:`deepcritic.data.problems.load_problems` spec; the paper annotates
NuminaMath problems (``numinamath:/path``), some of whose rows have no ``\boxed{}`` answer: with
``skip_invalid`` they are skipped and counted (``input.invalid.*``).

Output: canonical :class:`~deepcritic.records.Solution` rows (0-based label) with the estimates in
``meta["mc_estimates"]``, one JSONL file per shard. ``--shard i/N`` picks the problems whose id
hashes to ``i`` modulo ``N``; a rerun skips problems recorded as done (resumable, no duplicates).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from tqdm.auto import tqdm

from deepcritic import tracking
from deepcritic.answers import extract_final_answer, is_correct_solution
from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.generation import Backend, BackendConfig, Prompt, SamplingParams, make_backend
from deepcritic.prompting import number_steps, solver_messages, split_steps
from deepcritic.records import NO_ERROR, Solution, iter_jsonl, write_jsonl
from deepcritic.stages.mc_label import MCLabel, Recovery, label_from_estimates

log = logging.getLogger(__name__)

TruncatedRollouts = Literal["exclude", "fail"]


# --------------------------------------------------------------------------- config and result


@dataclass
class MCConfig:
    """Monte Carlo annotation. Paper values say so (reference = the authors' released scripts)."""

    problems: str = "gsm8k:train"  # a load_problems spec (gsm8k:train|test, numinamath:/x, ...)
    limit: int | None = None  # first N problems (before sharding)
    skip_invalid: bool = False  # skip (and count) malformed problem rows instead of failing
    out_dir: str = "out/mc"  # annotated solutions, the report and the plot
    shard: str = "0/1"  # i/N: this worker takes the problems whose id hashes to i mod N
    generation: BackendConfig = field(default_factory=BackendConfig)
    samples: int = 8  # paper: 8 solutions per problem
    sample_temperature: float = 1.0  # paper: 1.0
    sample_top_p: float = 1.0  # reference: 1.0
    sample_max_tokens: int = 2048  # reference: 2048
    rollouts: int = 8  # paper: 8 continuations per step prefix
    rollout_temperature: float = 0.7  # paper: 0.7
    rollout_top_p: float = 0.9  # reference: 0.9
    rollout_max_tokens: int = 4096  # reference: 4096
    # a rollout cut by rollout_max_tokens: left out (exclude, ours) or a failure (fail: reference)
    truncated_rollouts: TruncatedRollouts = "exclude"
    max_steps: int = 20  # solutions with more steps are dropped (bounds rollout cost; ours)
    require_mixed: bool = True  # keep problems with both right and wrong samples (paper)
    drop_answerless_wrong: bool = True  # reference: wrong samples need an extractable answer
    max_correct_per_problem: int | None = 1  # reference: one correct solution per problem
    # ours, off in the paper: add the problem's reference solution (GSM8K's worked answer) as a
    # right sample after the sampled ones (the correct-solution cap prefers a sampled one); a
    # random tiny model never reaches an answer, so its wiring check needs one
    include_reference: bool = False
    drop_truncated: bool = True  # a solution cut by sample_max_tokens has no real final answer
    fail_at: float = 0.0  # estimate <= fail_at: the prefix fails (paper: drops to 0)
    succeed_at: float = 1e-9  # estimate >= succeed_at: the prefix succeeds (any success)
    recovery: Recovery = "skip_dip"  # a failing prefix that later recovers: skip_dip | ambiguous
    problems_per_batch: int = 8  # problems whose samples are generated in one call
    seed: int = 0  # sampling seed
    plot_solutions: int = 6  # solutions drawn in the MLflow estimate plot
    tracking_uri: str | None = None  # None = $MLFLOW_TRACKING_URI or ./mlflow.db; "off" disables

    CLI_ALIASES = {"model": "generation.model", "backend": "generation.kind"}


@dataclass
class MCResult:
    out_path: str
    done_path: str
    problems: int = 0  # problems processed in this run (resumed ones excluded)
    skipped_done: int = 0
    written: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)


class ProblemLike(Protocol):
    id: str
    problem: str
    gold_answer: str
    source: str


def parse_shard(spec: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8); raises a ValueError naming the field."""
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError as e:
        raise ValueError(f"shard must look like i/N (e.g. 0/4), got {spec!r}") from e
    if not 0 <= i < n:
        raise ValueError(f"shard {spec!r}: need 0 <= i < N")
    return i, n


def in_shard(item_id: str, index: int, count: int) -> bool:
    """Stable assignment of an id to a shard (independent of order and of the process)."""
    digest = hashlib.sha1(item_id.encode("utf-8")).hexdigest()
    return int(digest[:12], 16) % count == index


def shard_paths(out_dir: str | Path, shard: str) -> tuple[Path, Path]:
    i, n = parse_shard(shard)
    base = Path(out_dir) / f"mc-{i:03d}-of-{n:03d}"
    return Path(f"{base}.jsonl"), Path(f"{base}.jsonl.done")  # done: JSON lines, not *.jsonl


# --------------------------------------------------------------------------- resume


def load_done(out_path: Path, done_path: Path) -> set[str]:
    """Problem ids finished by an earlier run. Rows of unfinished problems (a crash between
    writing solutions and marking the problem done) are removed, so a rerun never duplicates."""
    done = {str(r["problem_id"]) for _, r in iter_jsonl(done_path)} if done_path.exists() else set()
    if out_path.exists():
        rows = [r for _, r in iter_jsonl(out_path)]
        keep = [r for r in rows if str(r.get("meta", {}).get("problem_id")) in done]
        if len(keep) != len(rows):
            log.warning(
                "dropping %d rows of unfinished problems from %s", len(rows) - len(keep), out_path
            )
            write_jsonl(out_path, keep)
    return done


# --------------------------------------------------------------------------- generation steps


@dataclass
class Sample:
    steps: list[str]
    correct: bool
    answered: bool = True  # a final answer could be extracted (wrong samples need one)
    reference: bool = False  # the problem's own worked solution (include_reference)


def prefix_prompt(problem: str, steps: Sequence[str], upto: int) -> Prompt:
    """The solver prompt continued after steps ``1..upto``: the assistant turn ends in the next
    step's header, so the backend writes step ``upto+1`` onward."""
    messages = solver_messages(problem, prefill=False)
    body = number_steps(steps[:upto])
    messages.append({"role": "assistant", "content": f"{body}\n\nStep {upto + 1}:"})
    return messages


def _graded(text: str, gold: str) -> tuple[bool, bool]:
    """(correct, answered) of one whole solution text."""
    return is_correct_solution(text, gold), extract_final_answer(text) is not None


def sample_solutions(
    backend: Backend, problems: Sequence[ProblemLike], config: MCConfig, counts: Counter[str]
) -> list[list[Sample]]:
    """``config.samples`` graded, step-split solutions per problem (bad ones counted, dropped)."""
    params = SamplingParams.from_config(config, "sample", n=config.samples)
    outs = backend.generate(
        [solver_messages(p.problem) for p in problems], params, desc="solutions"
    )
    result: list[list[Sample]] = []
    for p, group in zip(problems, outs, strict=True):
        kept: list[Sample] = []
        for c in group:
            counts["solutions_sampled"] += 1
            text = f"Step 1:{c.text}"
            steps = split_steps(text)
            if config.drop_truncated and c.finish_reason == "length":
                counts["dropped:truncated"] += 1
            elif not steps:
                counts["dropped:empty"] += 1
            elif len(steps) > config.max_steps:
                counts["dropped:too_many_steps"] += 1
            else:
                kept.append(Sample(steps, *_graded(text, p.gold_answer)))
        result.append(kept)
    return result


def reference_sample(problem: ProblemLike, counts: Counter[str]) -> Sample | None:
    r"""The problem's worked solution as a sample, its last step ending in ``\boxed{gold}``."""
    steps = list(getattr(problem, "reference_steps", None) or [])
    if not steps:
        counts["reference:missing"] += 1
        return None
    steps[-1] = f"{steps[-1]} The answer is \\boxed{{{problem.gold_answer}}}."
    counts["reference:added"] += 1
    return Sample(steps, *_graded(number_steps(steps), problem.gold_answer), reference=True)


def estimate_prefixes(
    backend: Backend,
    problem: ProblemLike,
    steps: Sequence[str],
    config: MCConfig,
    counts: Counter[str] | None = None,
) -> list[float | None]:
    """MC estimate of prefixes 1..n-1: one backend call for all prefixes of this solution.

    A rollout cut by ``rollout_max_tokens`` is left out (``truncated_rollouts: exclude``) or
    fails; an estimate is None when every rollout of its prefix was left out."""
    if len(steps) < 2:
        return []
    prompts = [prefix_prompt(problem.problem, steps, i) for i in range(1, len(steps))]
    params = SamplingParams.from_config(config, "rollout", n=config.rollouts)
    outs = backend.generate(prompts, params)
    estimates: list[float | None] = []
    for prompt, group in zip(prompts, outs, strict=True):
        prefix = prompt[-1]["content"]
        cut = sum(c.finish_reason == "length" for c in group)
        if counts is not None:
            counts["rollouts_truncated"] += cut
        if config.truncated_rollouts == "exclude":
            group = [c for c in group if c.finish_reason != "length"]
        wins = sum(is_correct_solution(prefix + c.text, problem.gold_answer) for c in group)
        estimates.append(wins / len(group) if group else None)
    return estimates


def curate(samples: Sequence[Sample], config: MCConfig, counts: Counter[str]) -> list[int]:
    """The reference's curation, as indices into ``samples``: drop answerless wrong samples, need a
    right and a wrong one, keep at most ``max_correct_per_problem`` right ones (the first ones:
    samples are i.i.d.)."""
    kept = list(range(len(samples)))
    if config.drop_answerless_wrong:
        kept = [i for i in kept if samples[i].correct or samples[i].answered]
        counts["dropped:wrong_no_answer"] += len(samples) - len(kept)
    if config.require_mixed and len({samples[i].correct for i in kept}) < 2:
        reason = "all_correct" if kept and samples[kept[0]].correct else "all_wrong_or_empty"
        counts[f"problems_dropped:{reason}"] += 1
        return []
    if config.max_correct_per_problem is not None:
        right = [i for i in kept if samples[i].correct]
        over = right[config.max_correct_per_problem :]
        counts["dropped:correct_over_cap"] += len(over)
        kept = [i for i in kept if i not in over]
    counts["problems_kept"] += 1
    return kept


def annotate_problem(
    backend: Backend,
    problem: ProblemLike,
    samples: Sequence[Sample],
    config: MCConfig,
    counts: Counter[str],
) -> list[Solution]:
    """Curate, roll out, label and package the samples of one problem (drops counted)."""
    if config.include_reference:
        ref = reference_sample(problem, counts)
        samples = [*samples, ref] if ref is not None else list(samples)
    start = sum(s.correct for s in samples) / len(samples) if samples else 0.0  # empty prefix
    out: list[Solution] = []
    for j in curate(samples, config, counts):
        s = samples[j]
        estimates = estimate_prefixes(backend, problem, s.steps, config, counts)
        counts["rollouts"] += len(estimates) * config.rollouts
        known = [e for e in estimates if e is not None]
        if len(known) != len(estimates):
            counts["dropped:rollouts_all_truncated"] += 1
            continue
        decision = label_from_estimates(
            known,
            s.correct,
            fail_at=config.fail_at,
            succeed_at=config.succeed_at,
            start=start,
            recovery=config.recovery,
        )
        counts[f"rule:{decision.reason}"] += 1
        if decision.label is not None:
            out.append(_solution_row(problem, s, j, known, decision, config))
    return out


def _solution_row(
    problem: ProblemLike,
    sample: Sample,
    index: int,
    estimates: list[float],
    decision: MCLabel,
    config: MCConfig,
) -> Solution:
    assert decision.label is not None
    return Solution(
        id=f"{problem.id}-ref" if sample.reference else f"{problem.id}-mc{index}",
        problem=problem.problem,
        steps=sample.steps,
        label=decision.label,
        final_answer_correct=sample.correct,
        source=f"mc:{problem.source}" if problem.source else "mc",
        generator=config.generation.model,
        gold_answer=problem.gold_answer,
        meta={
            "problem_id": problem.id,
            "mc_estimates": estimates,
            "mc_rollouts": config.rollouts,
            "mc_rule": decision.reason,
            **({"mc_reference": True} if sample.reference else {}),
        },
    )


# --------------------------------------------------------------------------- the stage


def select_problems(config: MCConfig, counts: Counter[str] | None = None) -> list[Any]:
    """Problems of this shard (in source order); malformed rows fail, or with ``skip_invalid``
    are skipped and counted in ``counts`` (``input.invalid.<reason>``)."""
    from deepcritic.data.loaders import load_problems

    index, count = parse_shard(config.shard)
    problems, report = load_problems(
        config.problems, limit=config.limit, skip_invalid=config.skip_invalid
    )
    if counts is not None:
        counts["input.read"] += report.read
        counts["input.invalid"] += report.skipped
        for reason, n in report.reasons.items():
            counts[f"input.invalid.{reason}"] += n
    missing = [p.id for p in problems if not getattr(p, "gold_answer", None)]
    if missing:
        raise ValueError(
            f"{config.problems}: {len(missing)} problem(s) have no gold_answer, e.g. {missing[0]}"
        )
    return [p for p in problems if in_shard(str(p.id), index, count)]


def _validate(config: MCConfig) -> None:
    parse_shard(config.shard)
    names = ("samples", "rollouts", "problems_per_batch", "max_steps")
    for name in (*names, "sample_max_tokens", "rollout_max_tokens"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if not config.fail_at < config.succeed_at:
        raise ValueError(
            f"fail_at ({config.fail_at}) must be below succeed_at ({config.succeed_at})"
        )
    if config.max_correct_per_problem is not None and config.max_correct_per_problem < 1:
        raise ValueError(
            f"max_correct_per_problem must be >= 1 or null, got {config.max_correct_per_problem}"
        )


def _process(
    backend: Backend, todo: Sequence[Any], config: MCConfig, out_path: Path, done_path: Path
) -> tuple[Counter[str], list[Solution]]:
    counts: Counter[str] = Counter()
    written: list[Solution] = []
    bar = tqdm(total=len(todo), desc="mc problems", unit="problem")
    for b in range(0, len(todo), config.problems_per_batch):
        batch = todo[b : b + config.problems_per_batch]
        sampled = sample_solutions(backend, batch, config, counts)
        for problem, samples in zip(batch, sampled, strict=True):
            rows = annotate_problem(backend, problem, samples, config, counts)
            write_jsonl(out_path, rows, append=True)
            write_jsonl(
                done_path, [{"problem_id": str(problem.id), "written": len(rows)}], append=True
            )
            written.extend(rows)
            bar.update(1)
    bar.close()
    return counts, written


def run(config: MCConfig, backend: Backend | None = None) -> MCResult:
    """Annotate this shard's problems; append to the shard file; skip problems already done.

    ``backend`` (optional) replaces the one built from ``config.generation`` and is not closed.
    """
    _validate(config)
    out_path, done_path = shard_paths(config.out_dir, config.shard)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    input_counts: Counter[str] = Counter()
    problems = select_problems(config, input_counts)
    done = load_done(out_path, done_path)
    todo = [p for p in problems if str(p.id) not in done]
    result = MCResult(str(out_path), str(done_path), len(todo), len(problems) - len(todo))
    log.info(
        "mc shard %s: %d problems, %d already done",
        config.shard,
        len(problems),
        result.skipped_done,
    )
    with tracking.stage_run("mc", config, tracking_uri=config.tracking_uri) as tracker:
        engine = backend or make_backend(config.generation)
        try:
            counts, rows = _process(engine, todo, config, out_path, done_path)
        finally:
            if backend is None:
                engine.close()
        result.written = len(rows)
        counts.update(input_counts)
        result.counts = dict(sorted(counts.items()))
        result.label_counts = dict(Counter("-1" if r.label == NO_ERROR else "error" for r in rows))
        _log_tracking(tracker, result, rows, config)
    log.info("mc counts: %s", json.dumps(result.counts))
    return result


def _log_tracking(
    tracker: tracking.Tracker, result: MCResult, rows: list[Solution], config: MCConfig
) -> None:
    if not tracker.enabled:
        return
    metrics: dict[str, float] = {k.replace(":", "."): v for k, v in result.counts.items()}
    metrics.update(
        problems=result.problems, skipped_done=result.skipped_done, written=result.written
    )
    tracker.log_metrics(metrics)
    tracker.log_table([r.to_dict() for r in rows[:20]], "mc/sample_rows.json")
    if rows and config.plot_solutions > 0:
        fig = plot_estimates(rows[: config.plot_solutions])
        tracker.log_figure(fig, "mc/estimates_per_step.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
    if Path(result.out_path).exists():
        tracker.log_artifact(result.out_path, "mc")


def plot_estimates(rows: Sequence[Solution]) -> Any:
    """MC estimate per step (prefix) for a few solutions; the labelled first error is marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in rows:
        est = list(r.meta.get("mc_estimates", [])) + [1.0 if r.final_answer_correct else 0.0]
        xs = list(range(1, len(est) + 1))
        (line,) = ax.plot(xs, est, marker="o", label=f"{r.id} (label {r.label})")
        if r.label != NO_ERROR:
            ax.axvline(r.label + 1, color=line.get_color(), linestyle=":", alpha=0.6)
    ax.set_xlabel("step (prefix 1..k; the last point is the graded answer)")
    ax.set_ylabel("MC estimate (fraction of rollouts reaching gold)")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def register_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mc", help="Monte Carlo step annotation (first-error labels from rollouts)"
    )
    add_dataclass_arguments(p, MCConfig)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    result = run(config_from_args(MCConfig, args))
    print(json.dumps({k: v for k, v in vars(result).items()}, indent=1))
    return 0
