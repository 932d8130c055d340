r"""The one grader: parse a critic's ``\boxed{k}`` judgment and decide whether it matches a label.

Every consumer (seed filtering, the GRPO reward, benchmark scoring, voting, the server) calls
:func:`parse_critique` and :func:`is_match`; nothing else reads boxes.

Index convention: the critic writes 1-based step numbers (``\boxed{3}`` = third step is the first
wrong one, ``\boxed{-1}`` = all steps right). Labels inside the package are 0-based with -1 for
"no error". :func:`step_to_label` / :func:`label_to_step` are the only conversions.

The parsing rule (see docs/stages.md, "The critique format and the one grader"):

1. If the text has an answer marker (``**Answer**:`` or ``Answer:``), the judgment is the first
   ``\boxed{...}`` after the last marker. Otherwise it is the last ``\boxed{...}`` in the text (the
   official ProcessBench behaviour) and the status is ``NO_ANSWER_MARKER``.
2. Box content is read with balanced braces; spaces, ``$``, ``\text{}``/``\mathrm{}`` wrappers and a
   leading ``Step`` are stripped; what remains must be an integer, else the prediction is ``None``.
3. A per-step verdict box is never the final judgment when a marker exists. A truncated critique with
   no marker whose last box is a per-step verdict is still read by rule 1, with
   ``from_step_verdict=True``.

Two modes of that rule, shared by every consumer (and a third reading, ``parser: official``, at the
end of this module: the authors' ``eval.py`` reproduced exactly, for scoring released checkpoints
as the paper did):

* **lenient** (``strict=False``, the default): the rule above, including the last-box fallback of
  the official ProcessBench script (but balanced braces, stripping and the marker rule are the
  project's). Evaluation of single critiques under ``parser: strict`` keeps it.
* **strict** (``strict=True``): the judgment the method trains for. Only the bold
  ``**Answer**:`` marker counts (``NO_ANSWER_MARKER`` and no prediction without it), and a box that
  closes a per-step ``Judgement`` is never the judgment (``STEP_VERDICT``): a truncated critique
  ending in ``\boxed{-1}`` ("this step is wrong") is unreadable, never "no error". The GRPO reward,
  seed filtering and majority voting with ``require_marker`` use it (see :func:`judge`).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from dataclasses import dataclass, field

NO_ERROR = -1

_MARKER = re.compile(r"\*\*\s*Answer\s*\*\*\s*:|\*\*\s*Answer\s*:\s*\*\*|\bAnswer\s*:")
_STRICT_MARKER = re.compile(r"\*\*\s*Answer\s*\*\*\s*:|\*\*\s*Answer\s*:\s*\*\*")
_BOX = re.compile(r"\\boxed\s*\{")
_STEP_HEADER = re.compile(r"\*\*\s*Critique of Step\s+(\d+)\s*\*\*", re.IGNORECASE)
_JUDGEMENT = re.compile(r"Judg(?:e)?ment", re.IGNORECASE)
_WRAPPER = re.compile(r"^\\(?:text|mathrm|textbf|mathbf|textrm)\s*\{(.*)\}$", re.DOTALL)
_LEADING_STEP = re.compile(r"^step\s*", re.IGNORECASE)
_INT = re.compile(r"^[+-]?\d+$")


class ParseStatus(str, enum.Enum):
    OK = "ok"
    NO_BOX = "no_box"
    NOT_INTEGER = "not_integer"
    NO_ANSWER_MARKER = "no_answer_marker"
    STEP_VERDICT = "step_verdict"  # strict mode: the box after the marker closes a step verdict


@dataclass(frozen=True)
class Box:
    start: int  # offset of the backslash of ``\boxed``
    end: int  # offset just past the closing brace
    content: str


@dataclass(frozen=True)
class StepVerdict:
    step: int  # 1-based step number as written by the critic
    correct: bool | None  # None when the section has no readable verdict box
    critique: str


@dataclass(frozen=True)
class Judgment:
    """A parsed critique. ``step`` is 1-based, -1 for "no error", None when unreadable."""

    step: int | None
    status: ParseStatus
    verdicts: tuple[StepVerdict, ...] = field(default=())
    from_step_verdict: bool = False
    raw_box: str | None = None

    @property
    def label(self) -> int | None:
        """The prediction in the package's 0-based convention (None if unusable)."""
        return step_to_label(self.step)

    @property
    def has_prediction(self) -> bool:
        return self.label is not None


