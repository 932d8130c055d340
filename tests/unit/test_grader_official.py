"""``parser: official`` equals the authors' ProcessBench ``eval.py`` on generated critiques.

The reference functions are taken from ``../shared/reference/deepcritic/ProcessBench/code/eval.py``
by AST (the script imports vllm/torch at module top): ``extract_answer``, ``prepare_input_boxed``
and the two prediction branches of ``main()`` (single critique and Maj@k), executed as written.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcritic import grader
from deepcritic.scoring import vote_outputs
from support.paths import SHARED

EVAL_PY = SHARED / "reference" / "deepcritic" / "ProcessBench" / "code" / "eval.py"
pytestmark = pytest.mark.skipif(not EVAL_PY.is_file(), reason=f"{EVAL_PY} not present")


def _reference() -> dict[str, Any]:
    tree = ast.parse(EVAL_PY.read_text())
    ns: dict[str, Any] = {"Counter": Counter}
    exec("import re", ns)
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    for fn in funcs:
        if fn.name in ("extract_answer", "prepare_input_boxed"):
            exec(compile(ast.Module([fn], []), str(EVAL_PY), "exec"), ns)
    main = next(fn for fn in funcs if fn.name == "main")
    branch = next(
        n
        for n in ast.walk(main)
        if isinstance(n, ast.If)
        and ast.unparse(n.test) == "not args.use_voting"
        and any("extract_answer" in ast.unparse(s) for s in n.body)
    )
    ns["single_code"] = compile(ast.Module(branch.body, []), str(EVAL_PY), "exec")
    ns["vote_code"] = compile(ast.Module(branch.orelse, []), str(EVAL_PY), "exec")
    return ns


REF = _reference() if EVAL_PY.is_file() else {}


def ref_predict(texts: list[str], *, voting: bool, model_path: str) -> Any:
    """Run the script's prediction branch on fake vLLM outputs; return its ``pred``."""
    outputs = [SimpleNamespace(text=t) for t in texts]
    env = {
        **REF,
        "generations": [SimpleNamespace(outputs=outputs)],
        "i": 0,
        "args": SimpleNamespace(model_path=model_path),
    }
    exec(env["vote_code"] if voting else env["single_code"], env)
    return env["pred"]


def ref_match(pred: Any, label: int) -> bool:
    return bool(pred == label) if label == -1 else bool(pred == label + 1)


_PIECES = [
    "\\boxed{",
    "}",
    "{",
    "\\boxed{3}",
    "\\boxed{-1}",
    "\\boxed{ 2 }",
    "\\boxed{+4}",
    "\\boxed{$3$}",
    "\\boxed{\\text{Step 3}}",
    "\\boxed{Step 2}",
    "\\boxed{x}",
    "\\boxed{1_0}",
    "\\boxed{}",
    "\\boxed {5}",
    "**Answer**:",
    "**Answer**: ",
    "Answer:",
    "The final Answer: ",
    "**Critique of Step 1**",
    "**Judgement**: The correctness of Step 1 is: ",
    "$",
    "\\text{",
    "Step ",
    " ",
    "\n",
    "0",
    "1",
    "-",
    "7",
    "12",
]
outputs = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), max_size=14).map(
    "".join
)
labels = st.integers(min_value=-1, max_value=12)


@settings(max_examples=600, deadline=None)
@given(outputs, labels)
def test_single_critique_equals_eval_py(text: str, label: int) -> None:
    ref = ref_predict([text], voting=False, model_path="x/DeepCritic-7B-RL-PRM800K")
    assert grader.official_step(text) == ref
    assert grader.official_extract_answer(text) == REF["extract_answer"](text)
    assert grader.is_match(grader.official_label([text]), label) == ref_match(ref, label)


@settings(max_examples=400, deadline=None)
@given(st.lists(outputs, min_size=0, max_size=8), labels, st.booleans())
def test_majority_vote_equals_eval_py(texts: list[str], label: int, deepcritic: bool) -> None:
    model = "x/DeepCritic-7B-SFT" if deepcritic else "Qwen/Qwen2.5-7B-Instruct"
    ref = ref_predict(texts, voting=True, model_path=model)
    assert grader.official_vote_step(texts, require_marker=deepcritic) == ref
    if len(texts) != 1:
        got = grader.official_label(texts, require_marker=deepcritic)
        assert grader.is_match(got, label) == ref_match(ref, label)


