"""``prompt_set: reference``: the authors' files, fetched by URI into the input cache (seeded here
from ``../shared/reference/deepcritic``, no network), render byte-identical to what their scripts
build; the one grader reads their target format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcritic import grader, reference
from deepcritic.data.processbench import bundled_slice
from deepcritic.platform import storage
from deepcritic.stages import evaluate
from support.paths import SHARED
from support.reference_cache import prepare_input_boxed, seed_reference_cache
from support.scripted_backend import ScriptedBackend

REF_DIR = SHARED / "reference" / "deepcritic"
EVAL_PY = REF_DIR / "ProcessBench" / "code" / "eval.py"
pytestmark = pytest.mark.skipif(not EVAL_PY.is_file(), reason=f"{REF_DIR} not present")


@pytest.fixture()
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty input cache seeded from the shared copy; any download attempt fails the test."""
    return seed_reference_cache(tmp_path / "cache", monkeypatch)


PREPARE = prepare_input_boxed()
# eval.py: TEMPLATE = open('templates/critique_template_new.txt').read().strip()
TEMPLATE = (REF_DIR / reference.CRITIQUE_TEMPLATE).read_text().strip() if EVAL_PY.is_file() else ""


def test_pinned_uris_and_hashes_match_the_shared_copy() -> None:
    for ref in reference.FILES.values():
        assert ref.uri == (
            f"https://raw.githubusercontent.com/RUCBM/DeepCritic/{reference.COMMIT}/{ref.path}"
        )
        assert reference.hashlib.sha256((REF_DIR / ref.path).read_bytes()).hexdigest() == ref.sha256


@pytest.mark.parametrize("split", ["gsm8k", "math"])
def test_reference_prompt_is_byte_identical_to_eval_py(seeded: Path, split: str) -> None:
    items = json.loads(bundled_slice(split).read_text())
    for item in items:
        msgs = reference.reference_critique_messages(item["problem"], item["steps"])
        assert msgs[0] == {"role": "system", "content": reference.QWEN_SYSTEM}
        assert msgs[1:] == PREPARE(TEMPLATE, item)


@settings(max_examples=150, deadline=None)
@given(
    st.text(max_size=40),
    st.lists(st.one_of(st.text(max_size=20), st.just("Step 2: x {y}")), min_size=1, max_size=6),
)
def test_reference_prompt_equals_eval_py_on_generated_items(problem: str, steps: list[str]) -> None:
    msgs = reference.reference_critique_messages(problem, steps)
    assert msgs[1:] == PREPARE(TEMPLATE, {"problem": problem, "steps": steps})


@pytest.fixture(autouse=True)
def _cache_for_generated(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hypothesis tests cannot take function-scoped fixtures: every test gets a seeded cache
    cache = tmp_path_factory.mktemp("refcache")
    monkeypatch.setenv("DEEPCRITIC_CACHE", str(cache))
    monkeypatch.delenv(storage.RUN_VOLUME_ENV, raising=False)
    if EVAL_PY.is_file():
        reference.seed_cache(REF_DIR)


def test_a_changed_copy_is_refused(seeded: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(TEMPLATE + " (edited)")
    storage.seed(reference.FILES[reference.CRITIQUE_TEMPLATE].uri, bad)
    with pytest.raises(ValueError, match="differs from the pinned"):
        reference.reference_critique_messages("p", ["s"])
    with pytest.raises(KeyError, match="not a pinned reference file"):
        reference.reference_path("README.md")


def test_the_grader_reads_the_reference_target_format() -> None:
    # the layout of Critique_Generation/example1.txt and process_formatted_sft_data.py's completion
    text = (
        "**Critique of Step 1**: The sum is right.\n\n"
        "**Judgement**: The correctness of Step 1 is: \\boxed{1}\n\n"
        "**Critique of Step 2**: 3 * 4 is 12, not 14.\n\n"
        "**Judgement**: The correctness of Step 2 is: \\boxed{-1}\n\n"
        "**Answer**: \\boxed{2}"
    )
    parsed = grader.parse_critique(text, strict=True)
    assert parsed.step == 2 and [v.correct for v in parsed.verdicts] == [True, False]
    assert grader.official_step(text) == 2
    truncated = text.rsplit("\n\n", 1)[0]  # no final answer: a step verdict is never the judgment
    assert grader.judge(truncated, strict=True) is None


def test_evaluate_sends_the_reference_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ScriptedBackend(lambda _p, _s: ["**Answer**: \\boxed{-1}"])
    monkeypatch.setattr(evaluate, "make_backend", lambda _cfg: backend)
    cfg = evaluate.EvalConfig(
        benchmarks=["processbench-slice:gsm8k"],
        out=str(tmp_path / "eval"),
        tracking_uri="off",
        prompt_set="reference",
        parser="official",
        limit=3,
    )
    evaluate.run(cfg)
    items = json.loads(bundled_slice("gsm8k").read_text())[:3]
    sent = backend.generate_calls[0][0]
    assert [p[1:] for p in sent] == [PREPARE(TEMPLATE, it) for it in items]
    other = evaluate.EvalConfig(benchmarks=cfg.benchmarks)
    bench = cfg.suite()[0]
    assert evaluate.settings_key(cfg, bench) != evaluate.settings_key(other, bench)
    with pytest.raises(ValueError, match="prompt_set"):
        evaluate.EvalConfig(prompt_set="authors")
