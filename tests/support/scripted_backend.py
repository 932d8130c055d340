"""A test double behind the ``Backend`` protocol: fixed outputs from a script (tests only).

``respond(prompt, params)`` returns the ``params.n`` outputs for one prompt (strings, or
``Completion`` objects to set a finish reason); ``pick(prompt, choices)`` answers ``choose``.
``crash_when(prompt)`` makes ``generate`` raise :class:`SimulatedCrash` (a killed worker).
Every call is recorded so tests can assert what was (not) asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from deepcritic.generation import Completion, GenerationStats, Prompt, SamplingParams

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
