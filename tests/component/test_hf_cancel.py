"""Stopping prompts mid-generation (``should_stop``) in the HF backend, on the real tiny model.

The random tiny model never emits EOS, so without cancellation every row generates exactly
``max_tokens`` tokens: a cancelled row with far fewer tokens was stopped, and a row beside it
with the full budget was not disturbed.
"""

from __future__ import annotations

from typing import Any

import pytest

from deepcritic.generation import SamplingParams
from deepcritic.generation.continuous import ContinuousBatcher
from deepcritic.generation.hf import HFBackend

BUDGET = 48


def _prompt(k: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Question {k}: how many apples are {k} plus {k}?"}]


PROMPTS = [_prompt(k) for k in range(4)]


class StopAfter:
    """``should_stop``: true for ``prompt`` once it has been asked about ``calls`` times (the
    batcher asks about every decoding prompt once per step)."""

    def __init__(self, prompt: int, calls: int) -> None:
        self.prompt, self.calls, self.asked = prompt, calls, 0

    def __call__(self, p: int) -> bool:
        if p != self.prompt:
            return False
        self.asked += 1
        return self.asked > self.calls


def test_continuous_run_retires_a_cancelled_row_and_refills_its_slot(
    tiny_backend: HFBackend,
) -> None:
    b = tiny_backend
    ids = b.encode(PROMPTS)
    kwargs = b._generate_kwargs(SamplingParams(max_tokens=BUDGET))
    del kwargs["max_new_tokens"]
    batcher = ContinuousBatcher(b.model, b.pad_id, b.eos_ids, kwargs)
    rounds: list[int] = []
    decode = batcher.decode_round

    def spy(rows: Any, *args: Any, **kw: Any) -> None:
        rounds.append(len(rows))
        decode(rows, *args, **kw)

    batcher.decode_round = spy  # type: ignore[method-assign]
    stop = StopAfter(prompt=2, calls=5)
    rows = batcher.run(ids, copies=1, capacity=2, max_new_tokens=BUDGET,
                       is_finished=lambda r: len(r.generated) >= BUDGET,
                       should_stop=lambda p: p == 3 or stop(p))  # fmt: skip
    assert [r.cancelled for r in rows] == [False, False, True, True]
    assert [len(r.generated) for r in rows[:2]] == [BUDGET, BUDGET]
    assert 1 <= len(rows[2].generated) <= 6, len(rows[2].generated)  # stopped within a step
    assert rows[3].generated == []  # cancelled while waiting: never prefilled
    assert all(r.kv == [] for r in rows)
    assert max(rounds) == 2  # capacity respected; prompt 2's slot went to a waiting prompt


@pytest.mark.parametrize("path", ["continuous", "padded"])
def test_generate_cancels_one_prompt_and_the_others_are_unchanged(
    tiny_backend: HFBackend, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "padded":  # the GPU path (one padded batch), run on CPU
        monkeypatch.setattr(tiny_backend, "_continuous", lambda seqs: False)
    params = SamplingParams(max_tokens=BUDGET)
    plain = tiny_backend.generate(PROMPTS, params)
    stop = StopAfter(prompt=1, calls=4)
    outs = tiny_backend.generate(PROMPTS, params, should_stop=stop)
    assert [o[0].finish_reason for o in outs] == ["length", "cancelled", "length", "length"]
    assert outs[1][0].completion_tokens < BUDGET // 4, outs[1][0]
    assert plain[1][0].text.startswith(outs[1][0].text)  # what it had generated is kept
    for i in (0, 2, 3):
        assert outs[i] == plain[i]


@pytest.mark.parametrize("path", ["continuous", "padded"])
def test_generate_with_every_prompt_cancelled_returns_at_once(
    tiny_backend: HFBackend, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    if path == "padded":
        monkeypatch.setattr(tiny_backend, "_continuous", lambda seqs: False)
    outs = tiny_backend.generate(PROMPTS[:2], SamplingParams(n=2, temperature=1.0, max_tokens=BUDGET),
                                 should_stop=lambda p: True)  # fmt: skip
    assert [[c.finish_reason for c in o] for o in outs] == [["cancelled"] * 2] * 2
    assert all(c.completion_tokens == 0 and c.text == "" for o in outs for c in o)
