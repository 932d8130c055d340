r"""Arithmetic written in a step: find ``<expression> = <value>`` and recompute it.

Used by the calculator stand-in teacher (:mod:`deepcritic.stages.seed.calculator`) and by the GSM8K
perturbation source (:mod:`deepcritic.data.perturb`, to pick perturbations a reader can check).
Only + - * / and parentheses are evaluated (an ``ast`` walk, never ``eval``).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_NUM = r"\$?\d[\d,]*(?:\.\d+)?"
_OP = r"(?:\s*[-+*/×÷]\s*|\s+x\s+)"
_OPERAND = rf"\(*\s*{_NUM}\s*\)*"
# "<expression with at least one operator> = <number>", as GSM8K reference steps write it
_EQUATION = re.compile(rf"(?<![\w.])({_OPERAND}(?:{_OP}{_OPERAND})+)\s*=\s*(-?{_NUM})(?![\d%/])")
_BINOPS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


@dataclass(frozen=True)
class Equation:
    """One ``expression = written`` found in a step, with the recomputed value."""

    expression: str  # as the step writes it, e.g. ``0.2 x 50``
    written: str  # the value the step writes, e.g. ``$10``
    value: float  # the expression recomputed

    @property
    def holds(self) -> bool:
        return values_match(self.value, self.written)


def number(text: str) -> float:
    return float(text.replace("$", "").replace(",", ""))


def normalize(expression: str) -> str:
    """``$0.2 x 50`` -> ``0.2*50`` (operators as Python writes them, no units or commas)."""
    text = re.sub(r"\s+x\s+", "*", expression).replace("×", "*").replace("÷", "/")
    return re.sub(r"\s+", "", text.replace("$", "").replace(",", ""))


def evaluate(expression: str) -> float | None:
    """The value of an arithmetic expression (+ - * / and parentheses only); None if not one."""
    try:
        tree = ast.parse(normalize(expression), mode="eval")
    except SyntaxError:
        return None

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(ast.dump(node))

    try:
        return walk(tree.body)
    except (ValueError, ZeroDivisionError):
        return None


def values_match(value: float, written: str) -> bool:
    """Equal, allowing the written value to be rounded to the decimals it shows."""
    target = number(written)
    decimals = len(written.split(".")[1]) if "." in written else 0
    return abs(value - target) < 1e-9 * max(1.0, abs(target)) or (
        decimals > 0 and round(value, decimals) == target
    )


def find_equations(step: str) -> list[Equation]:
    """Every checkable ``expression = value`` in a step's visible text."""
    found = []
    for m in _EQUATION.finditer(step):
        before = step[: m.start()].rstrip()
        if before.endswith(("*", "/", "+", "-", "×", "÷", " x")):
            continue  # the expression starts earlier, past words (``60 students x 2/3``)
        value = evaluate(m.group(1))
        if value is not None:
            found.append(Equation(m.group(1).strip(), m.group(2).strip(), value))
    return found


def fmt(value: float) -> str:
    """``24.0`` -> ``24``; ``0.333333`` -> ``0.3333``."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}".rstrip("0").rstrip(".")
