r"""The authors' prompt set (``prompt_set: reference``), fetched from their repository by URI.

The reference files are never copied into this repository: each is fetched once from
``RUCBM/DeepCritic`` at the pinned commit (``raw.githubusercontent.com``, through
:func:`deepcritic.platform.storage.fetch`, so it is cached on the run volume or in the model cache
like any other input) and checked against the sha256 pinned in :data:`FILES`. A file whose bytes
differ is an error, never used.

What the reference set renders (``ProcessBench/code/eval.py`` of that commit):

* system: Qwen's default system message (what the Qwen2.5 chat template inserts when a
  conversation has none, and what eval.py writes out for Qwen2.5 instruct models);
* user: ``templates/critique_template_new.txt`` (read and ``.strip()``-ed as eval.py does) filled by
  ``str.format(problem=..., tagged_response=...)``, the solution numbered by eval.py's rule
  (:func:`deepcritic.grader.official_tagged_response`) from the step texts as the benchmark file
  has them (:func:`released_steps`: MR-GSM8K's ``Step i:`` prefixes and spacing included).

The critic answers in the authors' target format (``Critique_Generation/example1.txt``):
``**Critique of Step k**: ... **Judgement**: ... \boxed{1 or -1}`` and a final ``\boxed{k}``,
which the one grader reads (per-step verdicts and the final box alike).

:func:`critic_prompt` is the one dispatcher on ``prompt_set`` (evaluation, SFT, GRPO and the server
call it): ``deepcritic`` -> :func:`deepcritic.prompting.critique_messages`, ``reference`` ->
:func:`reference_critique_messages`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deepcritic.generation import Prompt
from deepcritic.grader import official_tagged_response
from deepcritic.prompting import critique_messages, escape_control_tokens, load_prompt
from deepcritic.records import Solution

REPO = "RUCBM/DeepCritic"
COMMIT = "6a0cde9e58bc20ac69eecf79e36fac661d28eb6f"  # "update RL data generation", 2025-05-18
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
PROMPT_SETS = ("deepcritic", "reference")  # the project's prompts | the authors'


@dataclass(frozen=True)
class RefFile:
    path: str  # inside the repository
    sha256: str  # of the file at COMMIT

    @property
    def uri(self) -> str:
        return f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/{self.path}"


_FILES = (
    RefFile(
        "ProcessBench/code/templates/critique_template_new.txt",
        "95c94273e4f061370033e4dadf7a7de3d24ffa0e3d3f841444d705fa892ea55d",
    ),
    RefFile(
        "Critique_Generation/critique_prompt_initial.txt",
        "5cbf90b6926df02bf3eacc82d850c2f2cf3cc5e84e9ca74eb63a7a92317ecbf1",
    ),
    RefFile(
        "Critique_Generation/critique_prompt_in_depth.txt",
        "2625018eeee84357795c7137501d04fffe5b8f91843426b5ee774b2cdbb28170",
    ),
    RefFile(
        "Critique_Generation/critique_merge_prompt.txt",
        "1000bd546d8ae364a704e2f7d63c9e6e3a4f74aa27a49241f986a50bd7f2735b",
    ),
    RefFile(
        "Critique_Generation/example1.txt",
        "26c4cc3b3d891c62d52478958f566ade1d0b92a2d9d5c3ddb0de4ca474f02d4a",
    ),
    RefFile(
        "Critique_Generation/example2.txt",
        "c01fa493369effc0890f9c2361812ef8292eef4a0aa6e05f2f8e454edc9b3dbc",
    ),
)
FILES: dict[str, RefFile] = {f.path: f for f in _FILES}
CRITIQUE_TEMPLATE = "ProcessBench/code/templates/critique_template_new.txt"


def check_prompt_set(value: str, where: str = "prompt_set") -> str:
    if value not in PROMPT_SETS:
        raise ValueError(f"{where}: must be one of {PROMPT_SETS}, got {value!r}")
    return value


def reference_path(path: str) -> Path:
    """A local, sha256-checked copy of the reference file ``path`` (fetched once, then cached)."""
    ref = FILES.get(path)
    if ref is None:
        raise KeyError(f"{path!r} is not a pinned reference file; known: {sorted(FILES)}")
    from deepcritic.platform import storage

    found = storage.fetch(ref.uri)
    digest = hashlib.sha256(found.read_bytes()).hexdigest()
    if digest != ref.sha256:
        raise ValueError(
            f"{found}: sha256 {digest} differs from the pinned {ref.sha256} of {path} at "
            f"{REPO}@{COMMIT[:7]} (a changed or corrupt copy; delete it to fetch again)"
        )
    return found


def seed_cache(checkout: Path) -> list[Path]:
    """Put the pinned files of a local copy of the repository (at :data:`COMMIT`) into the input
    cache, each sha256-checked (tests, air-gapped clusters): later fetches need no network."""
    out = []
    for ref in FILES.values():
        src = checkout / ref.path
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        if digest != ref.sha256:
            raise ValueError(f"{src}: sha256 {digest} is not the pinned {ref.sha256}")
        from deepcritic.platform import storage

        out.append(storage.seed(ref.uri, src))
    return out


def reference_text(path: str) -> str:
    return reference_path(path).read_text(encoding="utf-8")


def reference_critique_messages(problem: str, steps: Sequence[str]) -> Prompt:
    """The authors' evaluation prompt for one item, exactly as eval.py builds it."""
    template = reference_text(CRITIQUE_TEMPLATE).strip()
    user = template.format(problem=problem, tagged_response=official_tagged_response(list(steps)))
    return [
        {"role": "system", "content": QWEN_SYSTEM},
        {"role": "user", "content": user},
    ]


