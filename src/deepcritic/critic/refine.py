"""Critique-guided refinement: the critic names the first wrong step, the generator rewrites from it.

For every problem the generator writes one solution in numbered steps. The critic critiques it
(:func:`deepcritic.prompting.critique_messages`, judged by :func:`deepcritic.grader.parse_critique`):

* ``accepted``: the critic says every step is right (-1): the solution stays as it is;
* ``unparsable``: no usable judgment, or ``out_of_range``: a step number the solution does not
  have: the solution stays as it is (counted, never dropped);
* ``refined``: the critic names step k. The generator gets the problem, the wrong step and the
  critique of *that* step (the critic's ``**Critique of Step k**`` section, else the whole critique,
  cut to ``max_critique_chars`` from the end), with its own steps 1..k-1 prefilled in the
  assistant turn (``prompts/refine_user.md``), and continues from ``Step k:``.

With ``rounds > 1`` a refined solution goes back to the critic, and so on. The same initial
solutions are refined once with the critic and once with a baseline critic (e.g. the base model
the critic was trained from), and each run reports accuracy before/after and the paper's
w->c (wrong to correct) and c->w (correct to wrong) counts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from deepcritic import tracking
from deepcritic.answers import answers_match, extract_final_answer
from deepcritic.critic.report import accuracy_plot, add_report_command
from deepcritic.critic.voting import ProblemLike, load_problem_set, shared_backends
from deepcritic.generation import Backend, BackendConfig, Prompt, SamplingParams
from deepcritic.grader import NO_ERROR, Judgment, label_to_step, parse_critique
from deepcritic.prompting import (
    SOLVER_PREFILL,
    load_prompt,
    number_steps,
    render_template,
    solver_messages,
    split_steps,
    strip_step_prefix,
)
from deepcritic.records import write_jsonl
from deepcritic.reference import check_prompt_set, critic_prompt

log = logging.getLogger(__name__)

Action = Literal["accepted", "refined", "unparsable", "out_of_range", "no_steps"]
ACTIONS: tuple[Action, ...] = ("accepted", "refined", "unparsable", "out_of_range", "no_steps")


# --------------------------------------------------------------------------- bookkeeping


@dataclass(frozen=True)
class Attempt:
    """One solution: its text, steps, final answer and whether that answer is right."""

    text: str
    steps: list[str]
    answer: str | None
    correct: bool


def make_attempt(text: str, gold: str) -> Attempt:
    """Split and grade a full solution text (which starts with ``Step 1:``)."""
    answer = extract_final_answer(text)
    return Attempt(text, split_steps(text), answer, answers_match(answer, gold))


@dataclass(frozen=True)
class Plan:
    """What to do with one attempt after one critique."""

    action: Action
    error_index: int | None = None  # 0-based index of the first wrong step (refined only)
    feedback: str | None = None  # the critique text handed to the generator (refined only)


@dataclass
class RoundRecord:
    critique: str
    label: int | None
    plan: Plan


@dataclass
class RefineTrace:
    """Everything that happened to one problem: attempts[0] is the initial solution."""

    id: str
    problem: str
    gold_answer: str
    attempts: list[Attempt]
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def before(self) -> bool:
        return self.attempts[0].correct

    @property
    def after(self) -> bool:
        return self.attempts[-1].correct

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "gold_answer": self.gold_answer,
            "before": self.before,
            "after": self.after,
            "attempts": [asdict(a) for a in self.attempts],
            "rounds": [
                {
                    "label": r.label,
                    "action": r.plan.action,
                    "error_index": r.plan.error_index,
                    "feedback": r.plan.feedback,
                    "critique": r.critique,
                }
                for r in self.rounds
            ],
        }


def step_feedback(judgment: Judgment, error_index: int, critique: str, max_chars: int) -> str:
    """The critique of the wrong step (1-based ``error_index + 1``) from the critic's per-step
    verdicts; the whole critique when that section is missing or empty. Cut to the last
    ``max_chars`` characters (the end of a critique is where its judgment is)."""
    step = label_to_step(error_index)
    section = next((v.critique for v in judgment.verdicts if v.step == step and v.critique), None)
    text = (section or critique).strip()
    return text if len(text) <= max_chars else text[-max_chars:]


def plan_refinement(steps: Sequence[str], critique: str, max_chars: int) -> tuple[int | None, Plan]:
    """Parse one critique of ``steps`` and decide: (0-based label or None, plan)."""
    if not steps:
        return None, Plan("no_steps")
    judgment = parse_critique(critique)
    label = judgment.label
    if label is None:
        return None, Plan("unparsable")
    if label == NO_ERROR:
        return label, Plan("accepted")
    if label >= len(steps):
        return label, Plan("out_of_range")
    return label, Plan("refined", label, step_feedback(judgment, label, critique, max_chars))


def refine_prefill(steps: Sequence[str], error_index: int) -> str:
    """The assistant prefill: the kept steps 1..k-1 and the header of the step to rewrite."""
    kept = number_steps(steps[:error_index])
    header = f"Step {label_to_step(error_index)}:"
    return f"{kept}\n\n{header}" if kept else header


def refine_messages(problem: str, steps: Sequence[str], plan: Plan) -> Prompt:
    """Problem + wrong step + its critique (user), kept steps prefilled (assistant)."""
    if plan.action != "refined" or plan.error_index is None or plan.feedback is None:
        raise ValueError(f"only a 'refined' plan has a refine prompt, got {plan.action!r}")
    k = plan.error_index
    user = render_template(
        load_prompt("refine_user.md"),
        problem=problem.strip(),
        step=str(label_to_step(k)),
        wrong_step=strip_step_prefix(steps[k]).strip(),
        critique=plan.feedback,
    )
    return [
        {"role": "system", "content": load_prompt("solver_system.md").strip()},
        {"role": "user", "content": user},
        {"role": "assistant", "content": refine_prefill(steps, k)},
    ]


@dataclass(frozen=True)
class RefineSummary:
    """Before/after accuracy and transitions for one critic (counts are problems)."""

    critic: str
    model: str
    problems: int
    accuracy_before: float
    accuracy_after: float
    w2c: int  # wrong -> correct
    c2w: int  # correct -> wrong
    refined: int  # problems sent back to the generator at least once
    refined_initially_wrong: int  # of those, how many were wrong to begin with
    actions: dict[str, int]  # first-round action counts
    accuracy_by_round: list[float]  # [before, after round 1, ...]

    def metrics(self) -> dict[str, float]:
        out = {k: float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))}
        out.update({f"first_round_{k}": float(v) for k, v in self.actions.items()})
        return out


def summarize(traces: Sequence[RefineTrace], critic: str, model: str, rounds: int) -> RefineSummary:
    """Count transitions between the initial and the final attempt of every problem."""
    if not traces:
        raise ValueError("no traces to summarize")
    n = len(traces)
    refined = [t for t in traces if any(r.plan.action == "refined" for r in t.rounds)]
    actions: dict[str, int] = {
        a: sum(1 for t in traces if t.rounds and t.rounds[0].plan.action == a) for a in ACTIONS
    }
    by_round = [sum(_correct_after(t, r) for t in traces) / n for r in range(rounds + 1)]
    return RefineSummary(
        critic=critic,
        model=model,
        problems=n,
        accuracy_before=sum(t.before for t in traces) / n,
        accuracy_after=sum(t.after for t in traces) / n,
        w2c=sum(1 for t in traces if not t.before and t.after),
        c2w=sum(1 for t in traces if t.before and not t.after),
        refined=len(refined),
        refined_initially_wrong=sum(1 for t in refined if not t.before),
        actions=actions,
        accuracy_by_round=by_round,
    )


def _correct_after(trace: RefineTrace, rounds: int) -> bool:
    """Correctness after ``rounds`` critique rounds (the attempt current at that point)."""
    made = sum(1 for r in trace.rounds[:rounds] if r.plan.action == "refined")
    return trace.attempts[made].correct


# --------------------------------------------------------------------------- config and run


@dataclass
class RefineConfig:
    """``deepcritic refine``: critique-guided refinement, critic vs baseline critic."""

    CLI_ALIASES: ClassVar[dict[str, str]] = {
        "generator-model": "generator.model",
        "critic-model": "critic.model",
        "baseline-model": "baseline_critic.model",
    }

    problems: str = "gsm8k:test"  # gsm8k:test | math:test | math500 | jsonl:PATH
    limit: int | None = 100  # first N problems (None = all)
    generator: BackendConfig = field(default_factory=BackendConfig)
    critic: BackendConfig = field(default_factory=BackendConfig)
    baseline_critic: BackendConfig = field(default_factory=BackendConfig)  # e.g. the base model
    compare_baseline: bool = True  # also refine with baseline_critic, from the same solutions
    rounds: int = 1  # critique -> rewrite rounds; a refined solution goes back to the critic
    gen_temperature: float = 0.0  # greedy initial solutions and rewrites
    gen_max_tokens: int = 1024  # token budget of each (re)generated solution
    critic_temperature: float = 0.6  # paper: critics evaluated at T=0.6 (as in `deepcritic eval`)
    critic_top_p: float = 0.9  # paper
    critic_max_tokens: int = 4096  # ours: as `deepcritic eval`, room for deliberate critiques
    max_critique_chars: int = 4000  # feedback handed to the generator is cut to this (from the end)
    # the critics' prompt: deepcritic = the project's prompts; reference = the authors' template,
    # Qwen's default system message and eval.py's numbering (the set the critic was trained with)
    prompt_set: str = "deepcritic"
    seed: int = 0  # sampling seed (runs are reproducible)
    out: str = "outputs/refine"  # output folder (records and metrics)
    tracking_uri: str | None = None  # MLflow server (default: $MLFLOW_TRACKING_URI; "off" = none)

    def __post_init__(self) -> None:
        check_prompt_set(self.prompt_set)
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_critique_chars < 1:
            raise ValueError(f"max_critique_chars must be >= 1, got {self.max_critique_chars}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {self.limit}")


@dataclass
class RefineResult:
    summaries: dict[str, RefineSummary]  # "critic" and, when compared, "baseline"
    traces_paths: dict[str, str]
    table_path: str
    plot_path: str
    run_id: str | None = None

    def metrics(self) -> dict[str, float]:
        return {
            f"{name}/{k}": v for name, s in self.summaries.items() for k, v in s.metrics().items()
        }


def initial_attempts(
    generator: Backend, problems: Sequence[ProblemLike], config: RefineConfig
) -> list[Attempt]:
    """One solution per problem (``Step 1:`` prefilled), graded against the gold answer."""
    params = SamplingParams.from_config(config, "gen")
    outs = generator.generate(
        [solver_messages(p.problem) for p in problems], params, desc="initial solutions"
    )
    return [
        make_attempt(SOLVER_PREFILL + group[0].text, p.gold_answer)
        for p, group in zip(problems, outs, strict=True)
    ]


def critique_round(critic: Backend, traces: Sequence[RefineTrace], config: RefineConfig) -> None:
    """Critique the current attempt of each trace and append the round's record."""
    params = SamplingParams.from_config(config, "critic")
    jobs = [t for t in traces if t.attempts[-1].steps]
    prompts = [critic_prompt(t.problem, t.attempts[-1].steps, config.prompt_set) for t in jobs]
    outs = critic.generate(prompts, params, desc="critiquing") if prompts else []
    texts = {id(t): group[0].text for t, group in zip(jobs, outs, strict=True)}
    for t in traces:
        critique = texts.get(id(t), "")
        label, plan = plan_refinement(t.attempts[-1].steps, critique, config.max_critique_chars)
        t.rounds.append(RoundRecord(critique, label, plan))


