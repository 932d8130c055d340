"""Seed ``prompt_set: reference``: the teacher prompts and SFT examples render byte-identical to
what the authors' scripts build (their code, cut out of ../shared/reference, run on the same item),
and the one grader reads the authors' verdict format for seed filtering."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcritic import grader, reference
from deepcritic.config import load_config
from deepcritic.generation import Completion
from deepcritic.records import Solution
from deepcritic.stages.seed import SeedConfig
from deepcritic.stages.seed import reference_set as rs
from deepcritic.stages.seed.generate import roundtrip_ok, seed_prompts
from deepcritic.stages.seed.teacher import forced_prefill, read_verdict
from support import reference_seed as authors
from support.paths import REFERENCE_DIR, ROOT
from support.reference_cache import seed_reference_cache

pytestmark = pytest.mark.skipif(not authors.PRESENT, reason=f"{REFERENCE_DIR} not present")
CONFIGS = ROOT / "src" / "deepcritic" / "configs"


def ref_file(path: str) -> str:
    """A reference file as the authors' scripts read it (``open(...).read()``)."""
    with open(REFERENCE_DIR / path, encoding="utf-8") as f:
        return f.read()


@pytest.fixture(autouse=True)
def _seeded(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """An input cache seeded from the shared copy; any download attempt fails the test."""
    if authors.PRESENT:
        seed_reference_cache(tmp_path_factory.mktemp("refcache"), monkeypatch)


def solution(steps: list[str], label: int, problem: str = "What is 2 + 3 * {x}?") -> Solution:
    return Solution(id="p1", problem=problem, steps=steps, label=label)


STEPS = ["First, 3 * 4 = 12.", "Then 2 + 12 = 15.", "So the answer is $\\boxed{15}$."]
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
step_lists = st.lists(st.one_of(texts, st.just("Step 2: x {y}")), min_size=1, max_size=5)


def test_merge_prompt_is_what_merge_critique_py_builds() -> None:
    ps = rs.ReferenceSeedPrompts.load()
    initial = "**Critique of Step 2**: 2 + 12 is 14.\n\n**Judgement**: ... \\boxed{-1}"
    indepth = "**Critique of the critique of Step 2**: {braces} stay.\n\\boxed{-1}"
    data = {"critiques": ["x", initial], "critique_of_critiques": ["y", indepth]}
    want = authors.merge_instruction(
        ref_file(rs.MERGE), ref_file(rs.EXAMPLES[0]), ref_file(rs.EXAMPLES[1]), data, 1
    )
    got = ps.merge(solution(STEPS, 1), 1, initial, indepth)
    assert got == [
        {"role": "system", "content": reference.QWEN_SYSTEM},
        {"role": "user", "content": want},
    ]
    # the teacher sees the two critiques and the authors' two few-shot merges, not the problem
    assert solution(STEPS, 1).problem not in want and ref_file(rs.EXAMPLES[0]) in want
    # the script's hand-written Qwen chat template == the chat template on these messages
    assert authors.chatml(got) == authors.merge_chat_template().format(instruction=want)


@settings(max_examples=60, deadline=None)
@given(texts, texts)
def test_merge_prompt_on_generated_critiques(initial: str, indepth: str) -> None:
    ps = rs.ReferenceSeedPrompts.load()
    data = {"critiques": [initial.strip("\n")], "critique_of_critiques": [indepth.strip("\n")]}
    want = authors.merge_instruction(
        ref_file(rs.MERGE), ref_file(rs.EXAMPLES[0]), ref_file(rs.EXAMPLES[1]), data, 0
    )
    assert ps.merge(solution(STEPS, -1), 0, initial, indepth)[1]["content"] == want


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_initial_and_indepth_templates_have_exactly_the_fields_filled() -> None:
    # the authors did not release the script that fills these two files: the product fills
    # every field the files name, and nothing else
    assert _fields(ref_file(rs.INITIAL)) == {"problem", "solution", "step_index"}
    assert _fields(ref_file(rs.INDEPTH)) == {
        "problem",
        "solution",
        "step_index",
        "original_critique",
    }


@settings(max_examples=60, deadline=None)
@given(texts, step_lists, st.data())
def test_initial_and_indepth_prompts_render_the_files(
    problem: str, steps: list[str], data: st.DataObject
) -> None:
    ps = rs.ReferenceSeedPrompts.load()
    index = data.draw(st.integers(0, len(steps) - 1))
    s = solution(steps, -1, problem)
    tagged = authors.eval_tagged_response(steps)  # eval.py's / the SFT script's numbering
    initial = ps.initial(s, index)
    assert initial[0] == {"role": "system", "content": reference.QWEN_SYSTEM}
    assert initial[1]["content"] == ref_file(rs.INITIAL).format(
        problem=problem, solution=tagged, step_index=index + 1
    )
    critique = "\n" + problem + "\n"
    indepth = ps.indepth(s, index, critique)
    assert indepth[1]["content"] == ref_file(rs.INDEPTH).format(
        problem=problem,
        solution=tagged,
        original_critique=critique.strip("\n"),  # merge_critique.py's extract_completion_only
        step_index=index + 1,
    )


def _authors_item(s: Solution, merged: list[str]) -> dict[str, Any]:
    k = len(merged)
    labels = [1] * k if s.label == grader.NO_ERROR else [1] * (k - 1) + [-1]
    return {
        "problem": s.problem,
        "steps": [{"text": t} for t in s.steps],
        "merged_critiques": merged,
        "critic_labels": labels,
        "critique_correctness": [True] * k,
    }


@pytest.mark.parametrize("label", [-1, 0, 2])
def test_sft_example_is_what_process_formatted_sft_data_py_builds(label: int) -> None:
    s = solution(STEPS, label)
    k = len(STEPS) if label == -1 else label + 1
    merged = [
        f"**Critique of Step {j}**: ok.\n\n**Judgement**: The correctness of Step {j} is: "
        f"\\boxed{{{-1 if j - 1 == label else 1}}}"
        for j in range(1, k + 1)
    ]
    want = authors.sft_example(ref_file(reference.CRITIQUE_TEMPLATE), _authors_item(s, merged))
    assert rs.sft_messages(s, merged) == want["messages"]
    assert roundtrip_ok(s, want["messages"][-1]["content"])  # the grader reads it back


@settings(max_examples=60, deadline=None)
@given(texts, st.lists(texts.filter(lambda t: "Step " not in t), min_size=1, max_size=4))
def test_sft_example_on_generated_items(problem: str, steps: list[str]) -> None:
    # (the SFT script crashes on a step containing "Step ": it keeps the dict; eval.py's rule,
    # which the product uses for both, keeps the text unnumbered)
    s = solution(steps, len(steps) - 1, problem)
    merged = [f"critique {j} {problem}" for j in range(len(steps))]
    want = authors.sft_example(ref_file(reference.CRITIQUE_TEMPLATE), _authors_item(s, merged))
    assert rs.sft_messages(s, merged) == want["messages"]


# merge_critique.py's verdict reader (the last integer box), cut out of the script
EXTRACT = (
    authors.functions(authors.MERGE_PY, "is_int", "extract_boxed_answers", "extract_preds")
    if authors.PRESENT
    else {}
)


@pytest.mark.parametrize(("path", "verdict"), [(rs.EXAMPLES[0], -1), (rs.EXAMPLES[1], 1)])
def test_grader_reads_the_authors_example_critiques(path: str, verdict: int) -> None:
    text = ref_file(path)  # their boxes are written \\boxed{...}
    assert read_verdict(Completion(text)) == (verdict, None)
    assert EXTRACT["extract_preds"]([text]) == [verdict]
    (v,) = grader.parse_step_verdicts(text)
    assert v.correct is (verdict == 1)


@settings(max_examples=100, deadline=None)
@given(
    st.text(alphabet="abc 12+=*.\n", max_size=40),
    st.integers(1, 30),
    st.sampled_from([1, -1]),
    st.sampled_from(["", "#### "]),
)
def test_grader_and_the_authors_read_the_same_step_verdict(
    body: str, k: int, verdict: int, hashes: str
) -> None:
    text = (
        f"**Critique of Step {k}**: {body}\n\n"
        f"**Judgement**: {hashes}The correctness of Step {k} is: \\boxed{{{verdict}}}"
    )
    assert read_verdict(Completion(text)) == (verdict, None)
    assert EXTRACT["extract_preds"]([text]) == [verdict]


def test_forced_verdict_uses_the_authors_verdict_line() -> None:
    prefix = rs.verdict_prefix(2)
    assert prefix == "**Judgement**: The correctness of Step 3 is: \\boxed{"
    text = forced_prefill([], "Step 3 is off by one.", prefix)[-1]["content"] + "-1}"
    assert read_verdict(Completion(text)) == (-1, None)
    assert EXTRACT["extract_preds"]([text]) == [-1]


def test_filter_drops_a_reference_critique_whose_verdicts_differ_from_the_labels() -> None:
    s = solution(STEPS, 1)
    ok = [
        "**Critique of Step 1**: fine.\n\n**Judgement**: The correctness of Step 1 is: \\boxed{1}",
        "**Critique of Step 2**: 14.\n\n**Judgement**: The correctness of Step 2 is: \\boxed{-1}",
    ]
    assert roundtrip_ok(s, rs.sft_messages(s, ok)[-1]["content"])
    flipped = [ok[0].replace("\\boxed{1}", "\\boxed{-1}"), ok[1]]
    assert not roundtrip_ok(s, rs.sft_messages(s, flipped)[-1]["content"])
    headless = [ok[0], ok[1].replace("**Critique of Step 2**: ", "")]
    assert not roundtrip_ok(s, rs.sft_messages(s, headless)[-1]["content"])


def test_prompt_set_config() -> None:
    assert SeedConfig().prompt_set == "deepcritic"
    assert seed_prompts("deepcritic").name == "deepcritic"
    assert seed_prompts("reference").name == "reference"
    with pytest.raises(ValueError, match="prompt_set"):
        SeedConfig(prompt_set="authors")
    with pytest.raises(ValueError, match="teacher: calculator.*prompt_set: 'reference'"):
        SeedConfig(teacher="calculator", prompt_set="reference")
    presets = {p: load_config(SeedConfig, CONFIGS / f"seed.{p}.yaml") for p in ("paper", "local")}
    assert presets["paper"].prompt_set == "reference"
    assert presets["local"].prompt_set == "deepcritic"


def test_nothing_of_the_authors_text_is_in_the_repository() -> None:
    files = rs.EXAMPLES + (rs.INITIAL, rs.INDEPTH, rs.MERGE)
    lines = {ln.strip() for p in files for ln in ref_file(p).splitlines() if len(ln.strip()) > 40}
    assert len(lines) > 10
    paths = [
        ROOT / "README.md",
        *(p for d in ("src", "docs", "tests") for p in (ROOT / d).rglob("*")),
    ]
    for path in paths:
        if path.is_file() and path.suffix in (".py", ".md", ".yaml", ".txt", ".json"):
            text = path.read_text(encoding="utf-8", errors="replace")
            assert not any(ln in text for ln in lines), path
