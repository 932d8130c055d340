"""The one generation interface every stage uses: chat prompts + sampling params -> completions.

A prompt is a list of chat messages. When its last message has role ``assistant``, the backend
*continues* that message (prefill) instead of opening a new turn: Monte Carlo rollouts continue a
step prefix, forced verdicts continue ``**Answer**: \\boxed{``.

Cancellation: ``generate(..., should_stop=f)`` lets a caller (the server, for clients that went
away) stop prompts that are already generating. The backend calls ``f(i)`` with the index of a
prompt between decode steps (from the generate thread); once it is true, prompt ``i`` stops within
about one step and its completions come back with ``finish_reason="cancelled"`` (the text and
tokens generated until then). ``None`` (every batch stage) changes nothing.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Message = dict[str, str]
Prompt = list[Message]
FinishReason = Literal["stop", "length", "error", "cancelled"]
# should_stop(prompt index) -> True once that prompt's caller has gone: stop generating it
StopCheck = Callable[[int], bool]

_STOP_REASONS = frozenset({"stop", "eos", "end_turn", "stop_sequence", "tool_calls"})
_LENGTH_REASONS = frozenset({"length", "max_tokens"})


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_config(cls, config: Any, prefix: str, n: int = 1) -> SamplingParams:
        """``n`` samples as a stage config sets them: its ``<prefix>_temperature``,
        ``<prefix>_top_p`` (1.0 where the config has none), ``<prefix>_max_tokens`` and ``seed``."""
        return cls(
            n=n,
            temperature=getattr(config, f"{prefix}_temperature"),
            top_p=getattr(config, f"{prefix}_top_p", 1.0),
            max_tokens=getattr(config, f"{prefix}_max_tokens"),
            seed=config.seed,
        )


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class GenerationStats:
    """Running totals a backend keeps, for throughput figures and MLflow."""

    prompts: int = 0
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, outs: Sequence[Sequence[Completion]], seconds: float) -> None:
        self.prompts += len(outs)
        for group in outs:
            self.completions += len(group)
            for c in group:
                self.completion_tokens += c.completion_tokens
            if group:
                self.prompt_tokens += group[0].prompt_tokens
        self.seconds += seconds

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. ``generate`` returns ``n`` completions per prompt, in order."""

    name: str
    stats: GenerationStats

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        desc: str | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[list[Completion]]:
        """Generate; ``desc`` (if set) labels a progress bar; ``should_stop(i)`` true stops
        prompt ``i`` early (its completions then end with ``finish_reason="cancelled"``)."""
        ...

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        """Constrained decoding: for each prompt (usually ending in an assistant prefill), the
        index of the choice the model prefers. Used to force a verdict (``1`` / ``-1``)."""
        ...

    def close(self) -> None: ...


def continues_assistant(prompt: Prompt) -> bool:
    """True when the prompt ends in an assistant message that the backend must continue."""
    return bool(prompt) and prompt[-1].get("role") == "assistant"


# ------------------------------------------------- helpers shared by the backends


def accepts_should_stop(backend: object) -> bool:
    """Whether ``backend.generate`` takes ``should_stop`` (a backend written before the hook, such
    as a test double, is called without it: its prompts run to the end, as they always did)."""
    try:
        params = inspect.signature(backend.generate).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
    return "should_stop" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
    )


def cancelled_completion(prompt_tokens: int = 0, text: str = "", tokens: int = 0) -> Completion:
    """The completion of a prompt stopped by ``should_stop`` (what it generated until then)."""
    return Completion(text, "cancelled", prompt_tokens, tokens)


def finish_reason_from(raw: object) -> FinishReason:
    """Map an engine's finish reason to ``stop`` / ``length`` / ``error`` (anything unknown)."""
    if raw is None or raw in _STOP_REASONS:
        return "stop"
    if raw in _LENGTH_REASONS:
        return "length"
    return "error"


def check_prompts(prompts: Sequence[Prompt]) -> list[Prompt]:
    """Every prompt is a non-empty list of ``{"role": str, "content": str}``; else a ValueError
    naming the prompt and message index."""
    out = list(prompts)
    for i, prompt in enumerate(out):
        if not isinstance(prompt, list) or not prompt:
            raise ValueError(
                f"prompt {i}: expected a non-empty list of messages, got {prompt!r:.80}"
            )
        for j, m in enumerate(prompt):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ValueError(f"prompt {i}, message {j}: missing string field 'role'")
            if not isinstance(m.get("content"), str):
                raise ValueError(f"prompt {i}, message {j}: missing string field 'content'")
    return out


def match_choice(text: str, choices: Sequence[str]) -> int | None:
    """The index of the choice a free-text reply names, or None.

    Exact match (after trimming spaces, quotes, ``$``, ``*``, a closing ``}`` and a final ``.``)
    wins; otherwise the choice standing alone (not inside a longer number or word) earliest in the
    text, the longest one on a tie. ``"-1"`` never matches the choice ``"1"``.
    """
    stripped = text.strip().strip("\"'`$* ").rstrip(".}").strip()
    for i, c in enumerate(choices):
        if stripped == c.strip():
            return i
    best: tuple[int, int, int] | None = None  # (position, -length, index)
    for i, c in enumerate(choices):
        needle = c.strip()
        if not needle:
            continue
        m = re.search(rf"(?<![\w\-.]){re.escape(needle)}(?![\w]|\.\d)", text)
        if m and (best is None or (m.start(), -len(needle), i) < best):
            best = (m.start(), -len(needle), i)
    return None if best is None else best[2]