def rewrite_round(generator: Backend, traces: Sequence[RefineTrace], config: RefineConfig) -> None:
    """Rewrite every trace whose last round says ``refined``, from the wrong step on."""
    params = SamplingParams.from_config(config, "gen")
    prompts = [refine_messages(t.problem, t.attempts[-1].steps, t.rounds[-1].plan) for t in traces]
    outs = generator.generate(prompts, params, desc="rewriting") if prompts else []
    for t, prompt, group in zip(traces, prompts, outs, strict=True):
        t.attempts.append(make_attempt(prompt[-1]["content"] + group[0].text, t.gold_answer))


def refine_with(
    generator: Backend,
    critic: Backend,
    problems: Sequence[ProblemLike],
    initial: Sequence[Attempt],
    config: RefineConfig,
) -> list[RefineTrace]:
    """Run ``config.rounds`` critique/rewrite rounds starting from ``initial``."""
    traces = [
        RefineTrace(str(p.id), p.problem, p.gold_answer, [a])
        for p, a in zip(problems, initial, strict=True)
    ]
    active = list(traces)
    for r in range(config.rounds):
        critique_round(critic, active, config)
        active = [t for t in active if t.rounds[-1].plan.action == "refined"]
        log.info(
            "round %d: %d of %d solution(s) sent back for a rewrite",
            r + 1,
            len(active),
            len(traces),
        )
        if not active:
            break
        rewrite_round(generator, active, config)
    return traces


