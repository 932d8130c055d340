r"""Critic-verified majority voting: sample k solutions, let the critic judge each, vote among the
ones it judges correct.

For every problem the generator samples ``max(k)`` solutions in numbered steps (one batch); the
critic critiques each (``critiques_per_solution`` samples, their labels combined with
:func:`deepcritic.scoring.majority_vote`). A solution is *judged correct* when that combined label
is -1 (the critic found no wrong step). Every k in ``config.k`` is then scored on the *prefix* of
the first k samples, so all k come from the same draws and the curves are comparable.

Reported per k:

* ``pass_at_1``: mean correctness of the first k samples (the single-sample accuracy),
* ``majority``: plain majority voting over final answers,
* ``verified``: majority voting among the samples judged correct, falling back to the plain vote
  when no sample with an answer is judged correct (``fallback_rate`` counts how often),
* ``pass_at_k``: whether any of the first k samples is correct (the oracle upper bound).

Answer voting groups answers into equivalence classes with math-verify
(:func:`deepcritic.answers.answers_match`), not string equality: ``0.5``, ``\frac{1}{2}`` and
``1/2`` are one vote. Tie rule (deterministic): the class with the most votes wins; among tied
classes, the one whose earliest voting sample comes first in sampling order wins. The vote's
answer is that earliest sample's answer, and the vote is graded by that sample's correctness.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from deepcritic import tracking
from deepcritic.answers import answers_match, extract_final_answer
from deepcritic.critic.report import accuracy_plot, add_report_command
from deepcritic.critic.votes import (
    Vote,
    answer_classes,
    critic_verdict,
    verified_vote,
    vote_answers,
)
from deepcritic.generation import Backend, BackendConfig, SamplingParams, make_backend
from deepcritic.prompting import SOLVER_PREFILL, solver_messages, split_steps
from deepcritic.records import write_jsonl
from deepcritic.reference import check_prompt_set, critic_prompt
from deepcritic.scoring import usable_label

log = logging.getLogger(__name__)


class ProblemLike(Protocol):
    """What voting and refinement need of a problem (:class:`deepcritic.data.problems.Problem`)."""

    @property
    def id(self) -> str: ...
    @property
    def problem(self) -> str: ...
    @property
    def gold_answer(self) -> str: ...


# --------------------------------------------------------------------------- per-problem records


@dataclass
class ScoredSample:
    """One sampled solution with its grading and the critic's view of it."""

    text: str
    steps: list[str]
    answer: str | None
    correct: bool
    critiques: list[str] = field(default_factory=list)
    labels: list[int | None] = field(default_factory=list)
    verdict: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "answer": self.answer,
            "correct": self.correct,
            "critic_labels": self.labels,
            "verdict": self.verdict,
            "critiques": self.critiques,
        }


@dataclass
class ProblemSamples:
    """All samples of one problem, with their answer classes (computed once over all samples)."""

    id: str
    problem: str
    gold_answer: str
    samples: list[ScoredSample]
    classes: list[int | None] = field(default_factory=list)

    def vote(self, k: int, *, verified: bool) -> Vote:
        """Plain or verified vote over the first ``k`` samples."""
        answers = [s.answer for s in self.samples[:k]]
        classes = self.classes[:k]
        if verified:
            return verified_vote(answers, classes, [s.verdict for s in self.samples[:k]])
        return vote_answers(answers, classes)

    def vote_correct(self, vote: Vote) -> bool:
        return vote.index is not None and self.samples[vote.index].correct


