"""Critique one chunk of solutions with the teacher: initial -> in-depth -> merge -> format.

Each sub-step is one batched ``backend.generate`` call over the whole chunk (plus one batched
``choose`` for forced verdicts). The result is one record per solution, kept or dropped with a
reason; counts per sub-step go into the record so totals can be summed over shards and resumes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from deepcritic import grader
from deepcritic.generation import Backend, Prompt, SamplingParams
from deepcritic.prompting import critique_messages
from deepcritic.records import Solution
from deepcritic.stages.seed.config import SeedConfig
from deepcritic.stages.seed.reference_set import ReferenceSeedPrompts
from deepcritic.stages.seed.teacher import (
    VERDICT_PREFIX,
    Verdict,
    count_verdicts,
    expected_verdict,
    finish_verdicts,
    indepth_prompt,
    initial_prompt,
    merge_prompt,
    steps_to_critique,
)

SUBSTEPS = ("initial", "indepth", "merge")
BASE_COUNTS = ("requests", "samples", "parsed", "forced", "matched")
_VERDICT_LINE = re.compile(r"(?:\*\*)?\s*Judg(?:e)?ment\s*(?:\*\*)?\s*:?\s*(?:\*\*)?\s*$", re.I)


@dataclass
class StepWork:
    """One critiqued step of one solution as it moves through the sub-steps."""

    solution: Solution
    index: int  # 0-based step index
    initial: Verdict | None = None
    indepth: Verdict | None = None
    indepth_sample: int | None = None  # which of the n in-depth samples matched
    indepth_only_forced: bool = False  # some sample matched, but only with a forced verdict
    merged: Verdict | None = None

    @property
    def expected(self) -> int:
        return expected_verdict(self.solution, self.index)


Counts = dict[str, dict[str, Counter[str]]]
Render = Callable[[Solution, Sequence[str]], list[dict[str, str]]]


class SeedPrompts(Protocol):
    """One prompt set's teacher prompts, forced-verdict line and SFT format (``prompt_set``)."""

    @property
    def name(self) -> str: ...

    def initial(self, solution: Solution, index: int) -> Prompt: ...

    def indepth(self, solution: Solution, index: int, initial: str) -> Prompt: ...

    def merge(self, solution: Solution, index: int, initial: str, indepth: str) -> Prompt: ...

    def verdict_prefix(self, index: int) -> str: ...

    def body(self, merged: str) -> str: ...

    def messages(self, solution: Solution, bodies: Sequence[str]) -> list[dict[str, str]]: ...


class ProjectSeedPrompts:
    """``prompt_set: deepcritic``: the project's prompts (prompts/seed_*.md) and critique format."""

    name = "deepcritic"

    def initial(self, solution: Solution, index: int) -> Prompt:
        return initial_prompt(solution, index)

    def indepth(self, solution: Solution, index: int, initial: str) -> Prompt:
        return indepth_prompt(solution, index, initial)

    def merge(self, solution: Solution, index: int, initial: str, indepth: str) -> Prompt:
        return merge_prompt(solution, index, initial, indepth)

    def verdict_prefix(self, index: int) -> str:
        return VERDICT_PREFIX

    def body(self, merged: str) -> str:
        return critique_body(merged)

    def messages(self, solution: Solution, bodies: Sequence[str]) -> list[dict[str, str]]:
        return format_messages(solution, bodies)


def seed_prompts(prompt_set: str) -> SeedPrompts:
    """The prompt set named by the config (the reference files are fetched, sha256-checked)."""
    return ReferenceSeedPrompts.load() if prompt_set == "reference" else ProjectSeedPrompts()


def critique_chunk(
    backend: Backend, solutions: Sequence[Solution], config: SeedConfig, chunk_seed: int
) -> list[dict[str, Any]]:
    """Run all sub-steps for ``solutions``; return one output record per solution, in order."""
    counts: Counts = {
        s.id: {k: Counter(dict.fromkeys(BASE_COUNTS, 0)) for k in SUBSTEPS} for s in solutions
    }
    work = [StepWork(s, j) for s in solutions for j in range(steps_to_critique(s))]
    ps = seed_prompts(config.prompt_set)
    _run_initial(backend, work, config, ps, chunk_seed, counts)
    _run_indepth(backend, work, config, ps, chunk_seed + 1, counts)
    failed = {w.solution.id for w in work if w.indepth is None}  # no merge for a doomed solution
    merge_work = [w for w in work if w.solution.id not in failed]
    _run_merge(backend, merge_work, config, ps, chunk_seed + 2, counts)
    return [
        build_record(s, [w for w in work if w.solution.id == s.id], counts[s.id], config, ps)
        for s in solutions
    ]