def run(
    config: RefineConfig,
    *,
    problems: Sequence[ProblemLike] | None = None,
    backends: Mapping[str, Backend] | None = None,
) -> RefineResult:
    """Initial solutions, then refinement with the critic (and the baseline critic); report."""
    probs = (
        list(problems) if problems is not None else load_problem_set(config.problems, config.limit)
    )
    roles = {"generator": config.generator, "critic": config.critic}
    if config.compare_baseline:
        roles["baseline"] = config.baseline_critic
    summaries: dict[str, RefineSummary] = {}
    paths: dict[str, str] = {}
    out = Path(config.out)
    with tracking.stage_run("refine", config, tracking_uri=config.tracking_uri) as tracker:
        with shared_backends(roles, backends) as live:
            initial = initial_attempts(live["generator"], probs, config)
            for role in [r for r in ("critic", "baseline") if r in roles]:
                traces = refine_with(live["generator"], live[role], probs, initial, config)
                summaries[role] = summarize(traces, role, roles[role].model, config.rounds)
                paths[role] = str(out / f"traces_{role}.jsonl")
                write_jsonl(paths[role], (t.to_dict() for t in traces))
        result = write_report(summaries, paths, out)
        tracker.log_metrics(result.metrics())
        for s in summaries.values():
            for r, acc in enumerate(s.accuracy_by_round):
                tracker.log_metrics({f"{s.critic}/accuracy": acc}, step=r)
        tracker.log_table([asdict(s) for s in summaries.values()], "refine/summary.json")
        tracker.log_artifact(out, "refine")
        result.run_id = tracker.run_id
    return result