steps_st = st.lists(
    st.one_of(
        st.sampled_from(["Step 1: a", "Step 2:  b", "see Step 3", "step 4", "Step", " x ", "\n"]),
        st.text(max_size=12),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(steps_st)
def test_step_numbering_equals_eval_py(steps: list[str]) -> None:
    msgs = REF["prepare_input_boxed"]("{tagged_response}", {"problem": "p", "steps": steps})
    assert grader.official_tagged_response(steps) == msgs[0]["content"]


@pytest.mark.parametrize(
    ("texts", "official", "strict"),
    [  # the differences reproduced in issue 23 (official -> project)
        (["\\boxed{\\text{Step 3}}"], None, 2),
        (["\\boxed{$3$}"], None, 2),
        (["**Answer**: \\boxed{3} ... \\boxed{2}"], 1, 2),
        (["The final Answer: \\boxed{12} ... \\boxed{-1}"], -1, 11),
        (["**Answer**: \\boxed{x}"] * 3 + ["**Answer**: \\boxed{2}"] * 2, None, 1),
    ],
)
def test_issue_examples(texts: list[str], official: int | None, strict: int | None) -> None:
    assert grader.official_label(texts) == official
    assert vote_outputs(texts) == strict


def test_reference_file_is_read() -> None:
    assert isinstance(REF["extract_answer"]("\\boxed{3}"), str)
    assert ref_predict(["\\boxed{3}"], voting=False, model_path=str(Path("m"))) == 3


# Maj@k where ties and dropped samples are the rule, not the exception: a few box strings that
# int() alike but Counter tells apart (" 2 " strips to "2", "+2" does not), samples without the
# marker or without a box, and an unreadable winner.
_VOTES = [
    "**Answer**: \\boxed{2}",
    "\\boxed{2}",
    "**Answer**: \\boxed{ 2 }",
    "**Answer**: \\boxed{+2}",
    "**Answer**: \\boxed{-1}",
    "\\boxed{-1}",
    "**Answer**: \\boxed{3}",
    "**Answer**: \\boxed{x}",
    "**Answer**: no box",
    "no marker, no box",
    "\\boxed{3} then **Answer**:",
]
tied = st.lists(st.sampled_from(_VOTES), min_size=0, max_size=8)


@settings(max_examples=500, deadline=None)
@given(tied, labels, st.booleans())
def test_majority_vote_ties_and_drops_equal_eval_py(
    texts: list[str], label: int, deepcritic: bool
) -> None:
    from deepcritic.scoring import read_outputs

    model = "x/DeepCritic-7B-RL-PRM800K" if deepcritic else "Qwen/Qwen2.5-7B-Instruct"
    ref = ref_predict(texts, voting=True, model_path=model)
    assert grader.official_vote_step(texts, require_marker=deepcritic) == ref
    got = read_outputs(texts, parser="official", require_marker=deepcritic)
    assert got == grader.step_to_label(ref)
    assert grader.is_match(got, label) == ref_match(ref, label)


@pytest.mark.parametrize(
    ("texts", "deepcritic", "expected"),
    [
        (["\\boxed{3}", "\\boxed{+2}", "\\boxed{2}"], False, 3),  # 1-1-1 tie: first seen wins
        (["\\boxed{+2}", "\\boxed{3}", "\\boxed{3}"], False, 3),
        (["\\boxed{x}", "\\boxed{x}", "\\boxed{2}"], False, None),  # the winner is not an int
        (["\\boxed{2}", "**Answer**: \\boxed{3}"], True, 3),  # no marker: not counted
        (["**Answer**: none", "\\boxed{2}"], True, None),  # no box among the kept
        ([], True, None),
    ],
)
def test_vote_examples(texts: list[str], deepcritic: bool, expected: int | None) -> None:
    model = "x/DeepCritic-7B-SFT" if deepcritic else "m"
    assert ref_predict(texts, voting=True, model_path=model) == expected
    assert grader.official_vote_step(texts, require_marker=deepcritic) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(outputs, st.sampled_from(_VOTES)))
def test_single_output_through_scoring_equals_eval_py(text: str) -> None:
    from deepcritic.scoring import read_output

    ref = ref_predict([text], voting=False, model_path="x/DeepCritic-7B-RL-PRM800K")
    assert read_output(text, parser="official") == grader.step_to_label(ref)


@settings(max_examples=400, deadline=None)
@given(outputs, labels)
def test_official_reward_pays_what_eval_py_counts_as_a_match(text: str, label: int) -> None:
    """GRPO with ``reward_parser: official``: 1.0 exactly when eval.py would count the critique as
    a match for this label (``pred == label + 1``, or -1 for a correct solution)."""
    from deepcritic.rewards import first_error_reward

    ref = ref_predict([text], voting=False, model_path="x/DeepCritic-7B-RL-PRM800K")
    (reward,) = first_error_reward([text], [label], parser="official")
    assert reward == (1.0 if ref_match(ref, label) else 0.0)
    (penalised,) = first_error_reward([text], [label], parser="official", format_penalty=-0.5)
    assert penalised == reward + (-0.5 if ref is None else 0.0)
