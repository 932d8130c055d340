"""The one grader: every parsing rule, with examples and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepcritic.grader import (
    ParseStatus,
    find_boxes,
    is_match,
    judge,
    label_to_step,
    parse_critique,
    read_box_int,
    render_answer,
    render_critique,
    step_to_label,
)


def test_answer_marker_takes_first_box_after_last_marker() -> None:
    text = (
        "**Critique of Step 1**\nfine\n**Judgement**: \\boxed{1}\n"
        "**Critique of Step 2**\nwrong\n**Judgement**: \\boxed{-1}\n"
        "**Answer**: \\boxed{2} and later \\boxed{7}"
    )
    j = parse_critique(text)
    assert j.step == 2 and j.label == 1 and j.status is ParseStatus.OK
    assert not j.from_step_verdict
    assert [v.correct for v in j.verdicts] == [True, False]
    assert [v.step for v in j.verdicts] == [1, 2]


def test_last_marker_wins_and_plain_answer_marker() -> None:
    text = "Answer: \\boxed{3}\nOn reflection...\nAnswer: \\boxed{-1}"
    assert parse_critique(text).step == -1


def test_marker_without_box_is_no_box_even_if_boxes_before() -> None:
    text = "**Judgement**: \\boxed{-1}\n**Answer**: I am not sure"
    j = parse_critique(text)
    assert j.step is None and j.status is ParseStatus.NO_BOX


def test_no_marker_uses_last_box_official_behaviour() -> None:
    j = parse_critique("first \\boxed{2} then \\boxed{4}")
    assert j.step == 4 and j.status is ParseStatus.NO_ANSWER_MARKER and j.label == 3


def test_truncated_critique_last_box_is_step_verdict_is_flagged() -> None:
    text = "**Critique of Step 1**\nok\n**Judgement**: \\boxed{1}\n**Critique of Step 2**\nhm"
    j = parse_critique(text)
    assert j.step == 1 and j.status is ParseStatus.NO_ANSWER_MARKER and j.from_step_verdict


def test_step_verdict_never_final_when_marker_exists() -> None:
    text = "**Judgement**: \\boxed{-1}\n**Answer**: \\boxed{1}"
    assert parse_critique(text).step == 1


# A truncated critique of a correct 3-step solution: step 2 judged wrong, cut before the answer.
TRUNCATED_WRONG_STEP = (
    "**Critique of Step 1**\nThe sum 3 + 4 = 7 is right.\n\n**Judgement**: \\boxed{1}\n\n"
    "**Critique of Step 2**\n7 * 2 should be 14, not 15.\n\n**Judgement**: \\boxed{-1}"
)


def test_strict_mode_requires_the_bold_marker() -> None:
    official = parse_critique(TRUNCATED_WRONG_STEP)
    assert official.step == -1 and official.from_step_verdict  # official fallback reads "no error"
    strict = parse_critique(TRUNCATED_WRONG_STEP, strict=True)
    assert strict.step is None and strict.status is ParseStatus.NO_ANSWER_MARKER
    assert [v.correct for v in strict.verdicts] == [True, False]  # the sections are still read
    assert judge("so the answer is \\boxed{2}", strict=True) is None
    assert judge("Answer: \\boxed{2}", strict=True) is None  # the plain marker is not the format
    assert judge("Answer: \\boxed{2}") == 1
    assert judge("**Answer**: \\boxed{2}", strict=True) == 1
    assert judge("**Answer:** \\boxed{-1}", strict=True) == -1


def test_strict_mode_never_takes_a_step_verdict_after_the_marker() -> None:
    # the marker appears, then a new step section starts and is cut after its verdict box
    text = "**Answer**: let me look again.\n**Critique of Step 3**\nbad\n**Judgement**: \\boxed{-1}"
    assert parse_critique(text).step == -1  # official: first box after the last marker
    j = parse_critique(text, strict=True)
    assert j.step is None and j.status is ParseStatus.STEP_VERDICT and j.from_step_verdict
    full = TRUNCATED_WRONG_STEP + "\n\n**Answer**: \\boxed{2}"
    assert judge(full, strict=True) == 1 == judge(full)


@given(st.lists(st.tuples(st.text(alphabet="abc xyz.", max_size=20), st.booleans()), min_size=1))
def test_strict_and_official_agree_on_rendered_critiques(sections: list[tuple[str, bool]]) -> None:
    text = render_critique(sections)
    assert judge(text, strict=True) == judge(text) is not None


def test_no_box_at_all() -> None:
    j = parse_critique("Everything looks right to me.")
    assert j.step is None and j.status is ParseStatus.NO_BOX and j.label is None


@pytest.mark.parametrize(
    ("content", "value"),
    [
        ("3", 3),
        (" -1 ", -1),
        ("$2$", 2),
        ("\\text{3}", 3),
        ("\\mathrm{ 4 }", 4),
        ("Step 5", 5),
        ("\\text{Step 6}", 6),
        ("step7", 7),
        ("+8", 8),
        ("x", None),
        ("3.5", None),
        ("", None),
        ("\\frac{1}{2}", None),
    ],
)
def test_read_box_int(content: str, value: int | None) -> None:
    assert read_box_int(content) == value


def test_balanced_braces_and_not_integer() -> None:
    assert [b.content for b in find_boxes("\\boxed{\\text{3}} \\boxed{a{b}c}")] == [
        "\\text{3}",
        "a{b}c",
    ]
    j = parse_critique("**Answer**: \\boxed{\\frac{1}{2}}")
    assert j.step is None and j.status is ParseStatus.NOT_INTEGER and j.raw_box == "\\frac{1}{2}"


def test_unclosed_box_is_ignored() -> None:
    j = parse_critique("**Answer**: \\boxed{3")
    assert j.status is ParseStatus.NO_BOX


def test_index_conversion_at_the_edge() -> None:
    assert step_to_label(1) == 0 and step_to_label(-1) == -1 and step_to_label(None) is None
    assert step_to_label(0) is None and step_to_label(-3) is None
    assert label_to_step(0) == 1 and label_to_step(-1) == -1
    with pytest.raises(ValueError):
        label_to_step(-2)


def test_is_match() -> None:
    assert is_match(2, 2) and is_match(-1, -1)
    assert not is_match(None, -1) and not is_match(1, 2)


@given(st.one_of(st.just(-1), st.integers(min_value=1, max_value=10_000)))
def test_render_then_parse_roundtrip(step: int) -> None:
    j = parse_critique(render_answer(step))
    assert j.step == step and j.status is ParseStatus.OK


@given(st.lists(st.tuples(st.text(max_size=40), st.booleans()), min_size=1, max_size=8))
def test_rendered_critique_parses_to_first_wrong_step(sections: list[tuple[str, bool]]) -> None:
    # Critique text is free-form; keep it free of markup that would change its meaning.
    clean = [
        (t.replace("\\", "").replace("*", "").replace("Answer", "") or "ok", ok)
        for t, ok in sections
    ]
    j = parse_critique(render_critique(clean))
    expected = next((i for i, (_, ok) in enumerate(clean) if not ok), -1)
    assert j.status is ParseStatus.OK and j.label == expected
    assert [v.correct for v in j.verdicts] == [ok for _, ok in clean]


@given(
    st.integers(min_value=-1, max_value=50).filter(lambda x: x != 0),
    st.sampled_from(["$", " ", ""]),
)
def test_wrappers_roundtrip(step: int, pad: str) -> None:
    text = f"**Answer**: \\boxed{{{pad}\\text{{Step {step}}}{pad}}}"
    assert parse_critique(text).step == step
