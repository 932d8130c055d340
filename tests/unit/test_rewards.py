"""The GRPO reward: the one grader's match, TRL's completion shapes, the optional format term."""

from __future__ import annotations

import pytest

from deepcritic.grader import render_answer
from deepcritic.rewards import (
    ACCURACY_METRIC,
    UNPARSABLE_METRIC,
    completion_text,
    first_error_reward,
    make_first_error_reward,
)


def test_match_and_mismatch_plain_strings() -> None:
    texts = [render_answer(3), render_answer(-1), render_answer(2), "no verdict"]
    # labels are 0-based: step 3 -> label 2
    assert first_error_reward(texts, [2, -1, 2, -1]) == [1.0, 1.0, 0.0, 0.0]


def test_conversational_completions() -> None:
    comps = [
        [{"role": "assistant", "content": "ok\n" + render_answer(-1)}],
        [{"role": "assistant", "content": render_answer(1)}],
    ]
    assert first_error_reward(comps, [-1, -1]) == [1.0, 0.0]
    assert completion_text({"role": "assistant", "content": "x"}) == "x"
    with pytest.raises(TypeError):
        completion_text(3)


def test_format_term_off_by_default_and_on_when_set() -> None:
    texts = ["garbage", r"**Answer**: \boxed{abc}", render_answer(2)]
    assert first_error_reward(texts, [1, 1, 0]) == [0.0, 0.0, 0.0]
    assert first_error_reward(texts, [1, 1, 1], format_penalty=-0.5) == [-0.5, -0.5, 1.0]
    fn = make_first_error_reward(-0.25)
    assert fn.__name__ == "first_error"
    assert fn(completions=texts, label=[1, 1, 1], prompts=["p"] * 3, trainer_state=None) == [
        -0.25,
        -0.25,
        1.0,
    ]


def test_logs_unparsable_and_match_fractions() -> None:
    logged: dict[str, float] = {}
    first_error_reward(
        ["x", render_answer(1), render_answer(2), "y"], [0, 0, 0, 0], log_metric=logged.__setitem__
    )
    assert logged == {UNPARSABLE_METRIC: 0.5, ACCURACY_METRIC: 0.25}


def test_strict_reward_truncated_step_verdict_earns_nothing() -> None:
    """A critique of a correct solution (label -1), cut after judging step 2 wrong: the official
    fallback would read its last box ``\\boxed{-1}`` as "no error" and pay 1.0."""
    truncated = (
        "**Critique of Step 1**\nok\n\n**Judgement**: \\boxed{1}\n\n"
        "**Critique of Step 2**\n7 * 2 is 14, not 15.\n\n**Judgement**: \\boxed{-1}"
    )
    assert first_error_reward([truncated], [-1]) == [0.0]
    assert first_error_reward([truncated], [-1], parser="lenient") == [1.0]  # the ablation
    no_marker = "The first error is in step 2, so \\boxed{2}"
    assert first_error_reward([no_marker], [1]) == [0.0]
    assert first_error_reward([no_marker], [1], format_penalty=-0.5) == [-0.5]
    assert make_first_error_reward()(completions=[truncated], label=[-1]) == [0.0]
    assert make_first_error_reward(parser="lenient")(completions=[truncated], label=[-1]) == [1.0]


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="labels"):
        first_error_reward(["a", "b"], [1])


def test_reward_parsers_read_the_reference_format() -> None:
    """The reference template asks only for a box: the official reading pays it, strict does not;
    an unknown parser is a config error naming the field."""
    import pytest

    from deepcritic.stages.grpo_config import CriticGRPOConfig

    boxed_only = "Step 2 divides by zero, so the earliest error is \\boxed{2}"
    assert first_error_reward([boxed_only], [1], parser="official") == [1.0]
    assert first_error_reward([boxed_only], [1], parser="strict") == [0.0]
    last_box = "**Answer**: \\boxed{3} (and later) \\boxed{2}"
    assert first_error_reward([last_box] * 2, [2, 1], parser="strict") == [1.0, 0.0]
    assert first_error_reward([last_box] * 2, [2, 1], parser="official") == [0.0, 1.0]
    assert make_first_error_reward(parser="official")(completions=[boxed_only], label=[1]) == [1.0]
    with pytest.raises(ValueError, match="reward_parser"):
        first_error_reward([boxed_only], [1], parser="loose")
    with pytest.raises(ValueError, match="reward_parser"):
        CriticGRPOConfig(reward_parser="loose")
