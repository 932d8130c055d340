"""``prompt_set: reference`` on loaded benchmark items: the prompt of every MR-GSM8K and ProcessBench
item equals, byte for byte, what the authors' ``eval.py`` (``prepare_input_boxed``, executed from
``../shared/reference/deepcritic``) builds from the same item of the released file.

No released MR-GSM8K file is here: items are generated in its layout (ProcessBench fields, int ids,
steps that already say ``Step i:``, with the spacing variants, empty steps and unicode a file can
hold) and written to a file the loader reads, as a user's download would be.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepcritic import reference
from deepcritic.data.loaders import load_solutions
from deepcritic.data.processbench import bundled_slice
from deepcritic.grader import official_tagged_response
from deepcritic.prompting import critique_messages
from deepcritic.stages.evaluate import item_messages
from support.paths import PROCESSBENCH_DIR, REFERENCE_DIR
from support.reference_cache import prepare_input_boxed, seed_reference_cache

EVAL_PY = REFERENCE_DIR / "ProcessBench" / "code" / "eval.py"
pytestmark = pytest.mark.skipif(not EVAL_PY.is_file(), reason=f"{REFERENCE_DIR} not present")


PREPARE = prepare_input_boxed()
# eval.py: TEMPLATE = open('templates/critique_template_new.txt').read().strip()
TEMPLATE = (REFERENCE_DIR / reference.CRITIQUE_TEMPLATE).read_text().strip() if PREPARE else ""


@pytest.fixture(scope="module", autouse=True)
def seeded_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One input cache for the module, seeded from the shared copy; a download fails the test."""
    with pytest.MonkeyPatch.context() as mp:
        seed_reference_cache(tmp_path_factory.mktemp("refcache"), mp)
        yield


def _assert_reference_prompts(spec: str, items: list[dict[str, Any]]) -> None:
    records, report = load_solutions(spec)
    assert report.kept == len(items)
    for rec, item in zip(records, items, strict=True):
        want = PREPARE(TEMPLATE, item)
        assert reference.reference_item_messages(rec)[1:] == want, item["id"]
        assert item_messages(rec, "reference") == [
            {"role": "system", "content": reference.QWEN_SYSTEM},
            *want,
        ]


_BODY = st.one_of(
    st.sampled_from(
        ["", " ", "x = 2", "<<2*8=16>>16 ounces", "#### 48", "see Step 3", "a\nb", "ü½"]
    ),
    st.text(max_size=15),
)


@st.composite
def released_step(draw: st.DrawFn, k: int) -> str:
    """One step text in the forms the released file (and a differently processed one) can hold."""
    form = draw(
        st.sampled_from(
            [
                "Step {k}: {b}",
                "Step {k}:  {b}",
                "Step {k}:{b}",
                "step {k} {b}",
                "Step {k}: ",
                "{b}",
                "Step {k}. {b}",
                "**Step {k}:** {b}",
                "Step {k}: {b} ",
            ]  # fmt: skip
        )
    )
    return form.format(k=k, b=draw(_BODY))


@st.composite
def released_item(draw: st.DrawFn, i: int) -> dict[str, Any]:
    n = draw(st.integers(1, 6))
    steps = [draw(released_step(k)) for k in range(1, n + 1)]
    label = draw(st.integers(-1, n - 1))
    return {
        "id": i,
        "generator": "",
        "problem": draw(st.text(max_size=30)),
        "steps": steps,
        "final_answer_correct": label == -1,
        "label": label,
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4).flatmap(lambda n: st.tuples(*(released_item(i) for i in range(n)))))
def test_mrgsm8k_reference_prompt_is_eval_py_on_the_released_bytes(
    items: tuple[dict[str, Any], ...],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "processed_test.json"
        path.write_text(json.dumps(list(items), indent=4, ensure_ascii=False), encoding="utf-8")
        _assert_reference_prompts(f"mrgsm8k:{path}", list(items))


def test_the_cleaned_steps_would_render_other_bytes(tmp_path: Path) -> None:
    """Why the raw texts are kept: eval.py leaves a step containing "Step " as it is, so the
    cleaned step (prefix and double space gone) is numbered into different bytes. The project's
    own prompt set keeps the cleaned steps."""
    item = {"id": 98, "generator": "", "problem": "p", "label": 1, "final_answer_correct": False,
            "steps": ["Step 1: ", "Step 2:  He drank 2*8=16", "Step 3: #### 48 "]}  # fmt: skip
    path = tmp_path / "processed_test.json"
    path.write_text(json.dumps([item]), encoding="utf-8")
    (rec,), _ = load_solutions(f"mrgsm8k:{path}")
    assert rec.steps == ["", "He drank 2*8=16", "#### 48"]
    assert official_tagged_response(rec.steps) != official_tagged_response(item["steps"])
    assert reference.released_steps(rec) == item["steps"]
    ours = item_messages(rec, "deepcritic")
    assert ours == critique_messages(rec.problem, rec.steps)
    assert "He drank" in ours[-1]["content"] and "Step 2:  He" not in ours[-1]["content"]
    _assert_reference_prompts(f"mrgsm8k:{path}", [item])


@pytest.mark.parametrize("split", ["gsm8k", "math"])
def test_processbench_bundled_slices(split: str) -> None:
    path = bundled_slice(split)
    _assert_reference_prompts(f"processbench-slice:{split}", json.loads(path.read_text()))


@pytest.mark.parametrize("split", ["gsm8k", "math"])
def test_processbench_shared_files(split: str) -> None:
    path = PROCESSBENCH_DIR / f"{split}.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    _assert_reference_prompts(f"processbench:{path}", json.loads(path.read_text()))


def test_released_steps_ignore_a_meta_that_does_not_fit() -> None:
    from deepcritic.records import Solution

    rec = Solution(id="x", problem="p", steps=["a", "b"], meta={"raw_steps": ["Step 1: a"]})
    assert reference.released_steps(rec) == ["a", "b"]
