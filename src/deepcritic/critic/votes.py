"""Answer voting: answer classes, plain majority, critic-verified majority and the critic's verdict.

The stage that samples, critiques and scores them is :mod:`deepcritic.critic.voting`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deepcritic.answers import answers_match
from deepcritic.grader import NO_ERROR
from deepcritic.scoring import majority_vote

log = logging.getLogger(__name__)

AnswerMatcher = Callable[[str | None, str], bool]


# --------------------------------------------------------------------------- answer voting


@dataclass(frozen=True)
class Vote:
    """Outcome of one vote. ``index`` is the winning sample (None when nobody could vote)."""

    index: int | None
    answer: str | None
    votes: int
    voters: int
    fallback: bool = False


def answer_classes(
    answers: Sequence[str | None], same: AnswerMatcher = answers_match
) -> list[int | None]:
    """Equivalence class of each answer (None for a missing answer).

    Greedy in sampling order: an answer joins the first class whose first member it matches
    (``same(answer, first_member)``), else opens a new class. Prefix-consistent: the classes of
    the first k answers do not depend on later answers.
    """
    firsts: list[int] = []
    out: list[int | None] = []
    for i, answer in enumerate(answers):
        if answer is None or not answer.strip():
            out.append(None)
            continue
        for c, first in enumerate(firsts):
            if same(answer, answers[first] or ""):
                out.append(c)
                break
        else:
            firsts.append(i)
            out.append(len(firsts) - 1)
    return out


def vote_answers(
    answers: Sequence[str | None],
    classes: Sequence[int | None],
    among: Sequence[bool] | None = None,
) -> Vote:
    """Majority vote over answer classes, restricted to samples with ``among[i]`` (all if None).

    Tie rule: most votes, then the class whose earliest voting sample has the lowest index.
    """
    if len(classes) != len(answers) or (among is not None and len(among) != len(answers)):
        raise ValueError("answers, classes and among must have the same length")
    counts: dict[int, int] = {}
    earliest: dict[int, int] = {}
    for i, c in enumerate(classes):
        if c is None or (among is not None and not among[i]):
            continue
        counts[c] = counts.get(c, 0) + 1
        earliest.setdefault(c, i)
    if not counts:
        return Vote(None, None, 0, 0)
    best = min(counts, key=lambda c: (-counts[c], earliest[c]))
    index = earliest[best]
    return Vote(index, answers[index], counts[best], sum(counts.values()))


def verified_vote(
    answers: Sequence[str | None],
    classes: Sequence[int | None],
    verdicts: Sequence[bool | None],
) -> Vote:
    """Vote among samples judged correct (``verdicts[i] is True``); when none of them has an
    answer, fall back to the plain vote over all samples (``fallback=True``)."""
    if len(verdicts) != len(answers):
        raise ValueError("verdicts and answers must have the same length")
    vote = vote_answers(answers, classes, [v is True for v in verdicts])
    if vote.index is not None:
        return vote
    plain = vote_answers(answers, classes)
    return Vote(plain.index, plain.answer, plain.votes, plain.voters, fallback=True)


def critic_verdict(labels: Sequence[int | None]) -> bool | None:
    """Combine a solution's critique labels (0-based / -1 / None) into one verdict.

    The majority label (:func:`deepcritic.scoring.majority_vote`, unparsable critiques dropped,
    ties to the label seen first) decides: -1 -> judged correct (True), a step -> judged wrong
    (False). None when no critique was parsable (the solution is then not verified).
    """
    label = majority_vote(labels)
    return None if label is None else label == NO_ERROR
