"""Verified majority voting: answer classes, tie rule, fallback, critic verdicts, per-k scoring."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from deepcritic.critic import voting
from deepcritic.critic.voting import (
    ProblemSamples,
    ScoredSample,
    VotingConfig,
    answer_classes,
    critic_verdict,
    score_k,
    verified_vote,
    vote_answers,
)
from deepcritic.data.problems import Problem
from deepcritic.generation import Prompt
from support.scripted_backend import ScriptedBackend


def _exact(a: str | None, b: str) -> bool:
    return a == b


# --------------------------------------------------------------------------- answer classes


def test_answer_classes_use_math_equivalence_not_strings() -> None:
    answers = ["1/2", "0.5", r"\frac{1}{2}", "3", None, "3.0", "  "]
    assert answer_classes(answers) == [0, 0, 0, 1, None, 1, None]


def test_answer_classes_are_prefix_consistent() -> None:
    answers = ["7", "8", "7", "9", "8", "8"]
    full = answer_classes(answers, _exact)
    for k in range(1, len(answers) + 1):
        assert answer_classes(answers[:k], _exact) == full[:k]


# --------------------------------------------------------------------------- votes and ties


def test_plain_vote_majority_wins() -> None:
    answers = ["5", "6", "6"]
    vote = vote_answers(answers, answer_classes(answers, _exact))
    assert (vote.index, vote.answer, vote.votes, vote.voters) == (1, "6", 2, 3)


def test_tie_goes_to_class_seen_first() -> None:
    answers = ["2", "3", "3", "2"]
    vote = vote_answers(answers, answer_classes(answers, _exact))
    assert (vote.index, vote.answer, vote.votes) == (0, "2", 2)
    answers = ["3", "2", "2", "3"]
    assert vote_answers(answers, answer_classes(answers, _exact)).answer == "3"


def test_tie_rule_uses_earliest_voter_not_earliest_sample() -> None:
    # Sample 0 ("2") is not allowed to vote: the "2" class's earliest voter is sample 3.
    answers = ["2", "3", "4", "2"]
    among = [False, True, True, True]
    vote = vote_answers(answers, answer_classes(answers, _exact), among)
    assert (vote.index, vote.answer) == (1, "3")


def test_missing_answers_do_not_vote() -> None:
    answers: list[str | None] = [None, None, "4"]
    vote = vote_answers(answers, answer_classes(answers, _exact))
    assert (vote.index, vote.voters) == (2, 1)
    empty = vote_answers([None, None], [None, None])
    assert empty.index is None and empty.answer is None and empty.voters == 0


def test_vote_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        vote_answers(["1"], [0, 1])


def test_verified_vote_picks_the_minority_the_critic_accepts() -> None:
    answers = ["10", "12", "12", "12"]
    classes = answer_classes(answers, _exact)
    vote = verified_vote(answers, classes, [True, False, None, False])
    assert (vote.answer, vote.votes, vote.voters, vote.fallback) == ("10", 1, 1, False)


def test_verified_vote_falls_back_when_nothing_is_judged_correct() -> None:
    answers = ["10", "12", "12"]
    classes = answer_classes(answers, _exact)
    vote = verified_vote(answers, classes, [False, None, False])
    assert vote.fallback and vote.answer == "12" and vote.votes == 2
    # Judged correct but without an extractable answer: still nothing to vote on -> fallback.
    vote = verified_vote([None, "12"], [None, 0], [True, False])
    assert vote.fallback and vote.answer == "12"


# --------------------------------------------------------------------------- critic verdicts


@pytest.mark.parametrize(
    ("labels", "verdict"),
    [
        ([-1], True),  # critic says every step is right
        ([2], False),  # critic names a wrong step
        ([None], None),  # unparsable critic
        ([], None),
        ([None, -1], True),  # unparsable samples are dropped
        ([-1, 0], True),  # tie: the label seen first
        ([0, -1], False),
        ([1, -1, -1], True),
        ([1, 1, -1], False),
    ],
)
def test_critic_verdict(labels: list[int | None], verdict: bool | None) -> None:
    assert critic_verdict(labels) is verdict


# --------------------------------------------------------------------------- scoring per k


def _sample(answer: str | None, correct: bool, verdict: bool | None) -> ScoredSample:
    return ScoredSample(f"Step 1: {answer}", [str(answer)], answer, correct, verdict=verdict)


def _record(pid: str, gold: str, rows: Sequence[tuple[str | None, bool | None]]) -> ProblemSamples:
    samples = [_sample(a, a == gold, v) for a, v in rows]
    rec = ProblemSamples(pid, "q", gold, samples)
    rec.classes = answer_classes([s.answer for s in samples], _exact)
    return rec


def _records() -> list[ProblemSamples]:
    return [
        # majority wrong (5), critic accepts only the correct 4 -> verified right, majority wrong
        _record("a", "4", [("5", False), ("4", True), ("5", False), ("5", None)]),
        # all correct; critic rejects everything -> fallback, still right
        _record("b", "1", [("1", False), ("1", False), ("1", False), ("1", False)]),
        # all wrong, no answers for two samples; critic accepts a wrong one
        _record("c", "9", [(None, None), ("3", True), (None, None), ("2", False)]),
    ]


def test_score_k_on_hand_made_records() -> None:
    recs = _records()
    k1 = score_k(recs, 1)
    # k=1: a: "5" wrong; b: "1" right; c: no answer -> wrong. Verified: a falls back to "5".
    assert (k1.pass_at_1, k1.majority, k1.verified, k1.pass_at_k) == (1 / 3, 1 / 3, 1 / 3, 1 / 3)
    assert k1.fallback_rate == 1.0
    k2 = score_k(recs, 2)
    # a: plain tie 5 vs 4 -> "5" (seen first) wrong; verified -> "4" right. c: verified "3" wrong.
    assert k2.majority == pytest.approx(1 / 3) and k2.verified == pytest.approx(2 / 3)
    assert k2.pass_at_1 == pytest.approx((0.5 + 1 + 0) / 3)
    assert k2.pass_at_k == pytest.approx(2 / 3) and k2.fallback_rate == pytest.approx(1 / 3)
    k4 = score_k(recs, 4)
    assert (k4.majority, k4.verified) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    assert k4.pass_at_1 == pytest.approx((0.25 + 1 + 0) / 3)


def test_score_k_rejects_k_beyond_samples_and_empty() -> None:
    with pytest.raises(ValueError, match="k=5"):
        score_k(_records(), 5)
    with pytest.raises(ValueError, match="no problems"):
        score_k([], 1)


def test_critic_stats() -> None:
    stats = voting.critic_stats(_records())
    assert stats["samples"] == 12
    assert stats["critic_accept_rate"] == pytest.approx(2 / 12)
    assert stats["critic_precision"] == pytest.approx(1 / 2)  # "4" right, "3" wrong
    assert stats["critic_recall"] == pytest.approx(1 / 5)  # 5 correct samples, 1 accepted
    assert stats["critic_unparsable_rate"] == pytest.approx(3 / 12)
    assert stats["no_answer_rate"] == pytest.approx(2 / 12)


def test_table_and_plot(tmp_path: Path) -> None:
    rows = [score_k(_records(), k) for k in (1, 2, 4)]
    table = voting.format_table(rows)
    assert table.count("\n") == 5 and "| 2 | 3 | 50.0 | 33.3 | 66.7 | 66.7 | 33.3 |" in table
    voting.plot_rows(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- config


def test_config_validation() -> None:
    assert VotingConfig(k=[4, 1, 2, 2]).k == [1, 2, 4]
    with pytest.raises(ValueError, match="k must"):
        VotingConfig(k=[0, 2])
    with pytest.raises(ValueError, match="critic_temperature"):
        VotingConfig(critiques_per_solution=3, critic_temperature=0.0)


def test_presets_load() -> None:
    from importlib import resources

    from deepcritic.config import load_config

    for preset in ("paper", "local", "tiny"):
        path = resources.files("deepcritic.configs").joinpath(f"voting.{preset}.yaml")
        cfg = load_config(VotingConfig, str(path))
        assert cfg.max_k >= 1 and cfg.critic.model


# --------------------------------------------------------------------------- run with scripted models


def scripted(script: Callable[[Prompt, int], list[str]]) -> ScriptedBackend:
    """Each prompt's ``n`` completions: ``script(prompt, n)``."""
    return ScriptedBackend(lambda prompt, params: script(prompt, params.n))


