"""The Hugging Face backend, for real, on tiny random Llamas with the SmolLM2 tokenizer.

``tiny_backend`` (the shared fixture) greedily emits the same token for every prompt, which
would make order and batching checks vacuous; ``spiky`` is the same architecture with large
random weights, so its greedy outputs differ from prompt to prompt and from position to position.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepcritic.generation import Backend, BackendConfig, SamplingParams
from deepcritic.generation.continuous import MIN_SHARED_PREFIX, ContinuousBatcher
from deepcritic.generation.hf import HFBackend, length_sorted_batches

WORDS = [
    "the",
    "a",
    "number",
    "of",
    "apples",
    "costs",
    "seven",
    "dollars",
    "each",
    "so",
    "total",
    "is",
    "twelve",
]


def _prompt(k: int, prefill: str | None = None) -> list[dict[str, str]]:
    text = " ".join(WORDS[(k + i) % len(WORDS)] for i in range(3 + 5 * k))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    if prefill is not None:
        msgs.append({"role": "assistant", "content": prefill})
    return msgs


# prompts of deliberately unsorted lengths
PROMPTS = [_prompt(k) for k in (3, 0, 5, 1, 4, 2, 6)]


@pytest.fixture(scope="module")
def spiky(tiny_model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HFBackend]:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("spiky")
    config = LlamaConfig.from_pretrained(tiny_model_path)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(str(out))
    backend = HFBackend(BackendConfig(kind="hf", model=str(out), device="cpu", batch_size=3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: thread sync costs more than it saves on busy cores
    yield backend
    torch.set_num_threads(threads)
    backend.close()


def _one_by_one(backend: HFBackend, prompts: list, params: SamplingParams) -> list:
    return [backend.generate([p], params)[0] for p in prompts]


def test_is_a_backend(tiny_backend: Backend) -> None:
    assert isinstance(tiny_backend, Backend)
    assert isinstance(tiny_backend, HFBackend)
    outs = tiny_backend.generate(PROMPTS[:2], SamplingParams(max_tokens=3), desc="tiny")
    assert [len(g) for g in outs] == [1, 1]
    assert all(c.completion_tokens == 3 and c.finish_reason == "length" for g in outs for c in g)


def test_length_sorted_batches_cover_every_index_once() -> None:
    lengths = [5, 9, 1, 9, 3, 7, 2]
    batches = length_sorted_batches(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [len(b) for b in batches] == [3, 3, 1]
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(lengths, reverse=True)
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches(lengths, 0)


def test_batched_greedy_equals_one_at_a_time_in_order(spiky: HFBackend) -> None:
    params = SamplingParams(max_tokens=6)
    batched = spiky.generate(PROMPTS, params)  # batch_size 3: 3 length-sorted batches
    single = _one_by_one(spiky, PROMPTS, params)
    assert batched == single
    texts = [g[0].text for g in batched]
    assert len(set(texts)) >= 5, texts  # distinct outputs, so a reordering would show
    for prompt, group in zip(PROMPTS, batched, strict=True):
        assert group[0].prompt_tokens == len(spiky.encode([prompt])[0])  # padding not counted


def test_padded_batch_prefill_equals_continuous_batching(
    spiky: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU path (one left-padded prefill) and the CPU path (continuous batching) agree."""
    params = SamplingParams(max_tokens=5)
    assert spiky._continuous(spiky.encode(PROMPTS[:4]))
    rows = spiky.generate(PROMPTS[:4], params)
    monkeypatch.setattr(spiky, "_continuous", lambda seqs: False)
    padded = spiky.generate(PROMPTS[:4], params)
    assert padded == rows
    sampled = spiky.generate(PROMPTS[:2], SamplingParams(n=2, temperature=1.0, max_tokens=3))
    assert [len(g) for g in sampled] == [2, 2]


