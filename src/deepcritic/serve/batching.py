"""Dynamic batching: concurrent requests share one ``backend.generate`` call.

Policy: a worker task takes the oldest waiting prompt, then keeps collecting until the batch holds
``max_batch_size`` prompts or ``max_wait_ms`` has passed since that oldest prompt arrived. Under
load the prompts that queued while the previous batch was generating have already waited longer
than ``max_wait_ms``, so the next batch is simply "everything waiting" (up to the max) and no extra
delay is added; a lone request waits at most ``max_wait_ms``. Prompts with different sampling
parameters go to separate generate calls (one ``SamplingParams`` per call).

``generate`` is blocking, so it runs on a single worker thread (never on the event loop, and never
two at once: the HF model is not thread-safe). With batching disabled every prompt is its own
generate call, still one at a time.

Cancellation: when a caller is cancelled (the server cancels the request of a client that
disconnected), its prompts that are still queued are dropped before they reach the model (they
take no batch slot), and counted as ``queued``. A prompt whose generate call has already started
is counted as ``generating`` and flagged: the batcher passes ``should_stop`` (each row's flag) to
``Backend.generate``, which stops that row at its next decode step (the HF backend frees its
batch slot; see each backend for how soon), while the other rows of the call go on. Its partial
result is discarded. A backend whose ``generate`` has no ``should_stop`` runs it to the end.

Isolation: a generate call that raises (a decode, tokenizer, sampling-parameter or engine error on
one row) is retried one prompt at a time, so the error reaches only the callers whose prompt fails
on its own (as :class:`GenerationFailed`, a 500 in the endpoint's error format); every batch-mate
gets its completions. This holds for every backend, whatever it does inside ``generate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from deepcritic.generation import Backend, Completion, Prompt, SamplingParams
from deepcritic.generation.base import accepts_should_stop
from deepcritic.serve.config import BatchingConfig

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, float, Sequence[Sequence[Completion]]], None]
CancelObserver = Callable[[str, int], None]  # (stage "queued" | "generating", prompts)


class ServerBusy(RuntimeError):
    """More requests are waiting than ``batching.max_queue`` allows (answered with 503)."""


class GenerationFailed(RuntimeError):
    """The backend failed on this prompt, alone in its generate call (answered with 500 for
    this request only; its batch-mates were generated without it)."""

    def __init__(self, cause: BaseException):
        super().__init__(f"generation failed for this request ({type(cause).__name__})")
        self.cause = cause


@dataclass
class _Item:
    prompt: Prompt
    params: SamplingParams
    future: asyncio.Future[list[Completion]]
    enqueued: float
    started: bool = False  # its generate call has begun
    # set (on the event loop) when its caller has gone; read by the generate thread
    gone: threading.Event = field(default_factory=threading.Event)


class DynamicBatcher:
    """Collects prompts from concurrent requests into batched generate calls."""

    def __init__(
        self,
        backend: Backend,
        config: BatchingConfig,
        *,
        observe: BatchObserver | None = None,
        on_cancel: CancelObserver | None = None,
    ):
        self.backend = backend
        self.config = config
        self._observe = observe
        self._on_cancel = on_cancel
        self.cancelled = {"queued": 0, "generating": 0}  # prompts of callers that went away
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepcritic-generate")
        self._queue: asyncio.Queue[_Item] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._waiting = 0  # prompts submitted and not answered yet
        self._stoppable = accepts_should_stop(backend)

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
        try:
            return list(await asyncio.gather(*(item.future for item in items)))
        except asyncio.CancelledError:
            self._count_cancelled(items)
            raise

    def _count_cancelled(self, items: Sequence[_Item]) -> None:
        """Cancel the caller's unanswered prompts (queued ones are then skipped) and count them."""
        gone = [it for it in items if it.future.cancelled() or it.future.cancel()]
        for it in gone:
            it.gone.set()  # a generating row stops at its next decode step
        counts = {
            "queued": sum(not it.started for it in gone),
            "generating": sum(it.started for it in gone),
        }
        for stage, n in counts.items():
            if n:
                self.cancelled[stage] += n
                if self._on_cancel is not None:
                    self._on_cancel(stage, n)
        log.info("caller went away: dropped %d queued prompt(s); %d were already generating",
                 counts["queued"], counts["generating"])  # fmt: skip

    async def _call(self, items: list[_Item], params: SamplingParams) -> list[list[Completion]]:
        loop = asyncio.get_running_loop()
        prompts = [it.prompt for it in items]
        call = functools.partial(self.backend.generate, prompts, params)
        if self._stoppable:
            call = functools.partial(call, should_stop=lambda i: items[i].gone.is_set())
        start = time.perf_counter()
        outs = await loop.run_in_executor(self._executor, call)
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
        while first.future.done():  # its caller went away while it waited
            first = await self._queue.get()
        batch = [first]
        deadline = first.enqueued + self.config.max_wait_ms / 1000.0
        size = self.config.max_batch_size if self.config.enabled else 1
        while len(batch) < size:
            item: _Item | None = None
            with contextlib.suppress(asyncio.QueueEmpty):
                item = self._queue.get_nowait()
            if item is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if not item.future.done():
                batch.append(item)
        return batch

    async def _dispatch(self, batch: list[_Item]) -> None:
        groups: dict[SamplingParams, list[_Item]] = {}
        for item in batch:
            groups.setdefault(item.params, []).append(item)
        for params, group in groups.items():
            items = [it for it in group if not it.future.done()]  # callers still waiting
            if not items:
                continue
            for it in items:
                it.started = True
            await self._generate_isolated(items, params)

    async def _generate_isolated(self, items: list[_Item], params: SamplingParams) -> None:
        """One generate call for ``items``; if it fails, each item again on its own, so only the
        rows that fail by themselves get the error and their batch-mates are answered."""
        try:
            outs = await self._call(items, params)
        except Exception as e:
            if len(items) == 1:
                log.error("generate failed for one prompt: %s: %s", type(e).__name__, e)
                if not items[0].future.done():
                    items[0].future.set_exception(GenerationFailed(e))
                return
            log.warning("generate failed for a batch of %d (%s: %s): retrying each prompt alone",
                        len(items), type(e).__name__, e)  # fmt: skip
            for it in items:
                if not it.future.done():  # its caller may have gone meanwhile
                    await self._generate_isolated([it], params)
            return
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