def step_to_label(step: int | None) -> int | None:
    """1-based critic step (or -1) -> 0-based label (or -1). 0 and other negatives -> None."""
    if step is None:
        return None
    if step == NO_ERROR:
        return NO_ERROR
    return step - 1 if step >= 1 else None


def label_to_step(label: int) -> int:
    """0-based label (or -1) -> the 1-based step number the critic writes (or -1)."""
    if label < NO_ERROR:
        raise ValueError(f"label must be >= -1, got {label}")
    return NO_ERROR if label == NO_ERROR else label + 1


def is_match(prediction: int | None, label: int) -> bool:
    """The one decision: does a 0-based prediction (None = unparsable) equal the 0-based label?"""
    return prediction is not None and prediction == label


def find_boxes(text: str) -> list[Box]:
    r"""Every ``\boxed{...}`` read with balanced braces; an unclosed (truncated) box is ignored."""
    boxes: list[Box] = []
    for m in _BOX.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            boxes.append(Box(m.start(), i, text[m.end() : i - 1]))
    return boxes


def read_box_int(content: str) -> int | None:
    r"""Rule 2: strip spaces, ``$``, ``\text{}``-style wrappers and a leading ``Step``; int or None."""
    s = content.replace("$", "").strip()
    while True:
        m = _WRAPPER.match(s)
        if not m:
            break
        s = m.group(1).strip()
    s = _LEADING_STEP.sub("", s).replace(" ", "")
    return int(s) if _INT.match(s) else None


def parse_step_verdicts(text: str) -> tuple[StepVerdict, ...]:
    r"""Per-step sections ``**Critique of Step i** ... Judgement ... \boxed{1|-1}``."""
    heads = list(_STEP_HEADER.finditer(text))
    out: list[StepVerdict] = []
    for j, h in enumerate(heads):
        end = heads[j + 1].start() if j + 1 < len(heads) else len(text)
        marker = _MARKER.search(text, h.end(), end)
        section = text[h.end() : marker.start() if marker else end]
        out.append(StepVerdict(int(h.group(1)), _section_verdict(section), section.strip()))
    return tuple(out)


def _section_verdict(section: str) -> bool | None:
    judgements = list(_JUDGEMENT.finditer(section))
    boxes = find_boxes(section[judgements[-1].end() :] if judgements else section)
    if not boxes:
        return None
    value = read_box_int(boxes[0].content)
    return {1: True, -1: False}.get(value) if value is not None else None


def _verdict_box_offsets(text: str) -> set[int]:
    """Start offsets of boxes that follow a ``Judgement`` keyword before any answer marker."""
    offsets: set[int] = set()
    for jm in _JUDGEMENT.finditer(text):
        boxes = find_boxes(text[jm.end() :])
        if boxes and not _MARKER.search(text, jm.end(), jm.end() + boxes[0].start):
            offsets.add(jm.end() + boxes[0].start)
    return offsets


def parse_critique(text: str, *, strict: bool = False) -> Judgment:
    """Apply the parsing rule (module docstring) to one critic output, in lenient or strict mode."""
    verdicts = parse_step_verdicts(text)
    markers = list((_STRICT_MARKER if strict else _MARKER).finditer(text))
    if markers:
        after = markers[-1].end()
        boxes = [b for b in find_boxes(text) if b.start >= after]
        if not boxes:
            return Judgment(None, ParseStatus.NO_BOX, verdicts)
        box, status, flagged = boxes[0], ParseStatus.OK, False
        if strict and box.start in _verdict_box_offsets(text):
            return Judgment(None, ParseStatus.STEP_VERDICT, verdicts, True, box.content)
    elif strict:
        return Judgment(None, ParseStatus.NO_ANSWER_MARKER, verdicts)
    else:
        all_boxes = find_boxes(text)
        if not all_boxes:
            return Judgment(None, ParseStatus.NO_BOX, verdicts)
        box, status = all_boxes[-1], ParseStatus.NO_ANSWER_MARKER
        flagged = box.start in _verdict_box_offsets(text)
    value = read_box_int(box.content)
    if value is None:
        return Judgment(None, ParseStatus.NOT_INTEGER, verdicts, flagged, box.content)
    return Judgment(value, status, verdicts, flagged, box.content)