@dataclass(frozen=True)
class KRow:
    """Accuracies at one k (fractions of problems, in [0, 1])."""

    k: int
    problems: int
    pass_at_1: float
    majority: float
    verified: float
    pass_at_k: float
    fallback_rate: float

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def score_k(records: Sequence[ProblemSamples], k: int) -> KRow:
    """Score every problem on its first ``k`` samples."""
    if not records:
        raise ValueError("no problems to score")
    if any(len(r.samples) < k for r in records):
        raise ValueError(f"k={k} is more than the samples drawn for some problem")
    n = len(records)
    pass1 = sum(sum(s.correct for s in r.samples[:k]) / k for r in records)
    majority = sum(r.vote_correct(r.vote(k, verified=False)) for r in records)
    verified_votes = [r.vote(k, verified=True) for r in records]
    verified = sum(r.vote_correct(v) for r, v in zip(records, verified_votes, strict=True))
    anyc = sum(any(s.correct for s in r.samples[:k]) for r in records)
    fallback = sum(v.fallback for v in verified_votes)
    return KRow(k, n, pass1 / n, majority / n, verified / n, anyc / n, fallback / n)


def critic_stats(records: Sequence[ProblemSamples]) -> dict[str, float]:
    """How the critic's verdicts relate to final-answer correctness, over all samples."""
    samples = [s for r in records for s in r.samples]
    accepted = [s for s in samples if s.verdict is True]
    correct = [s for s in samples if s.correct]
    n = max(len(samples), 1)
    return {
        "samples": float(len(samples)),
        "sample_accuracy": len(correct) / n,
        "critic_accept_rate": len(accepted) / n,
        "critic_unparsable_rate": sum(s.verdict is None for s in samples) / n,
        "critic_precision": sum(s.correct for s in accepted) / max(len(accepted), 1),
        "critic_recall": sum(s.verdict is True for s in correct) / max(len(correct), 1),
        "no_answer_rate": sum(s.answer is None for s in samples) / n,
    }


# --------------------------------------------------------------------------- backends


@contextlib.contextmanager
def shared_backends(
    configs: Mapping[str, BackendConfig], given: Mapping[str, Backend] | None = None
) -> Iterator[dict[str, Backend]]:
    """One backend per distinct config (a generator that is also the critic is loaded once).

    Backends in ``given`` are used as they are and not closed; the others are closed on exit.
    """
    given = dict(given or {})
    opened: list[tuple[BackendConfig, Backend]] = []
    out: dict[str, Backend] = {}
    try:
        for role, cfg in configs.items():
            if role in given:
                out[role] = given[role]
                continue
            match = next((b for c, b in opened if c == cfg), None)
            if match is None:
                match = make_backend(cfg)
                opened.append((cfg, match))
            out[role] = match
        yield out
    finally:
        for _, backend in opened:
            backend.close()


# --------------------------------------------------------------------------- config and run


@dataclass
class VotingConfig:
    """``deepcritic verify-vote``: critic-verified majority voting on problems with gold answers."""

    CLI_ALIASES: ClassVar[dict[str, str]] = {
        "generator-model": "generator.model",
        "critic-model": "critic.model",
    }

    problems: str = "gsm8k:test"  # gsm8k:test | math:test | math500 | jsonl:PATH
    limit: int | None = 100  # first N problems (None = all)
    k: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # issue 7: k in {1, 2, 4, 8}
    generator: BackendConfig = field(default_factory=BackendConfig)
    critic: BackendConfig = field(default_factory=BackendConfig)
    gen_temperature: float = 0.7  # sampling, so the k solutions differ
    gen_top_p: float = 1.0  # nucleus sampling of the generated solutions
    gen_max_tokens: int = 1024  # token budget of each generated solution
    # critiques per solution; >1: labels combined by majority (needs critic_temperature > 0)
    critiques_per_solution: int = 1
    critic_temperature: float = 0.6  # paper: critics evaluated at T=0.6 (as in `deepcritic eval`)
    critic_top_p: float = 0.9  # paper
    critic_max_tokens: int = 4096  # ours: as `deepcritic eval`, room for deliberate critiques
    # critiques_per_solution > 1: read each critique in the grader's strict mode, dropping those
    # without an **Answer**: marker from the vote (as `deepcritic eval` Maj@k, reference behaviour)
    require_marker: bool = True
    # the critic's prompt: deepcritic = the project's prompts; reference = the authors' template, Qwen's
    # default system message and eval.py's numbering (use the set the critic was trained with)
    prompt_set: str = "deepcritic"
    seed: int = 0  # sampling seed (runs are reproducible)
    out: str = "outputs/verify-vote"  # output folder (records and metrics)
    tracking_uri: str | None = None  # MLflow server (default: $MLFLOW_TRACKING_URI; "off" = none)

    def __post_init__(self) -> None:
        if not self.k or any(k < 1 for k in self.k):
            raise ValueError(f"k must be a non-empty list of positive integers, got {self.k}")
        self.k = sorted(set(self.k))
        check_prompt_set(self.prompt_set)
        if self.critiques_per_solution < 1:
            raise ValueError(
                f"critiques_per_solution must be >= 1, got {self.critiques_per_solution}"
            )
        if self.critiques_per_solution > 1 and self.critic_temperature == 0:
            raise ValueError(
                "critiques_per_solution > 1 needs critic_temperature > 0 (else all equal)"
            )
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")

    @property
    def max_k(self) -> int:
        return max(self.k)