def released_steps(record: Solution) -> list[str]:
    """The step texts as the benchmark file has them, which eval.py numbers: a loader that cleans
    steps (MR-GSM8K strips ``Step i:``) keeps the released texts in ``meta["raw_steps"]``; any
    other record's ``steps`` are already verbatim."""
    raw = record.meta.get("raw_steps")
    if (
        isinstance(raw, list)
        and len(raw) == len(record.steps)
        and all(isinstance(s, str) for s in raw)
    ):
        return list(raw)
    return list(record.steps)


def reference_item_messages(record: Solution) -> Prompt:
    """:func:`reference_critique_messages` for a loaded record, from its released step texts."""
    return reference_critique_messages(record.problem, released_steps(record))


def critic_prompt(
    problem: str,
    steps: Sequence[str],
    prompt_set: str,
    *,
    special_tokens: Iterable[str] | None = None,
) -> Prompt:
    """The critic's prompt for one item under ``prompt_set``: the one dispatcher.

    * ``deepcritic``: :func:`deepcritic.prompting.critique_messages` (control tokens in the problem
      and steps always escaped, plus ``special_tokens``);
    * ``reference``: :func:`reference_critique_messages`, the authors' bytes. With
      ``special_tokens`` given (the server passes its tokenizer's, ``()`` for the generic patterns
      only) the problem and steps are escaped first, as in the deepcritic set: a no-op on text
      without control tokens, so such items stay byte-identical to eval.py's prompt.
    """
    check_prompt_set(prompt_set)
    if prompt_set == "deepcritic":
        return critique_messages(problem, steps, special_tokens or ())
    if special_tokens is not None:
        tokens = tuple(special_tokens)
        problem = escape_control_tokens(problem, tokens)
        steps = [escape_control_tokens(s, tokens) for s in steps]
    return reference_critique_messages(problem, steps)


def prompt_set_of(prompt: Sequence[dict[str, str]]) -> str | None:
    """Which prompt set wrote a stored chat prompt, read from its system message: Qwen's default
    -> ``reference``, ``prompts/critique_system.md`` -> ``deepcritic``, anything else -> None."""
    system = next((m.get("content", "") for m in prompt if m.get("role") == "system"), None)
    if system is None:
        return None
    if system.strip() == QWEN_SYSTEM:
        return "reference"
    if system.strip() == load_prompt("critique_system.md").strip():
        return "deepcritic"
    return None
