"""Prompt files (package data) and rendering of numbered steps.

Steps are numbered ``Step 1:`` .. ``Step n:`` (1-based) whatever the source; a step whose text
already starts with ``Step k:`` is stripped first, so it is never numbered twice.

User text (problems, steps) is *escaped*, not rejected: chat control tokens written inside it
(``<|im_end|>``, ``<|start_header_id|>``, ``[INST]``, ``<end_of_turn>``, the served tokenizer's
own special tokens ...) get a zero-width space (U+200B) after their first character, so the
tokenizer reads them as ordinary text tokens and a solution's author cannot close the user turn and
forge an assistant turn. The text still reads the same to a human and to the critic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources

from deepcritic.generation.base import Prompt

_STEP_PREFIX = re.compile(
    r"^\s*(?:\*\*)?\s*Step\s*\d+\s*(?:\*\*)?\s*[:.)]\s*(?:\*\*)?\s*", re.IGNORECASE
)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_STEP_SPLIT = re.compile(r"(?:^|\n)\s*(?:\*\*)?\s*Step\s*\d+\s*(?:\*\*)?\s*[:.)]", re.IGNORECASE)
SOLVER_PREFILL = "Step 1:"
ZERO_WIDTH_SPACE = "\u200b"
# Control tokens of the common chat templates: ChatML / Llama 3 / Phi ``<|...|>`` (and DeepSeek's
# full-width ``<｜...｜>``), Llama 2 / Mistral ``[INST]`` ``<<SYS>>`` ``<s>``, Gemma ``<start_of_turn>``.
_CONTROL_TOKEN = re.compile(
    r"<\|[^<>|\s]{0,64}\|>|<｜[^<>｜\s]{0,64}｜>|\[/?INST\]|<</?SYS>>|</?s>"
    r"|<(?:start|end)_of_turn>"
)


@cache
def load_prompt(name: str) -> str:
    """Read ``deepcritic/prompts/<name>`` (e.g. ``critique_user.md``) from the installed package."""
    return resources.files("deepcritic.prompts").joinpath(name).read_text(encoding="utf-8")


def render_template(template: str, **fields: str) -> str:
    """Replace ``{{name}}`` placeholders; LaTeX braces in the values are left alone."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in fields:
            raise KeyError(f"prompt placeholder {{{{{m.group(1)}}}}} has no value")
        return fields[m.group(1)]

    return _PLACEHOLDER.sub(sub, template)


def strip_step_prefix(text: str) -> str:
    """``"Step 3: x = 2"`` -> ``"x = 2"`` (also ``**Step 3:**``, ``Step 3.``)."""
    return _STEP_PREFIX.sub("", text, count=1)


def number_steps(steps: Sequence[str]) -> str:
    """Render steps as ``Step 1: ...`` lines separated by blank lines."""
    return "\n\n".join(f"Step {i}: {strip_step_prefix(s).strip()}" for i, s in enumerate(steps, 1))


def escape_control_tokens(text: str, special_tokens: Iterable[str] = ()) -> str:
    """Break every chat control token in ``text`` (the generic patterns above plus
    ``special_tokens``, e.g. the served tokenizer's) with a zero-width space after its first
    character, so no tokenizer reads it as a special token. Idempotent."""
    extra = sorted({t for t in special_tokens if len(t) > 1}, key=len, reverse=True)
    pattern = _CONTROL_TOKEN
    if extra:
        alternatives = "|".join(re.escape(t) for t in extra)
        pattern = re.compile(f"{_CONTROL_TOKEN.pattern}|{alternatives}")
    for _ in range(8):  # breaking one token cannot form another, but stay safe on overlaps
        escaped = pattern.sub(lambda m: m[0][0] + ZERO_WIDTH_SPACE + m[0][1:], text)
        if escaped == text:
            break
        text = escaped
    return text


def critique_messages(
    problem: str, steps: Sequence[str], special_tokens: Iterable[str] = ()
) -> Prompt:
    """The critique prompt used by evaluation, seed SFT data, GRPO and the server alike; control
    tokens in the problem and steps are escaped (:func:`escape_control_tokens`)."""
    tokens = tuple(special_tokens)
    user = render_template(
        load_prompt("critique_user.md"),
        problem=escape_control_tokens(problem.strip(), tokens),
        steps=escape_control_tokens(number_steps(steps), tokens),
    )
    return [
        {"role": "system", "content": load_prompt("critique_system.md").strip()},
        {"role": "user", "content": user},
    ]


def solver_messages(problem: str, *, prefill: bool = True) -> Prompt:
    """Ask a generator for a solution in numbered steps; the assistant turn starts with ``Step 1:``."""
    messages: Prompt = [
        {"role": "system", "content": load_prompt("solver_system.md").strip()},
        {
            "role": "user",
            "content": render_template(load_prompt("solver_user.md"), problem=problem),
        },
    ]
    if prefill:
        messages.append({"role": "assistant", "content": SOLVER_PREFILL})
    return messages


def split_steps(text: str) -> list[str]:
    """Split a generated solution into steps on ``Step k:`` headers (paragraphs if there are none).

    ``text`` may start right after a ``Step 1:`` prefill. Empty steps are dropped.
    """
    body = text if _STEP_SPLIT.match(text) else f"Step 1: {text}" if text.strip() else ""
    parts = _STEP_SPLIT.split(body)
    steps = [p.strip() for p in parts if p.strip()]
    if len(steps) <= 1 and "\n\n" in text:
        steps = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return steps