def _record_rounds(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Per decode round, how many tokens each of its rows had generated before it."""
    rounds: list[list[int]] = []
    decode_round = ContinuousBatcher.decode_round

    def spy(self: ContinuousBatcher, rows: list, *args: object, **kwargs: object) -> None:
        rounds.append([len(r.generated) for r in rows])
        decode_round(self, rows, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ContinuousBatcher, "decode_round", spy)
    return rounds


def test_continuous_batching_refills_rows_and_equals_one_at_a_time(
    spiky: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows end at different steps (a token the model emits midway is made EOS); waiting prompts
    take their places in the batch, and every output equals the prompt decoded alone."""
    free = spiky.generate(PROMPTS, SamplingParams(max_tokens=8))
    emitted = [spiky.tokenizer(g[0].text, add_special_tokens=False)["input_ids"] for g in free]
    eos = max({t for ids in emitted for t in ids[1:6]}, key=lambda t: sum(t in i for i in emitted))
    monkeypatch.setattr(spiky, "eos_ids", frozenset({eos}))
    rounds = _record_rounds(monkeypatch)
    params = SamplingParams(max_tokens=8)
    batched = spiky.generate(PROMPTS, params)  # 7 prompts, 3 rows at a time
    refilled = [r for r in rounds if len(set(r)) > 1]  # a row joined others already decoding
    assert refilled, rounds
    single = _one_by_one(spiky, PROMPTS, params)
    assert batched == single
    lengths = [g[0].completion_tokens for g in batched]
    assert len(set(lengths)) > 1 and min(lengths) < 8, lengths
    assert any(g[0].finish_reason == "stop" for g in batched)


def test_continuous_batching_with_stop_strings_and_samples(spiky: HFBackend) -> None:
    full = spiky.generate(PROMPTS, SamplingParams(max_tokens=10))
    stops = tuple({g[0].text[3:6] for g in full[:3] if g[0].text[3:6].strip()})
    params = SamplingParams(max_tokens=10, stop=stops)
    batched = spiky.generate(PROMPTS, params)
    assert batched == _one_by_one(spiky, PROMPTS, params)
    assert sum(g[0].finish_reason == "stop" for g in batched) >= len(stops)
    for group, ref in zip(batched, full, strict=True):
        assert ref[0].text.startswith(group[0].text)
        assert not any(s in group[0].text for s in stops)
    sampled = spiky.generate(PROMPTS, SamplingParams(n=3, temperature=1.0, max_tokens=4, seed=3))
    assert [len(g) for g in sampled] == [3] * len(PROMPTS)
    assert all(c.completion_tokens == 4 for g in sampled for c in g)


def test_shared_prompt_prefix_is_prefilled_once(
    spiky: HFBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = "Check every calculation twice, then answer in one short sentence. " * 3
    prompts = [
        [{"role": "system", "content": system}, {"role": "user", "content": " ".join(WORDS[k:])}]
        for k in range(5)
    ]
    calls: list[tuple[int, bool]] = []
    forward_kv = ContinuousBatcher.forward_kv

    def spy(self: ContinuousBatcher, tokens: list[int], past: list | None) -> list:
        kv = forward_kv(self, tokens, past)
        assert all(k.is_inference() and v.is_inference() for k, v in kv)  # no autograd graph
        calls.append((len(tokens), past is not None))
        return kv

    monkeypatch.setattr(ContinuousBatcher, "forward_kv", spy)
    params = SamplingParams(max_tokens=6)
    batched = spiky.generate(prompts, params)
    shared, *rows = calls
    assert shared[0] >= MIN_SHARED_PREFIX and not shared[1]  # the common prefix, once
    assert len(rows) == len(prompts) and all(past for _, past in rows)
    assert sum(n for n, _ in rows) + shared[0] < sum(len(s) for s in spiky.encode(prompts))
    assert batched == _one_by_one(spiky, prompts, params)


def test_greedy_is_deterministic_and_n_copies(spiky: HFBackend) -> None:
    first = spiky.generate(PROMPTS[:3], SamplingParams(max_tokens=5, n=2))
    again = spiky.generate(PROMPTS[:3], SamplingParams(max_tokens=5, n=2))
    assert first == again
    assert all(len(g) == 2 and g[0] == g[1] for g in first)


def test_sampling_n_and_seed(spiky: HFBackend) -> None:
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_tokens=4, seed=11)
    a = spiky.generate(PROMPTS[:2], params)
    b = spiky.generate(PROMPTS[:2], params)
    c = spiky.generate(PROMPTS[:2], dataclasses.replace(params, seed=12))
    assert [len(g) for g in a] == [3, 3]
    assert a == b
    assert a != c
    assert all(len({x.text for x in g}) > 1 for g in a)  # samples differ within a prompt


def test_max_tokens_sets_length_and_counts(spiky: HFBackend) -> None:
    outs = spiky.generate(PROMPTS[:4], SamplingParams(max_tokens=4))
    for prompt, group in zip(PROMPTS, outs, strict=False):
        c = group[0]
        assert (c.finish_reason, c.completion_tokens) == ("length", 4)
        assert c.prompt_tokens == len(spiky.encode([prompt])[0])
    longer = spiky.generate(PROMPTS[:4], SamplingParams(max_tokens=7))
    for short, long in zip(outs, longer, strict=True):
        assert long[0].text.startswith(short[0].text)


def test_stop_string_truncates(spiky: HFBackend) -> None:
    full = spiky.generate(PROMPTS[:2], SamplingParams(max_tokens=10))
    for prompt, group in zip(PROMPTS, full, strict=False):
        text = group[0].text
        stop = text[len(text) // 2 : len(text) // 2 + 3]
        assert stop.strip(), text
        [[cut]] = spiky.generate([prompt], SamplingParams(max_tokens=10, stop=("zzqx", stop)))
        assert cut.text == text[: text.find(stop)]
        assert cut.finish_reason == "stop"
        assert 1 <= cut.completion_tokens < 10


def test_eos_ends_a_row_and_is_counted(spiky: HFBackend) -> None:
    tok = spiky.tokenizer
    body = tok("seven apples", add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    c = spiky._finish([*body, eos, spiky.pad_id, spiky.pad_id], 9, SamplingParams(max_tokens=10))
    assert (c.text, c.finish_reason) == ("seven apples", "stop")
    assert (c.prompt_tokens, c.completion_tokens) == (9, len(body) + 1)


def test_assistant_prefill_is_continued(spiky: HFBackend) -> None:
    prefill = "**Answer**: \\boxed{"
    cont = spiky.render(_prompt(1, prefill))
    fresh = spiky.render(_prompt(1))
    assert cont.endswith(prefill)
    assert cont.count("<|im_start|>assistant") == 1
    assert fresh.endswith("<|im_start|>assistant\n")
    assert cont == fresh + prefill
    [[c]] = spiky.generate([_prompt(1, prefill)], SamplingParams(max_tokens=3))
    assert c.prompt_tokens == len(spiky.encode([_prompt(1, prefill)])[0])
    assert c.prompt_tokens > len(spiky.encode([_prompt(1)])[0])


def _reference_logprob(backend: HFBackend, prompt_ids: list[int], choice_ids: list[int]) -> float:
    import torch

    ids = torch.tensor([prompt_ids + choice_ids])
    with torch.inference_mode():
        logp = backend.model(input_ids=ids).logits[0].float().log_softmax(-1)
    n = len(prompt_ids)
    return sum(float(logp[n - 1 + j, t]) for j, t in enumerate(choice_ids))


def test_choose_matches_full_sequence_loglik(spiky: HFBackend) -> None:
    prompts = [_prompt(k, "**Answer**: \\boxed{") for k in (4, 0, 2, 5)]
    choices = ["1", "-1", "12", " seven apples"]
    picks = spiky.choose(prompts, choices)
    choice_ids = [spiky.tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
    assert max(len(c) for c in choice_ids) > 1  # the cached multi-token path is exercised
    for prompt, pick in zip(prompts, picks, strict=True):
        ref = [_reference_logprob(spiky, spiky.encode([prompt])[0], c) for c in choice_ids]
        assert pick == max(range(len(ref)), key=ref.__getitem__)
    scores = spiky.score_choices(spiky.encode(prompts), choice_ids)
    ref0 = [_reference_logprob(spiky, spiky.encode([prompts[0]])[0], c) for c in choice_ids]
    assert all(math.isclose(a, b, abs_tol=1e-3) for a, b in zip(scores[0], ref0, strict=True))
    assert spiky.stats.extra["choose_prompts"] >= 4


def test_row_choice_scores_equal_the_padded_batch(spiky: HFBackend) -> None:
    """The CPU path (shared prefix once, each prompt alone) and the GPU path (one padded batch)
    give the same choice log-likelihoods, with and without a shared prefix."""
    system = "Check every calculation twice, then answer in one short sentence. " * 3
    long_prefix = [
        [{"role": "system", "content": system}, {"role": "user", "content": " ".join(WORDS[k:])}]
        for k in range(4)
    ]
    choice_ids = [spiky.tokenizer(c, add_special_tokens=False)["input_ids"] for c in ["1}", "-1}"]]
    for prompts in (PROMPTS[:4], long_prefix):
        seqs = spiky.encode(prompts)
        rows = spiky.score_choices(seqs, choice_ids)
        padded = spiky._score_choices_padded(seqs, choice_ids)
        for a, b in zip(rows, padded, strict=True):
            assert all(math.isclose(x, y, abs_tol=1e-3) for x, y in zip(a, b, strict=True))


def test_choose_prefers_the_greedy_continuation(spiky: HFBackend) -> None:
    prompts = [_prompt(k, "Step 1:") for k in range(5)]
    greedy = [g[0].text for g in spiky.generate(prompts, SamplingParams(max_tokens=1))]
    single = [
        (p, g)
        for p, g in zip(prompts, greedy, strict=True)
        if len(spiky.tokenizer(g, add_special_tokens=False)["input_ids"]) == 1
    ]
    assert len(single) >= 3  # the decoded greedy token re-encodes to itself
    for p, g in single:
        choices = [" seven", g, "-1"] if g != " seven" else ["-1", g]
        assert spiky.choose([p], choices) == [choices.index(g)]
    with pytest.raises(ValueError, match="at least one choice"):
        spiky.choose(prompts, [])


def test_stats_accumulate(spiky: HFBackend) -> None:
    before = (spiky.stats.prompts, spiky.stats.completions, spiky.stats.completion_tokens)
    outs = spiky.generate(PROMPTS[:3], SamplingParams(max_tokens=3, n=2))
    made = sum(c.completion_tokens for g in outs for c in g)
    assert spiky.stats.prompts == before[0] + 3
    assert spiky.stats.completions == before[1] + 6
    assert spiky.stats.completion_tokens == before[2] + made
    assert spiky.stats.seconds > 0 and spiky.stats.tokens_per_second > 0


def test_empty_input_and_bad_config(spiky: HFBackend, tmp_path: Path) -> None:
    assert spiky.generate([], SamplingParams()) == []
    assert spiky.choose([], ["1", "-1"]) == []
    with pytest.raises(ValueError, match="at least one message"):
        spiky.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="batch_size"):
        HFBackend(BackendConfig(model=str(tmp_path), batch_size=0))


def test_stop_string_matcher_is_built_once_per_stop_set(spiky: HFBackend) -> None:
    """The matcher preprocesses the whole vocabulary: a second request with the same stop strings
    reuses it and is faster by about that time (both generate paths go through the cache)."""
    import time

    from transformers import StopStringCriteria

    stops = ("qzv", "xq zk!")
    t0 = time.perf_counter()
    StopStringCriteria(spiky.tokenizer, list(stops))  # what building one costs (uncached)
    build_s = time.perf_counter() - t0
    params = SamplingParams(max_tokens=2, stop=stops)
    took = []
    for _ in range(2):
        t0 = time.perf_counter()
        spiky.generate([_prompt(1)], params)
        took.append(time.perf_counter() - t0)
    assert spiky.stop_criterion(stops) is spiky.stop_criterion(list(stops))
    assert spiky.stop_criterion(stops) is not spiky.stop_criterion(stops[:1])
    assert took[1] < took[0] - build_s / 2, f"build {build_s:.2f}s, requests {took}"