@dataclass
class VotingResult:
    rows: list[KRow]
    critic: dict[str, float]
    problems: int
    samples_path: str
    table_path: str
    plot_path: str
    run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        """Flat summary (for MLflow and KFP outputs): ``<metric>_k<k>`` plus critic stats."""
        out = {
            f"{name}_k{r.k}": float(v)
            for r in self.rows
            for name, v in r.to_dict().items()
            if name not in ("k", "problems")
        }
        out.update(self.critic)
        return out


def sample_solutions(
    generator: Backend, problems: Sequence[ProblemLike], config: VotingConfig
) -> list[list[tuple[str, list[str], str | None]]]:
    """``max_k`` solutions per problem: (full text, steps, final answer)."""
    params = SamplingParams.from_config(config, "gen", n=config.max_k)
    outs = generator.generate(
        [solver_messages(p.problem) for p in problems], params, desc="sampling solutions"
    )
    result = []
    for group in outs:
        texts = [SOLVER_PREFILL + c.text for c in group]
        result.append([(t, split_steps(t), extract_final_answer(t)) for t in texts])
    return result


def critique_samples(
    critic: Backend, records: Sequence[ProblemSamples], config: VotingConfig
) -> None:
    """Critique every sample that has steps; fill ``critiques``, ``labels`` and ``verdict``."""
    jobs = [(r, s) for r in records for s in r.samples if s.steps]
    skipped = sum(len(r.samples) for r in records) - len(jobs)
    if skipped:
        log.warning("%d sampled solution(s) have no steps: not critiqued, not verified", skipped)
    params = SamplingParams.from_config(config, "critic", n=config.critiques_per_solution)
    strict = config.require_marker and config.critiques_per_solution > 1
    prompts = [critic_prompt(r.problem, s.steps, config.prompt_set) for r, s in jobs]
    outs = critic.generate(prompts, params, desc="critiquing solutions") if prompts else []
    for (_, sample), group in zip(jobs, outs, strict=True):
        sample.critiques = [c.text for c in group]
        sample.labels = [usable_label(c.text, require_marker=strict) for c in group]
        sample.verdict = critic_verdict(sample.labels)


def build_records(
    problems: Sequence[ProblemLike], drawn: Sequence[Sequence[tuple[str, list[str], str | None]]]
) -> list[ProblemSamples]:
    """Grade every sample against the gold answer and group answers into classes."""
    records = []
    for p, group in zip(problems, drawn, strict=True):
        samples = [
            ScoredSample(text, steps, answer, answers_match(answer, p.gold_answer))
            for text, steps, answer in group
        ]
        rec = ProblemSamples(str(p.id), p.problem, p.gold_answer, samples)
        rec.classes = answer_classes([s.answer for s in samples])
        records.append(rec)
    return records


def load_problem_set(spec: str, limit: int | None) -> list[Any]:
    """Problems with gold answers from a spec (``gsm8k:test``, ``math500``, ``jsonl:PATH``)."""
    from deepcritic.data.loaders import load_problems

    problems, report = load_problems(spec, limit=limit)
    report.log()
    if not problems:
        raise ValueError(f"problems: {spec!r} gave no problems")
    missing = [p.id for p in problems if not getattr(p, "gold_answer", None)]
    if missing:
        raise ValueError(
            f"problems: {len(missing)} problem(s) have no gold answer, e.g. {missing[0]}"
        )
    return list(problems)