def write_report(
    summaries: Mapping[str, RefineSummary], paths: dict[str, str], out: Path
) -> RefineResult:
    """Markdown table + accuracy-per-round plot under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table_path = out / "table.md"
    table_path.write_text(format_table(list(summaries.values())), encoding="utf-8")
    plot_path = out / "accuracy_by_round.png"
    plot_summaries(list(summaries.values()), plot_path)
    log.info("refine: table %s, plot %s", table_path, plot_path)
    return RefineResult(dict(summaries), paths, str(table_path), str(plot_path))


def format_table(summaries: Sequence[RefineSummary]) -> str:
    lines = [
        "| critic | model | problems | acc before | acc after | w->c | c->w | refined | accepted | unparsable | out of range |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        a = s.actions
        lines.append(
            f"| {s.critic} | {s.model} | {s.problems} | {100 * s.accuracy_before:.1f} | "
            f"{100 * s.accuracy_after:.1f} | {s.w2c} | {s.c2w} | {s.refined} | {a['accepted']} | "
            f"{a['unparsable']} | {a['out_of_range']} |"
        )
    return "\n".join(lines) + "\n"


def plot_summaries(summaries: Sequence[RefineSummary], path: Path) -> None:
    """Accuracy after each round (round 0 = the initial solutions), one line per critic."""
    xlabel, title = "refinement round (0 = initial)", "critique-guided refinement"
    with accuracy_plot(path, xlabel=xlabel, title=title, fontsize=7) as ax:
        for s in summaries:
            rounds = list(range(len(s.accuracy_by_round)))
            label = f"{s.critic} ({s.model}): w->c {s.w2c}, c->w {s.c2w}"
            ax.plot(rounds, [100 * a for a in s.accuracy_by_round], "o-", label=label)
        ax.set_xticks(rounds)


# --------------------------------------------------------------------------- CLI


def register_cli(subparsers: Any) -> None:
    add_report_command(
        subparsers, "refine", "critique-guided refinement: accuracy before/after, w->c and c->w",
        __doc__, RefineConfig, run,
        lambda r: f"traces: {', '.join(r.traces_paths.values())}\nplot: {r.plot_path}",
    )  # fmt: skip