def _text(v: Verdict | None) -> str:
    if v is None:
        raise RuntimeError("a sub-step ran before the one it depends on")
    return v.text


def _sample_all(
    backend: Backend,
    prompts: list[Prompt],
    params: SamplingParams,
    desc: str,
    prefixes: list[str],
) -> list[list[Verdict]]:
    """Generate for every prompt and finish every sample's verdict (one batched choose;
    ``prefixes``: each prompt's open verdict line for a forced verdict)."""
    if not prompts:
        return []
    outs = backend.generate(prompts, params, desc=desc)
    if len(outs) != len(prompts):
        raise RuntimeError(f"backend returned {len(outs)} groups for {len(prompts)} prompts")
    flat = [(i, c) for i, group in enumerate(outs) for c in group]
    verdicts = finish_verdicts(
        backend,
        [prompts[i] for i, _ in flat],
        [c for _, c in flat],
        [prefixes[i] for i, _ in flat],
    )
    grouped: list[list[Verdict]] = [[] for _ in prompts]
    for (i, _), v in zip(flat, verdicts, strict=True):
        grouped[i].append(v)
    return grouped


def _prefixes(ps: SeedPrompts, work: list[StepWork]) -> list[str]:
    return [ps.verdict_prefix(w.index) for w in work]


def _run_initial(
    backend: Backend,
    work: list[StepWork],
    config: SeedConfig,
    ps: SeedPrompts,
    seed: int,
    counts: Counts,
) -> None:
    prompts = [ps.initial(w.solution, w.index) for w in work]
    params = config.initial.params(seed)
    groups = _sample_all(backend, prompts, params, "seed: initial critiques", _prefixes(ps, work))
    for w, group in zip(work, groups, strict=True):
        c = counts[w.solution.id]["initial"]
        c["requests"] += 1
        count_verdicts(group[:1], c)
        w.initial = group[0] if group else None
        c["matched"] += bool(w.initial and grader.is_match(w.initial.value, w.expected))


def pick_indepth(group: Sequence[Verdict], expected: int, allow_forced: bool) -> int | None:
    """Index of the in-depth sample to keep: the first matching one that wrote its own verdict
    (the reference uses only those); else, when ``allow_forced``, the first matching forced one."""
    hits = [k for k, v in enumerate(group) if grader.is_match(v.value, expected)]
    written = [k for k in hits if not group[k].forced]
    if written:
        return written[0]
    return hits[0] if hits and allow_forced else None


def _run_indepth(
    backend: Backend,
    work: list[StepWork],
    config: SeedConfig,
    ps: SeedPrompts,
    seed: int,
    counts: Counts,
) -> None:
    prompts = [ps.indepth(w.solution, w.index, _text(w.initial)) for w in work]
    params = config.indepth.params(seed)
    groups = _sample_all(backend, prompts, params, "seed: in-depth critiques", _prefixes(ps, work))
    for w, group in zip(work, groups, strict=True):
        c = counts[w.solution.id]["indepth"]
        c["requests"] += 1
        count_verdicts(group, c)
        hits = [v for v in group if grader.is_match(v.value, w.expected)]
        c["matched_samples"] += len(hits)
        k = pick_indepth(group, w.expected, config.allow_forced_indepth)
        if k is not None:  # paper: keep the first sample whose verdict matches the label
            w.indepth, w.indepth_sample = group[k], k
            c["matched"] += 1
            c["matched_forced"] += group[k].forced
        elif hits:  # matches exist, all with forced verdicts, and those are not allowed
            w.indepth_only_forced = True
            c["matched_only_forced"] += 1


def _run_merge(
    backend: Backend,
    work: list[StepWork],
    config: SeedConfig,
    ps: SeedPrompts,
    seed: int,
    counts: Counts,
) -> None:
    prompts = [ps.merge(w.solution, w.index, _text(w.initial), _text(w.indepth)) for w in work]
    params = config.merge.params(seed)
    groups = _sample_all(backend, prompts, params, "seed: merged critiques", _prefixes(ps, work))
    for w, group in zip(work, groups, strict=True):
        c = counts[w.solution.id]["merge"]
        c["requests"] += 1
        count_verdicts(group[:1], c)
        w.merged = group[0] if group else None
        c["matched"] += bool(w.merged and grader.is_match(w.merged.value, w.expected))


