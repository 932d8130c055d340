"""Dynamic batching: concurrent callers share generate calls; results go back to their callers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest

from deepcritic.generation import Completion, GenerationStats, Prompt, SamplingParams, StopCheck
from deepcritic.generation.base import accepts_should_stop
from deepcritic.serve.batching import DynamicBatcher, GenerationFailed, ServerBusy
from deepcritic.serve.config import BatchingConfig


class RecordingBackend:
    """A Backend that echoes each prompt's text and records every generate call."""

    name = "recording"

    def __init__(self, delay: float = 0.02, fail_on: str | None = None):
        self.stats = GenerationStats()
        self.calls: list[tuple[int, SamplingParams]] = []
        self.threads: set[str] = set()
        self.delay, self.fail_on = delay, fail_on

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, desc: str | None = None
    ) -> list[list[Completion]]:
        self.threads.add(threading.current_thread().name)
        self.calls.append((len(prompts), params))
        time.sleep(self.delay)
        texts = [p[-1]["content"] for p in prompts]
        if self.fail_on in texts:
            raise RuntimeError("backend exploded")
        return [
            [Completion(f"{t}#{i}", completion_tokens=1) for i in range(params.n)] for t in texts
        ]

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        return [0 for _ in prompts]

    def close(self) -> None:
        pass


def _prompt(i: int | str) -> Prompt:
    return [{"role": "user", "content": str(i)}]


async def _many(batcher: DynamicBatcher, n: int, params: SamplingParams) -> list[str]:
    outs = await asyncio.gather(*(batcher.generate([_prompt(i)], params) for i in range(n)))
    await batcher.aclose()
    return [o[0][0].text for o in outs]


def test_concurrent_requests_share_generate_calls() -> None:
    backend = RecordingBackend()
    batcher = DynamicBatcher(backend, BatchingConfig(max_batch_size=8, max_wait_ms=20))
    texts = asyncio.run(_many(batcher, 20, SamplingParams(max_tokens=4)))
    assert texts == [f"{i}#0" for i in range(20)]  # every caller got its own answer
    sizes = [n for n, _ in backend.calls]
    assert sum(sizes) == 20 and max(sizes) == 8 and len(sizes) <= 4
    assert backend.threads == {"deepcritic-generate_0"}  # never on the event loop thread


def test_disabled_means_one_call_per_request() -> None:
    backend = RecordingBackend(delay=0.001)
    batcher = DynamicBatcher(backend, BatchingConfig(enabled=False))
    texts = asyncio.run(_many(batcher, 6, SamplingParams(n=2)))
    assert texts == [f"{i}#0" for i in range(6)]
    assert [n for n, _ in backend.calls] == [1] * 6


def test_different_sampling_params_get_separate_calls() -> None:
    backend = RecordingBackend()
    batcher = DynamicBatcher(backend, BatchingConfig(max_batch_size=16, max_wait_ms=20))

    async def go() -> list[list[list[Completion]]]:
        a, b = SamplingParams(max_tokens=4), SamplingParams(n=3, temperature=1.0)
        jobs = [batcher.generate([_prompt(i)], a if i % 2 else b) for i in range(6)]
        outs = await asyncio.gather(*jobs)
        await batcher.aclose()
        return outs

    outs = asyncio.run(go())
    assert [len(o[0]) for o in outs] == [3, 1, 3, 1, 3, 1]
    assert sorted((n, p.n) for n, p in backend.calls) == [(3, 1), (3, 3)]


def test_a_failing_batch_fails_its_callers_and_the_worker_survives() -> None:
    backend = RecordingBackend(fail_on="boom")
    batcher = DynamicBatcher(backend, BatchingConfig(max_batch_size=4, max_wait_ms=5))

    async def go() -> str:
        with pytest.raises(GenerationFailed, match="generation failed") as failed:
            await batcher.generate([_prompt("boom")], SamplingParams())
        assert "exploded" in str(failed.value.cause)
        out = await batcher.generate([_prompt("after")], SamplingParams())
        await batcher.aclose()
        return out[0][0].text

    assert asyncio.run(go()) == "after#0"


def test_full_queue_is_refused_not_queued() -> None:
    backend = RecordingBackend(delay=0.05)
    batcher = DynamicBatcher(backend, BatchingConfig(max_batch_size=2, max_queue=3))

    async def go() -> list[object]:
        jobs = [batcher.generate([_prompt(i)], SamplingParams()) for i in range(5)]
        outs = await asyncio.gather(*jobs, return_exceptions=True)
        assert batcher.waiting == 0
        await batcher.aclose()
        return outs

    outs = asyncio.run(go())
    assert sum(isinstance(o, ServerBusy) for o in outs) == 2
    assert sum(isinstance(o, list) for o in outs) == 3


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingConfig(max_wait_ms=-1)


