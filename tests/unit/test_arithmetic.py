"""Arithmetic written in a step: found, recomputed (never eval'd), compared with rounding."""

from __future__ import annotations

import pytest

from deepcritic.arithmetic import evaluate, find_equations, fmt, normalize, values_match


def test_finds_gsm8k_style_equations_with_units_and_operators() -> None:
    eqs = find_equations("Working 50 minutes, she earned 0.2 x 50 = $10. Then $5 + $10 = $15.")
    assert [(e.expression, e.written, e.value) for e in eqs] == [
        ("0.2 x 50", "$10", 10.0),
        ("$5 + $10", "$15", 15.0),
    ]
    assert all(e.holds for e in eqs)


def test_a_wrong_value_does_not_hold() -> None:
    (eq,) = find_equations("Natalia sold 48+24 = 82 clips altogether.")
    assert eq.value == 72 and not eq.holds


@pytest.mark.parametrize(
    "step",
    [
        "There are 60 students x 2/3 = 40 students.",  # starts past a word: not checkable
        "So 1/2 * 1/2 = 1/4 of it is full.",  # a fraction on the right
        "Let W be the number of episodes.",
        "He scored 68 points.",
    ],
)
def test_partial_or_missing_expressions_are_not_read(step: str) -> None:
    assert find_equations(step) == []


def test_evaluate_is_arithmetic_only() -> None:
    assert evaluate("(3 + 4) * 2 - 10 / 4") == 11.5
    assert evaluate("__import__('os')") is None
    assert evaluate("2 ** 10") is None  # only + - * /
    assert evaluate("5 / 0") is None
    assert normalize("$2,000 x 10") == "2000*10"


def test_rounded_written_values_match_to_their_decimals() -> None:
    assert values_match(1 / 3, "0.33") and values_match(12 / 60, "0.2")
    assert values_match(1 / 3, "0.3333333") and not values_match(1 / 3, "0.34")
    assert not values_match(24.0, "25") and values_match(24.0, "24")
    assert fmt(24.0) == "24" and fmt(1 / 3) == "0.3333"