def critique_body(text: str) -> str:
    """A merged critique without its trailing verdict (the SFT text re-renders it in one format)."""
    boxes = grader.find_boxes(text)
    if not boxes:
        return text.strip()
    box = boxes[-1]
    line_start = text.rfind("\n", 0, box.start) + 1
    verdict_words = _VERDICT_LINE.search(text[line_start : box.start])
    cut = line_start + verdict_words.start() if verdict_words else box.start
    return text[:cut].strip()


def format_messages(solution: Solution, bodies: Sequence[str]) -> list[dict[str, str]]:
    """SFT chat: system + critique prompt + the merged critiques of steps 1..k and the answer."""
    sections = [(body, expected_verdict(solution, j) == 1) for j, body in enumerate(bodies)]
    assistant = grader.render_critique(sections)
    return [
        *critique_messages(solution.problem, solution.steps),
        {"role": "assistant", "content": assistant},
    ]


def roundtrip_ok(solution: Solution, assistant: str) -> bool:
    """The final text must parse back (one grader, strict mode: the reward's reading) to the label
    and to every step verdict."""
    judgment = grader.parse_critique(assistant, strict=True)
    wanted = [expected_verdict(solution, j) == 1 for j in range(steps_to_critique(solution))]
    got = [v.correct for v in judgment.verdicts]
    return grader.is_match(judgment.label, solution.label) and got == wanted


def _drop_reason(solution: Solution, work: Sequence[StepWork], config: SeedConfig) -> str | None:
    if not all(w.indepth for w in work):
        only_forced = any(w.indepth is None and w.indepth_only_forced for w in work)
        return "indepth_only_forced" if only_forced else "indepth_mismatch"
    if any(w.merged is None for w in work):
        return "merge_missing"
    if config.drop_truncated_merges and any(
        w.merged is not None and w.merged.reason == "truncated" for w in work
    ):
        return "merge_truncated"
    if config.require_merge_match and not all(
        w.merged and grader.is_match(w.merged.value, w.expected) for w in work
    ):
        return "merge_mismatch"
    return None


def build_record(
    solution: Solution,
    work: Sequence[StepWork],
    counts: dict[str, Counter[str]],
    config: SeedConfig,
    ps: SeedPrompts | None = None,
) -> dict[str, Any]:
    """The per-solution output line (kept with SFT messages, or dropped with a reason)."""
    ps = ps or ProjectSeedPrompts()
    reason = _drop_reason(solution, work, config)
    bodies = [ps.body(w.merged.text) for w in work if w.merged]
    if reason is None and not all(bodies):
        reason = "empty_critique"
    return seed_record(
        solution,
        reason,
        bodies,
        initial_all_right=all(
            w.initial and grader.is_match(w.initial.value, w.expected) for w in work
        ),
        counts={f"{sub}.{k}": v for sub, c in counts.items() for k, v in sorted(c.items())},
        steps=[_step_dict(w) for w in work],
        render=ps.messages,
        prompt_set=ps.name,
    )


def seed_record(
    solution: Solution,
    reason: str | None,
    bodies: Sequence[str],
    *,
    initial_all_right: bool,
    counts: dict[str, int],
    steps: list[dict[str, Any]],
    render: Render = format_messages,
    prompt_set: str = "deepcritic",
    **extra: Any,
) -> dict[str, Any]:
    """One seed output line, whichever teacher wrote ``bodies`` (one critique per step): kept
    with its SFT messages (``render``: the prompt set's SFT format; ``prompt_set`` names it) when
    ``reason`` is None and the formatted critique grades back to the label and every step
    verdict, else dropped with the reason. finalize, balance and SFT read only this shape."""
    messages = None
    if reason is None:
        messages = render(solution, list(bodies))
        if not roundtrip_ok(solution, messages[-1]["content"]):
            reason, messages = "format_roundtrip", None
    return {
        "id": solution.id,
        "label": solution.label,
        "source": solution.source,
        "status": "kept" if reason is None else "dropped",
        "reason": reason,
        "initial_all_right": initial_all_right,
        "counts": counts,
        "steps": steps,
        "messages": messages,
        "prompt_set": prompt_set,
        **extra,
    }


def _step_dict(w: StepWork) -> dict[str, Any]:
    return {
        "step": grader.label_to_step(w.index),
        "expected": w.expected,
        "initial": w.initial.to_dict() if w.initial else None,
        "indepth": w.indepth.to_dict() if w.indepth else None,
        "indepth_sample": w.indepth_sample,
        "merged": w.merged.to_dict() if w.merged else None,
    }
