r"""Final answers of generated solutions, graded with math-verify (the field's standard checker).

Used by Monte Carlo annotation, verified voting and refinement, so all of them grade alike.
math-verify's own timeout uses ``signal.alarm``, which only works in the main thread; off the main
thread we call it without its timeout.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

from deepcritic.grader import find_boxes

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.IGNORECASE | re.MULTILINE)


def extract_final_answer(text: str) -> str | None:
    r"""The last ``\boxed{}`` content; else a GSM8K ``#### x`` line; else "the answer is x"."""
    boxes = find_boxes(text)
    if boxes:
        return boxes[-1].content.strip()
    for pattern in (_GSM8K_FINAL, _ANSWER_IS):
        found = pattern.findall(text)
        if found:
            return str(found[-1]).strip()
    return None


def _timeout() -> int | None:
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def _parse(answer: str) -> Any:
    from math_verify import parse

    wrapped = answer if "$" in answer or "\\boxed" in answer else f"${answer}$"
    return parse(wrapped, parsing_timeout=_timeout())  # type: ignore[arg-type]


def answers_match(predicted: str | None, gold: str) -> bool:
    """Whether a predicted final answer equals the gold answer (math-verify semantics)."""
    if predicted is None or not predicted.strip():
        return False
    from math_verify import verify

    gold_parsed, pred_parsed = _parse(gold.strip()), _parse(predicted.strip())
    if not gold_parsed or not pred_parsed:
        return predicted.strip() == gold.strip()
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=_timeout()))


def is_correct_solution(text: str, gold: str) -> bool:
    """Grade a whole generated solution against the gold answer."""
    return answers_match(extract_final_answer(text), gold)