def judge(text: str, *, strict: bool = False) -> int | None:
    """The 0-based prediction of one critic output in the given mode (None if unusable).

    ``strict=True`` is the GRPO reward's and seed filtering's reading (marker required, a per-step
    verdict never the judgment); ``strict=False`` is the lenient reading (last-box fallback).
    """
    return parse_critique(text, strict=strict).label


def predicted_label(text: str) -> int | None:
    """Shorthand: the 0-based prediction of one critic output, lenient mode (None if unusable)."""
    return judge(text)


def render_answer(step: int) -> str:
    r"""The final line the critic is trained to write: ``**Answer**: \boxed{k}``."""
    return f"**Answer**: \\boxed{{{step}}}"


def render_step_critique(step: int, critique: str, correct: bool) -> str:
    """One per-step section in the critic's output format."""
    verdict = 1 if correct else -1
    return f"**Critique of Step {step}**\n{critique.strip()}\n\n**Judgement**: \\boxed{{{verdict}}}"


def render_critique(sections: list[tuple[str, bool]]) -> str:
    """Join per-step critiques (steps 1..k) and append the answer line.

    The answer is the first step judged wrong, or -1 when every rendered step is judged right.
    """
    parts = [render_step_critique(i + 1, c, ok) for i, (c, ok) in enumerate(sections)]
    first_wrong = next((i + 1 for i, (_, ok) in enumerate(sections) if not ok), NO_ERROR)
    parts.append(render_answer(first_wrong))
    return "\n\n".join(parts)


# --- the official mode: RUCBM/DeepCritic ProcessBench/code/eval.py, reproduced exactly ---------
#
# ``parser: official`` reads critiques the way the authors' evaluation script does, so a
# released checkpoint is scored as in the paper. Steps are 1-based here, as in the script;
# :func:`official_label` converts at the edge. Differences from the project's reading (above):
# no balanced braces (``[^}]*``), the last box anywhere (markers are ignored), no stripping of
# ``$``/``\text{}``/``Step``, Python's ``int()`` (so ``" +3 "`` reads 3), and in Maj@k the vote is
# over the raw box strings, converted to an integer only after counting.

PARSERS = ("strict", "official")  # strict: the project's grader; official: the authors' eval.py
OFFICIAL_MARKER = "**Answer**:"  # eval.py keeps DeepCritic samples containing this, verbatim
_OFFICIAL_BOX = re.compile(r"\\boxed\{([^}]*)\}")


def official_extract_answer(text: str) -> str | None:
    r"""eval.py ``extract_answer``: the last ``\boxed{([^}]*)}``, stripped; None without one."""
    matches = _OFFICIAL_BOX.findall(text)
    return matches[-1].strip() if matches else None


def _official_int(box: str | None) -> int | None:
    """eval.py's ``try: int(pred) except: None`` (Python ``int()`` on the box string)."""
    if box is None:
        return None
    try:
        return int(box)
    except ValueError:
        return None


def official_step(text: str) -> int | None:
    """The 1-based step (or -1) eval.py predicts for one greedy/single critique."""
    return _official_int(official_extract_answer(text))


def official_vote_step(texts: list[str], *, require_marker: bool) -> int | None:
    """eval.py's Maj@k: with ``require_marker`` (the script's rule for DeepCritic models) only
    samples containing ``**Answer**:`` count; ``Counter`` over the box strings, first-seen wins a
    tie, and the winner is then ``int()``-ed (a non-integer winner predicts nothing)."""
    kept = [t for t in texts if OFFICIAL_MARKER in t] if require_marker else list(texts)
    boxes = [b for b in (official_extract_answer(t) for t in kept) if b is not None]
    if not boxes:
        return None
    return _official_int(Counter(boxes).most_common(1)[0][0])


def official_label(texts: list[str], *, require_marker: bool = True) -> int | None:
    """The 0-based prediction of eval.py for one item: a single critique is read by
    :func:`official_step`, several by :func:`official_vote_step`."""
    if len(texts) == 1:
        return step_to_label(official_step(texts[0]))
    return step_to_label(official_vote_step(texts, require_marker=require_marker))


def official_tagged_response(steps: list[str]) -> str:
    """eval.py ``prepare_input_boxed``'s solution text: a step is prefixed ``Step k: `` only when
    it does not already contain ``"Step "``; steps joined by blank lines, then stripped."""
    out = ""
    for k, step in enumerate(steps, start=1):
        out += (step if "Step " in step else f"Step {k}: {step}") + "\n\n"
    return out.strip().strip("\n")
