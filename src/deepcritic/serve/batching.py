"""Dynamic batching: concurrent requests share one ``backend.generate`` call.

Policy: a worker task takes the oldest waiting prompt, then keeps collecting until the batch holds
``max_batch_size`` prompts or ``max_wait_ms`` has passed since that oldest prompt arrived. Under
load the prompts that queued while the previous batch was generating have already waited longer
than ``max_wait_ms``, so the next batch is simply "everything waiting" (up to the max) and no extra
delay is added; a lone request waits at most ``max_wait_ms``. Prompts with different sampling
parameters go to separate generate calls (one ``SamplingParams`` per call).

``generate`` is blocking, so it runs on a single worker thread (never on the event loop, and never
two at once: the HF model is not thread-safe). With batching disabled every request is its own
generate call, still one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from deepcritic.generation import Backend, Completion, Prompt, SamplingParams
from deepcritic.serve.config import BatchingConfig

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, float, Sequence[Sequence[Completion]]], None]


class ServerBusy(RuntimeError):
    """More requests are waiting than ``batching.max_queue`` allows (answered with 503)."""


@dataclass
class _Item:
    prompt: Prompt
    params: SamplingParams
    future: asyncio.Future[list[Completion]]
    enqueued: float


class DynamicBatcher:
    """Collects prompts from concurrent requests into batched generate calls."""

    def __init__(
        self, backend: Backend, config: BatchingConfig, *, observe: BatchObserver | None = None
    ):
        self.backend = backend
        self.config = config
        self._observe = observe
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepcritic-generate")
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._waiting = 0  # prompts submitted and not answered yet

    @property
    def waiting(self) -> int:
        return self._waiting

    async def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        """Completions for ``prompts`` (``params.n`` each), batched with other callers' prompts."""
        if self._waiting + len(prompts) > self.config.max_queue:
            raise ServerBusy(
                f"{self._waiting} prompts are waiting (batching.max_queue={self.config.max_queue})"
            )
        self._waiting += len(prompts)
        try:
            if not self.config.enabled:
                return await self._call(list(prompts), params)
            return await self._enqueue(prompts, params)
        finally:
            self._waiting -= len(prompts)

    async def _enqueue(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[list[Completion]]:
        loop = asyncio.get_running_loop()
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run(), name="deepcritic-batcher")
        items = [_Item(p, params, loop.create_future(), loop.time()) for p in prompts]
        for item in items:
            self._queue.put_nowait(item)
        return list(await asyncio.gather(*(item.future for item in items)))

    async def _call(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Completion]]:
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        outs = await loop.run_in_executor(self._executor, self.backend.generate, prompts, params)
        if len(outs) != len(prompts):
            raise RuntimeError(f"backend returned {len(outs)} results for {len(prompts)} prompts")
        if self._observe is not None:
            self._observe(len(prompts), time.perf_counter() - start, outs)
        return outs

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._dispatch(batch)
            except Exception:  # never let the worker die: that would hang every later request
                log.exception("batch of %d prompts failed", len(batch))

    async def _collect(self) -> list[_Item]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = await self._queue.get()
        batch = [first]
        deadline = first.enqueued + self.config.max_wait_ms / 1000.0
        while len(batch) < self.config.max_batch_size:
            with contextlib.suppress(asyncio.QueueEmpty):
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _dispatch(self, batch: list[_Item]) -> None:
        groups: dict[SamplingParams, list[_Item]] = {}
        for item in batch:
            if not item.future.done():  # a client that went away cancels its future
                groups.setdefault(item.params, []).append(item)
        for params, items in groups.items():
            try:
                outs = await self._call([it.prompt for it in items], params)
            except Exception as e:
                log.error("generate failed for a batch of %d: %s", len(items), e)
                for it in items:
                    if not it.future.done():
                        it.future.set_exception(e)
                continue
            for it, out in zip(items, outs, strict=True):
                if not it.future.done():
                    it.future.set_result(out)

    async def aclose(self) -> None:
        """Stop the worker task and the generate thread."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        self._executor.shutdown(wait=False, cancel_futures=True)
