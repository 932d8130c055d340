r"""GRPO rewards for the critic, computed by the one grader.

:func:`first_error_reward` is a TRL-compatible reward function (``GRPOTrainer(reward_funcs=[...])``):
TRL calls it with ``prompts=``, ``completions=`` and every dataset column as a keyword (here
``label``, the 0-based first wrong step or -1). A completion earns 1.0 when the one grader in
strict mode (:func:`deepcritic.grader.judge` with ``strict=True``) reads a prediction that
:func:`deepcritic.grader.is_match` accepts, else 0.0. Strict, as the method specifies: only the
judgment after ``**Answer**:`` counts, so an output without the marker earns nothing, and a
truncated critique ending in a per-step ``\boxed{-1}`` ("this step is wrong") is never read as -1
("no error"). ``parser`` (``CriticGRPOConfig.reward_parser``) picks the reading: ``strict``
(default, the method's), ``lenient`` (the grader's lenient mode) or ``official`` (the authors'
``eval.py`` reading, :func:`deepcritic.grader.official_label`: the last ``\boxed{}`` anywhere, so
a critic prompted with the reference template, which asks only for a box, can earn reward before
it has learnt the marker; the authors' RL reward code is not released). An optional format term (off by default) adds ``format_penalty`` (a negative
number, e.g. -0.5) to completions whose judgment cannot be read.

Completions come either as plain strings or, for conversational datasets, as a list of message
dicts (``[{"role": "assistant", "content": "..."}]``); both are handled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from deepcritic.grader import is_match

RewardParser = Literal["strict", "lenient", "official"]
REWARD_PARSERS: tuple[str, ...] = ("strict", "lenient", "official")

UNPARSABLE_METRIC = "critic/unparsable_frac"
ACCURACY_METRIC = "critic/match_frac"


def completion_text(completion: Any) -> str:
    """The assistant text of one TRL completion: a string, or a list of message dicts."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence):
        parts = [
            str(m.get("content") or "")
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        ]
        return "".join(parts)
    raise TypeError(f"completion must be a string or a list of messages, got {type(completion)!r}")


def read_prediction(text: str, parser: str = "strict") -> int | None:
    """The 0-based prediction of one critique under a reward parser (None = unreadable), read by
    :func:`deepcritic.scoring.read_output`: ``strict`` = the grader with the marker required,
    ``lenient`` = without, ``official`` = eval.py's single-critique reading."""
    from deepcritic.scoring import read_output

    if parser not in REWARD_PARSERS:
        raise ValueError(
            f"reward_parser: must be one of {', '.join(REWARD_PARSERS)}, got {parser!r}"
        )
    return read_output(text, parser="official" if parser == "official" else "strict",
                       require_marker=parser == "strict")  # fmt: skip


def score_completion(
    text: str, label: int, *, format_penalty: float = 0.0, parser: str = "strict"
) -> tuple[float, bool]:
    """(reward, parsable) of one critique against its 0-based label (strict reading by default)."""
    prediction = read_prediction(text, parser)
    reward = 1.0 if is_match(prediction, int(label)) else 0.0
    if prediction is None:
        reward += format_penalty
    return reward, prediction is not None


def first_error_reward(
    completions: Sequence[Any],
    label: Sequence[int],
    *,
    format_penalty: float = 0.0,
    parser: str = "strict",
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs: Any,
) -> list[float]:
    """1.0 when the predicted first wrong step equals ``label`` (0-based, -1 = none), else 0.0.

    ``format_penalty`` (default 0.0 = off) is added for a completion with no readable judgment;
    ``parser``: ``strict`` (default, the method's reward: the ``**Answer**:`` marker is required),
    ``lenient`` or ``official`` (module docstring).
    When TRL passes ``log_metric``, the fractions of unparsable and matching completions are logged.
    """
    if len(completions) != len(label):
        raise ValueError(f"got {len(completions)} completions but {len(label)} labels")
    scored = [
        score_completion(completion_text(c), lab, format_penalty=format_penalty, parser=parser)
        for c, lab in zip(completions, label, strict=True)
    ]
    if log_metric is not None and scored:
        n = len(scored)
        log_metric(UNPARSABLE_METRIC, sum(not ok for _, ok in scored) / n)
        log_metric(ACCURACY_METRIC, sum(r >= 1.0 for r, _ in scored) / n)
    return [r for r, _ in scored]


def make_first_error_reward(
    format_penalty: float = 0.0, *, parser: str = "strict"
) -> Callable[..., list[float]]:
    """:func:`first_error_reward` with a fixed format term and mode, named for TRL's metric keys."""

    def first_error(completions: Sequence[Any], label: Sequence[int], **kwargs: Any) -> list[float]:
        kwargs.pop("format_penalty", None)
        kwargs.pop("parser", None)
        return first_error_reward(
            completions, label, format_penalty=format_penalty, parser=parser, **kwargs
        )

    return first_error
