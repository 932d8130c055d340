"""Prompt files and step numbering."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deepcritic.prompting import (
    critique_messages,
    load_prompt,
    number_steps,
    render_template,
    solver_messages,
    split_steps,
    strip_step_prefix,
)


def test_steps_are_numbered_once() -> None:
    text = number_steps(["Step 1: a = 1", "**Step 2:** b = 2", "c = {3}", "step 9. d"])
    assert text.splitlines()[::2] == [
        "Step 1: a = 1",
        "Step 2: b = 2",
        "Step 3: c = {3}",
        "Step 4: d",
    ]
    assert "Step 1: Step" not in text


def test_critique_prompt_is_a_package_file_with_latex_intact() -> None:
    msgs = critique_messages("Find $\\frac{1}{2}$ of {x}.", ["x = {1}", "done"])
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert "Find $\\frac{1}{2}$ of {x}." in user and "Step 2: done" in user
    assert "{{" not in user and "**Answer**" in load_prompt("critique_user.md")


def test_render_template_missing_placeholder() -> None:
    try:
        render_template("{{a}} {{b}}", a="1")
    except KeyError as e:
        assert "b" in str(e)
    else:
        raise AssertionError("missing placeholder must raise")


def test_solver_prompt_prefills_step_one_and_split() -> None:
    assert solver_messages("2+2?")[-1] == {"role": "assistant", "content": "Step 1:"}
    assert split_steps(" 2+2=4\nStep 2: so \\boxed{4}") == ["2+2=4", "so \\boxed{4}"]
    assert split_steps("") == []


@given(
    st.lists(
        st.text(
            alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30
        ).filter(lambda s: s.strip()),
        min_size=1,
        max_size=6,
    )
)
def test_number_then_split_roundtrip(steps: list[str]) -> None:
    clean = [" ".join(s.split()).replace("Step", "S").replace("step", "s") or "x" for s in steps]
    clean = [strip_step_prefix(c) or "x" for c in clean]
    assert split_steps(number_steps(clean)) == [c.strip() for c in clean]