def batch_sizes(backend: ScriptedBackend) -> list[int]:
    return [len(prompts) for prompts, _ in backend.generate_calls]


def _generator(prompt: Prompt, n: int) -> list[str]:
    # "two plus two": three wrong "5" answers outvote one right "4"; the fourth is empty.
    if "two plus two" in prompt[1]["content"]:
        return [" 2+2=5. \\boxed{5}", " 2+2=4.\nStep 2: \\boxed{4}", " \\boxed{5}", ""][:n]
    return [" \\boxed{1}"] * n


def _critic(prompt: Prompt, n: int) -> list[str]:
    user = prompt[1]["content"]
    if "\\boxed{4}" in user:
        return ["**Critique of Step 1**\nok\n**Judgement**: \\boxed{1}\n\n**Answer**: \\boxed{-1}"]
    if "\\boxed{5}" in user:
        return ["**Answer**: \\boxed{1}"]
    return ["I cannot tell."]  # unparsable


def test_run_with_scripted_backends(tmp_path: Path, no_mlflow: None) -> None:
    probs = [Problem("p0", "What is two plus two?", "4"), Problem("p1", "One?", "1")]
    cfg = VotingConfig(k=[1, 2, 4], out=str(tmp_path / "vv"), tracking_uri="off")
    gen, critic = scripted(_generator), scripted(_critic)
    result = voting.run(cfg, problems=probs, backends={"generator": gen, "critic": critic})
    # 2 problems x 4 samples; the empty completion ("Step 1:" only) has no steps: 7 critiqued.
    assert batch_sizes(gen) == [2] and batch_sizes(critic) == [7]
    assert not gen.closed and not critic.closed  # given backends are the caller's
    by_k = {r.k: r for r in result.rows}
    # p1 is always right (critic unparsable -> fallback); p0 right only when verified.
    assert by_k[1].majority == 0.5 and by_k[1].verified == 0.5
    assert by_k[2].majority == 0.5 and by_k[2].verified == 1.0  # tie 5/4 -> "5"; critic -> "4"
    assert by_k[4].majority == 0.5 and by_k[4].verified == 1.0
    assert by_k[4].fallback_rate == 0.5 and by_k[4].pass_at_1 == pytest.approx((0.25 + 1) / 2)
    rows = Path(result.samples_path).read_text().splitlines()
    assert len(rows) == 8 and Path(result.plot_path).is_file()
    assert result.metrics()["verified_k4"] == 1.0 and result.critic["samples"] == 8


def test_several_critiques_per_solution_vote_in_strict_mode() -> None:
    """With critiques_per_solution > 1 and require_marker, critiques without **Answer**: leave the
    vote (two unmarked "no error" boxes would otherwise outvote the one marked "step 1")."""
    outs = ["**Answer**: \\boxed{1}", "looks fine \\boxed{-1}", "all good \\boxed{-1}"]
    critic = scripted(lambda prompt, n: outs[:n])
    rec = ProblemSamples("p", "q", "4", [_sample("4", True, None)])
    cfg = VotingConfig(critiques_per_solution=3, critic_temperature=1.0)
    voting.critique_samples(critic, [rec], cfg)
    assert rec.samples[0].labels == [0, None, None] and rec.samples[0].verdict is False
    lenient = VotingConfig(critiques_per_solution=3, critic_temperature=1.0, require_marker=False)
    voting.critique_samples(critic, [rec], lenient)
    assert rec.samples[0].labels == [0, -1, -1] and rec.samples[0].verdict is True
