r"""The seed stage's ``prompt_set: reference``: the authors' teacher prompts and SFT format.

The files are the authors' (``Critique_Generation/`` of RUCBM/DeepCritic at
:data:`deepcritic.reference.COMMIT`), fetched by URI and sha256-checked by
:func:`deepcritic.reference.reference_text`; their text is never in this repository. Each prompt
is rendered as the authors' scripts build it:

* **merge** (``merge_critique.py``): ``critique_merge_prompt.txt`` read as is and filled by
  ``.format(original_critique=, critique_of_original_critique=, example1=, example2=)`` with the
  two few-shot files read as is; the teacher sees only the two critiques. The system message is
  Qwen's default (the script's hand-written Qwen chat template).
* **initial / in-depth**: the authors released the prompt files but not the script that fills
  them, so they are filled by ``.format`` with exactly the files' own fields (``problem``,
  ``solution``, ``step_index``, and ``original_critique`` for the in-depth one): the problem as
  given, the whole solution numbered by the rule of ``eval.py`` and ``process_formatted_sft_data.py``
  (:func:`deepcritic.grader.official_tagged_response`), the 1-based step number; the same system
  message as the merge script.
* **SFT example** (``process_formatted_sft_data.py``): Qwen's default system message, the
  evaluation template of ``eval.py`` (:func:`deepcritic.reference.reference_critique_messages`),
  and the merged critiques as written (newlines stripped at both ends, as ``merge_critique.py``'s
  ``extract_completion_only`` does), each followed by a blank line, then ``**Answer**: \boxed{k}``
  (k = the number of critiqued steps when the solution has an error, else -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from deepcritic import grader
from deepcritic.generation import Prompt
from deepcritic.records import Solution
from deepcritic.reference import QWEN_SYSTEM, reference_critique_messages, reference_text

INITIAL = "Critique_Generation/critique_prompt_initial.txt"
INDEPTH = "Critique_Generation/critique_prompt_in_depth.txt"
MERGE = "Critique_Generation/critique_merge_prompt.txt"
EXAMPLES = ("Critique_Generation/example1.txt", "Critique_Generation/example2.txt")


def completion_text(text: str) -> str:
    """A teacher output as the authors keep it (``extract_completion_only``: ``strip('\\n')``)."""
    return text.strip("\n")


def verdict_prefix(index: int) -> str:
    """The authors' verdict line (``example1.txt``) up to the open box, for a forced verdict."""
    return f"**Judgement**: The correctness of Step {grader.label_to_step(index)} is: \\boxed{{"


def _messages(user: str) -> Prompt:
    return [
        {"role": "system", "content": QWEN_SYSTEM},
        {"role": "user", "content": user},
    ]


@dataclass(frozen=True)
class ReferenceSeedPrompts:
    """The authors' three teacher prompts (loaded once per chunk) and their SFT format."""

    initial_template: str
    indepth_template: str
    merge_template: str
    example1: str
    example2: str

    name = "reference"

    @classmethod
    def load(cls) -> ReferenceSeedPrompts:
        return cls(
            reference_text(INITIAL),
            reference_text(INDEPTH),
            reference_text(MERGE),
            reference_text(EXAMPLES[0]),
            reference_text(EXAMPLES[1]),
        )

    def initial(self, solution: Solution, index: int) -> Prompt:
        return _messages(
            self.initial_template.format(
                problem=solution.problem,
                solution=grader.official_tagged_response(solution.steps),
                step_index=grader.label_to_step(index),
            )
        )

    def indepth(self, solution: Solution, index: int, initial: str) -> Prompt:
        return _messages(
            self.indepth_template.format(
                problem=solution.problem,
                solution=grader.official_tagged_response(solution.steps),
                original_critique=completion_text(initial),
                step_index=grader.label_to_step(index),
            )
        )

    def merge(self, solution: Solution, index: int, initial: str, indepth: str) -> Prompt:
        """Only the two critiques and the authors' two few-shot merges (no problem, no step)."""
        return _messages(
            self.merge_template.format(
                original_critique=completion_text(initial),
                critique_of_original_critique=completion_text(indepth),
                example1=self.example1,
                example2=self.example2,
            )
        )

    def verdict_prefix(self, index: int) -> str:
        return verdict_prefix(index)

    def body(self, merged: str) -> str:
        """The merged critique goes into the SFT text as written, verdict line included."""
        return completion_text(merged)

    def messages(self, solution: Solution, bodies: Sequence[str]) -> list[dict[str, str]]:
        return sft_messages(solution, bodies)


def sft_completion(merged: Sequence[str], label: int) -> str:
    """``process_formatted_sft_data.py``'s completion: critiques, blank lines, the answer box."""
    answer = len(merged) if label != grader.NO_ERROR else grader.NO_ERROR
    return "".join(m + "\n\n" for m in merged) + grader.render_answer(answer)


def sft_messages(solution: Solution, merged: Sequence[str]) -> list[dict[str, str]]:
    """One SFT example: the evaluation prompt (as the critic is scored) and the target."""
    return [
        *reference_critique_messages(solution.problem, solution.steps),
        {"role": "assistant", "content": sft_completion(merged, solution.label)},
    ]