def test_cancelled_callers_queued_prompts_never_reach_the_model() -> None:
    backend = RecordingBackend(delay=0.2)
    seen: list[tuple[str, int]] = []
    batcher = DynamicBatcher(
        backend, BatchingConfig(max_batch_size=2, max_wait_ms=0),
        on_cancel=lambda stage, n: seen.append((stage, n)),
    )  # fmt: skip

    async def go() -> str:
        first = asyncio.ensure_future(batcher.generate([_prompt("first")], SamplingParams()))
        await asyncio.sleep(0.05)  # "first" is generating now (0.2 s)
        gone = [
            asyncio.ensure_future(batcher.generate([_prompt(f"gone{i}")], SamplingParams()))
            for i in range(5)
        ]
        await asyncio.sleep(0.01)
        for task in gone:  # their clients disconnect while they wait in the queue
            task.cancel()
        first.cancel()  # and the first client gives up during its generate call
        out = await batcher.generate([_prompt("after")], SamplingParams())
        assert all(t.cancelled() for t in [first, *gone])
        assert batcher.waiting == 0
        await batcher.aclose()
        return out[0][0].text

    assert asyncio.run(go()) == "after#0"
    assert [n for n, _ in backend.calls] == [1, 1]  # "first", then "after": no "gone" prompt
    assert batcher.cancelled == {"queued": 5, "generating": 1}
    assert sorted(seen) == [("generating", 1)] + [("queued", 1)] * 5


def test_disabled_batching_skips_cancelled_prompts_too() -> None:
    backend = RecordingBackend(delay=0.1)
    batcher = DynamicBatcher(backend, BatchingConfig(enabled=False))

    async def go() -> None:
        tasks = [
            asyncio.ensure_future(batcher.generate([_prompt(i)], SamplingParams()))
            for i in range(4)
        ]
        await asyncio.sleep(0.03)
        for t in tasks[1:]:
            t.cancel()
        await tasks[0]
        await asyncio.sleep(0.15)
        await batcher.aclose()

    asyncio.run(go())
    assert [n for n, _ in backend.calls] == [1]
    assert batcher.cancelled == {"queued": 3, "generating": 0}


class SteppingBackend(RecordingBackend):
    """Decodes ``max_tokens`` steps of 5 ms; asks ``should_stop`` about every row at each step."""

    def __init__(self) -> None:
        super().__init__(delay=0.0)
        self.tokens: dict[str, int] = {}

    def generate(  # type: ignore[override]
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        desc: str | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[list[Completion]]:
        self.calls.append((len(prompts), params))
        live = {i: 0 for i in range(len(prompts))}
        for _ in range(params.max_tokens):
            if not live:
                break
            time.sleep(0.005)
            for i in list(live):
                live[i] += 1
                if should_stop is not None and should_stop(i):
                    self.tokens[prompts[i][-1]["content"]] = live.pop(i)
        for i, n in live.items():
            self.tokens[prompts[i][-1]["content"]] = n
        return [[Completion(p[-1]["content"], completion_tokens=1)] * params.n for p in prompts]


def test_a_generating_prompt_of_a_cancelled_caller_is_stopped_the_others_finish() -> None:
    backend = SteppingBackend()
    batcher = DynamicBatcher(backend, BatchingConfig(max_batch_size=4, max_wait_ms=20))
    params = SamplingParams(max_tokens=200)  # 1 s uncancelled

    async def go() -> list[str]:
        jobs = [asyncio.ensure_future(batcher.generate([_prompt(i)], params)) for i in range(3)]
        await asyncio.sleep(0.15)  # all three are generating in one call
        jobs[1].cancel()
        outs = await asyncio.gather(jobs[0], jobs[2])
        await batcher.aclose()
        return [o[0][0].text for o in outs]

    assert asyncio.run(go()) == ["0", "2"]
    assert [n for n, _ in backend.calls] == [3]
    assert backend.tokens["0"] == backend.tokens["2"] == 200
    assert backend.tokens["1"] < 100, backend.tokens  # stopped mid-call, not run to the end
    assert batcher.cancelled == {"queued": 0, "generating": 1}


def test_should_stop_is_passed_only_to_backends_that_take_it() -> None:
    assert accepts_should_stop(SteppingBackend())
    assert not accepts_should_stop(RecordingBackend())  # called as before: no TypeError


def test_one_failing_row_fails_only_its_own_caller() -> None:
    """8 good prompts batched with 1 that makes the backend raise: the 8 are answered, the bad one
    alone gets GenerationFailed (the batch is retried one prompt at a time)."""
    backend = RecordingBackend(fail_on="boom", delay=0.01)
    batcher = DynamicBatcher(backend, BatchingConfig(max_batch_size=16, max_wait_ms=50))

    async def go() -> list[Any]:
        texts = [f"good{i}" for i in range(4)] + ["boom"] + [f"good{i}" for i in range(4, 8)]
        calls = [batcher.generate([_prompt(t)], SamplingParams()) for t in texts]
        outs = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.aclose()
        return outs

    outs = asyncio.run(go())
    assert isinstance(outs[4], GenerationFailed)
    good = [o for i, o in enumerate(outs) if i != 4]
    assert [o[0][0].text for o in good] == [f"good{i}#0" for i in range(8)]
    assert backend.calls[0][0] == 9  # they were batched together first
