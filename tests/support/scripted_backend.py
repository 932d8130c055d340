"""A test double behind the ``Backend`` protocol: fixed outputs from a script (tests only).

``respond(prompt, params)`` returns the ``params.n`` outputs for one prompt (strings, or
``Completion`` objects to set a finish reason); ``pick(prompt, choices)`` answers ``choose``.
``crash_when(prompt)`` makes ``generate`` raise :class:`SimulatedCrash` (a killed worker).
Every call is recorded so tests can assert what was (not) asked.

:class:`SeedTeacher` scripts a seed-stage teacher: right by default, with per (solution id, step,
sub-step) overrides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from deepcritic import grader
from deepcritic.generation import Completion, GenerationStats, Prompt, SamplingParams
from deepcritic.records import Solution

Respond = Callable[[Prompt, SamplingParams], Sequence["str | Completion"]]
Pick = Callable[[Prompt, Sequence[str]], int]


class SimulatedCrash(RuntimeError):
    """Raised by the scripted backend to simulate a worker killed mid-run."""


class ScriptedBackend:
    name = "scripted"

    def __init__(
        self,
        respond: Respond,
        pick: Pick | None = None,
        crash_when: Callable[[Prompt], bool] | None = None,
    ) -> None:
        self.respond = respond
        self.pick = pick or (lambda prompt, choices: 0)
        self.crash_when = crash_when
        self.stats = GenerationStats()
        self.generate_calls: list[tuple[list[Prompt], SamplingParams]] = []
        self.choose_calls: list[tuple[list[Prompt], list[str]]] = []
        self.closed = False

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, desc: str | None = None
    ) -> list[list[Completion]]:
        if self.crash_when is not None and any(self.crash_when(p) for p in prompts):
            raise SimulatedCrash("scripted backend: simulated crash")
        self.generate_calls.append((list(prompts), params))
        out: list[list[Completion]] = []
        for prompt in prompts:
            texts = list(self.respond(prompt, params))
            if len(texts) != params.n:
                raise AssertionError(f"script gave {len(texts)} outputs, n={params.n}")
            out.append([t if isinstance(t, Completion) else Completion(t) for t in texts])
        self.stats.add(out, 0.0)
        return out

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        self.choose_calls.append((list(prompts), list(choices)))
        return [self.pick(p, choices) for p in prompts]

    def close(self) -> None:
        self.closed = True


# ---- a scripted seed teacher (knows the seed prompts' layout) ----

_PID = re.compile(r"\[Problem\]\nProblem (\w+):")
_STEP = re.compile(r"\[Step under review\]\nStep (\d+):")


def toy_solution(pid: str, label: int, n_steps: int = 3) -> Solution:
    """A small solution whose problem names its id (the teacher script finds it there)."""
    steps = [f"We compute {i} + {i} = {2 * i}." for i in range(1, n_steps + 1)]
    return Solution(id=pid, problem=f"Problem {pid}: add things.", steps=steps, label=label)


def substep(prompt: Prompt) -> str:
    user = prompt[1]["content"]
    if user.startswith("You will rewrite"):
        return "merge"
    return "indepth" if "[First critique]" in user else "initial"


def where(prompt: Prompt) -> tuple[str, int]:
    user = prompt[1]["content"]
    pid = _PID.findall(user)[-1]
    step = int(_STEP.findall(user)[-1])
    return pid, step


def verdict_text(v: int, what: str = "critique") -> str:
    return f"A careful {what}: 2 + 2 = 4 checks out.\n\n**Judgement**: \\boxed{{{v}}}"


class SeedTeacher:
    """Right by default (every verdict = the label's); ``script`` overrides (pid, step, sub)."""

    def __init__(self, solutions: list[Solution], script: dict | None = None) -> None:
        self.labels = {s.id: s.label for s in solutions}
        self.script = script or {}

    def expected(self, pid: str, step: int) -> int:
        return -1 if grader.step_to_label(step) == self.labels[pid] else 1

    def __call__(self, prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
        pid, step = where(prompt)
        sub = substep(prompt)
        if (pid, step, sub) in self.script:
            return list(self.script[(pid, step, sub)])
        return [verdict_text(self.expected(pid, step), sub)] * params.n