def run(
    config: VotingConfig,
    *,
    problems: Sequence[ProblemLike] | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> VotingResult:
    """Sample, critique, vote, report. ``problems``/``backends`` override loading (tests, notebooks)."""
    probs = (
        list(problems) if problems is not None else load_problem_set(config.problems, config.limit)
    )
    with tracking.stage_run("verify-vote", config, tracking_uri=config.tracking_uri) as tracker:
        roles = {"generator": config.generator, "critic": config.critic}
        with shared_backends(roles, backends) as live:
            drawn = sample_solutions(live["generator"], probs, config)
            records = build_records(probs, drawn)
            critique_samples(live["critic"], records, config)
        result = report(records, config)
        for row in result.rows:
            tracker.log_metrics(
                {n: float(v) for n, v in row.to_dict().items() if n != "k"}, step=row.k
            )
        tracker.log_metrics(result.metrics())
        tracker.log_table([r.to_dict() for r in result.rows], "verify_vote/table.json")
        tracker.log_artifact(result.plot_path, "verify_vote")
        tracker.log_artifact(result.samples_path, "verify_vote")
        result.run_id = tracker.run_id
    return result


def report(records: Sequence[ProblemSamples], config: VotingConfig) -> VotingResult:
    """Score every k, write samples JSONL, a markdown table and the plot under ``out``."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [score_k(records, k) for k in config.k]
    samples_path = out / "samples.jsonl"
    write_jsonl(
        samples_path,
        (
            {"id": r.id, "gold_answer": r.gold_answer, "sample": i, "answer_class": r.classes[i]}
            | s.to_dict()
            for r in records
            for i, s in enumerate(r.samples)
        ),
    )
    table_path = out / "table.md"
    table_path.write_text(format_table(rows), encoding="utf-8")
    plot_path = out / "accuracy_vs_k.png"
    plot_rows(rows, plot_path)
    result = VotingResult(
        rows,
        critic_stats(records),
        len(records),
        str(samples_path),
        str(table_path),
        str(plot_path),
    )
    log.info("verify-vote on %d problems: table %s, plot %s", len(records), table_path, plot_path)
    return result


def format_table(rows: Sequence[KRow]) -> str:
    """Markdown table of accuracies (percent) per k."""
    lines = [
        "| k | problems | pass@1 | majority | critic-verified | pass@k | fallback |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.k} | {r.problems} | {100 * r.pass_at_1:.1f} | {100 * r.majority:.1f} | "
            f"{100 * r.verified:.1f} | {100 * r.pass_at_k:.1f} | {100 * r.fallback_rate:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot_rows(rows: Sequence[KRow], path: Path) -> None:
    """Accuracy vs k: pass@1, majority, critic-verified (and the pass@k oracle, dashed)."""
    ks = [r.k for r in rows]
    title = f"verified majority voting ({rows[0].problems} problems)"
    with accuracy_plot(path, xlabel="k (sampled solutions)", title=title, fontsize=8) as ax:
        ax.plot(ks, [100 * r.pass_at_1 for r in rows], "o-", label="pass@1")
        ax.plot(ks, [100 * r.majority for r in rows], "s-", label="majority vote")
        ax.plot(ks, [100 * r.verified for r in rows], "^-", label="critic-verified vote")
        ax.plot(ks, [100 * r.pass_at_k for r in rows], "k--", alpha=0.5, label="pass@k (oracle)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])


# --------------------------------------------------------------------------- CLI


def register_cli(subparsers: Any) -> None:
    add_report_command(
        subparsers, "verify-vote", "critic-verified majority voting vs plain majority vs pass@1",
        __doc__, VotingConfig, run, lambda r: f"samples: {r.samples_path}\nplot: {r.plot_path}",
    )  # fmt: skip
