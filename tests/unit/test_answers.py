"""Final-answer extraction and math-verify grading."""

from __future__ import annotations

import pytest

from deepcritic.answers import answers_match, extract_final_answer, is_correct_solution


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("so \\boxed{12} and then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("Janet makes 18.\n#### 18", "18"),
        ("Thus the answer is 42.", "42"),
        ("no answer here", None),
    ],
)
def test_extract(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


def test_math_verify_equivalence() -> None:
    assert answers_match("\\frac{1}{2}", "0.5")
    assert answers_match("18", "18.0")
    assert not answers_match("17", "18")
    assert not answers_match(None, "1") and not answers_match("  ", "1")
    assert is_correct_solution("Step 1: 9*2 = 18\nStep 2: \\boxed{18}", "18")
