"""The critic as a ``kserve.Model``: validated requests -> one critique prompt per solution ->
batched generate -> the one grader (either prompt set's format) -> response objects (schema in :mod:`deepcritic.serve.schema`).

The HTTP layer (:mod:`deepcritic.serve.routes`) parses and validates the body into a
:class:`ParsedPayload`, calls the model (KServe's preprocess -> predict -> postprocess, with its
latency metrics) and renders the v1 or v2 response. ``ready`` is true only between ``load()`` and
``stop()``: KServe's ``start()`` does not mark an unloaded model ready.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from kserve import Model

from deepcritic.generation import Backend, make_backend
from deepcritic.serve.batching import DynamicBatcher
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.loading import load_tokenizer, resolve_critic, special_tokens, token_counter
from deepcritic.serve.metrics import serve_metrics
from deepcritic.serve.schema import (
    CritiqueRequest,
    ModelInfo,
    TokenCounter,
    build_response,
    check_prompt_tokens,
)
from deepcritic.serve.v2 import V2Request

log = logging.getLogger(__name__)


@dataclass
class ParsedPayload:
    requests: list[CritiqueRequest]
    batched: bool  # v1 ``instances`` (answered as ``predictions``) or v2 (always a batch)
    protocol: str  # v1 | v2
    v2: V2Request | None = None


class CriticModel(Model):
    """Serves critiques. ``load()`` resolves ``config.model_uri`` and builds the backend."""

    def __init__(
        self,
        config: ServeConfig,
        *,
        backend: Backend | None = None,
        info: ModelInfo | None = None,
    ):
        super().__init__(config.model_name)
        self.ready = False
        self.config = config
        self.backend = backend
        self.info = info
        self.batcher: DynamicBatcher | None = None
        self.special_tokens: tuple[str, ...] = ()
        self._count_tokens: TokenCounter | None = None
        self.metrics = serve_metrics()

    def load(self) -> bool:
        if self.backend is None:
            self.info = resolve_critic(
                self.config.model_uri,
                model_name=self.config.model_name,
                tracking_uri=self.config.tracking_uri,
                download_dir=self.config.download_dir,
            )
            log.info("serving %s v%s from %s", self.info.name, self.info.version, self.info.path)
            self.backend = make_backend(replace(self.config.generation, model=self.info.path))
        if self.info is None:
            self.info = ModelInfo(self.config.model_name, "unknown", self.config.model_uri)
        path = self.info.path or self.config.generation.model
        tokenizer = load_tokenizer(self.backend, path, self.config.generation.trust_remote_code)
        self._count_tokens = token_counter(tokenizer)
        self.special_tokens = special_tokens(tokenizer)
        batcher = DynamicBatcher(
            self.backend, self.config.batching, observe=self._observe, on_cancel=self._cancelled
        )
        self.batcher = batcher
        # read at every scrape: prompts queued or generating right now
        self.metrics.queue_depth.labels(model_name=self.name).set_function(lambda: batcher.waiting)
        self.ready = True
        return self.ready

    @property
    def count_tokens(self) -> TokenCounter:
        """Tokens of each text, with the served tokenizer (``load()`` first)."""
        assert self._count_tokens is not None, "load() was not called"
        return self._count_tokens

    def start(self) -> None:
        """KServe calls this on registration; readiness stays what ``load()`` made it."""

    def _observe(self, size: int, seconds: float, outs: Any) -> None:
        self.metrics.observe_batch(size, seconds, outs, self.name)

    def _cancelled(self, stage: str, prompts: int) -> None:
        self.metrics.cancelled.labels(model_name=self.name, stage=stage).inc(prompts)

    def stop(self) -> None:
        self.ready = False
        if self.backend is not None:
            self.backend.close()

    def validate(self, payload: Any) -> Any:
        return payload  # the HTTP layer and preprocess validated every field

    async def preprocess(
        self, payload: ParsedPayload, headers: dict[str, str] | None = None
    ) -> ParsedPayload:  # type: ignore[override]
        assert self._count_tokens is not None, "load() was not called"
        check_prompt_tokens(
            payload.requests,
            self._count_tokens,
            self.config,
            batched=payload.batched,
            v2=payload.protocol == "v2",
        )
        return payload

    async def predict(  # type: ignore[override]
        self,
        payload: ParsedPayload,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> tuple[ParsedPayload, list[Any]]:
        assert self.batcher is not None, "load() was not called"
        tokens, prompt_set = self.special_tokens, self.config.prompt_set
        tasks = [
            asyncio.ensure_future(self.batcher.generate([r.prompt(tokens, prompt_set)], r.params))
            for r in payload.requests
        ]
        try:
            outs = await asyncio.gather(*tasks)
        except BaseException:  # one instance refused (queue full) or the client went away:
            for task in tasks:  # the other instances are not generated for nobody
                task.cancel()
            raise
        return payload, [o[0] for o in outs]

    async def postprocess(  # type: ignore[override]
        self,
        result: tuple[ParsedPayload, list[Any]],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """One response object per request (rendered as v1 or v2 by the HTTP layer)."""
        parsed, outs = result
        assert self.info is not None, "load() was not called"
        info = self.info
        return [build_response(r, o, info) for r, o in zip(parsed.requests, outs, strict=True)]
