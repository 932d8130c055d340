"""The critic as a ``kserve.Model``: validate -> one critique prompt per solution -> batched generate
-> the one grader -> response (schema in :mod:`deepcritic.serve.schema`)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from kserve import Model
from kserve.errors import InvalidInput
from kserve.model import InferenceVerb
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from deepcritic.generation import Backend, make_backend
from deepcritic.serve.batching import DynamicBatcher, ServerBusy
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.loading import load_tokenizer, resolve_critic, token_counter
from deepcritic.serve.metrics import serve_metrics
from deepcritic.serve.schema import (
    CritiqueRequest,
    ModelInfo,
    TokenCounter,
    build_response,
    check_prompt_tokens,
    parse_v1,
    parse_v2,
)

log = logging.getLogger(__name__)


@dataclass
class ParsedPayload:
    requests: list[CritiqueRequest]
    batched: bool  # v1 ``instances`` (answered as ``predictions``) or v2 (always a batch)
    protocol: str  # v1 | v2
    request_id: str | None = None


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
        self.ready = False  # an OpenAI mixin marks itself ready in __init__: not before load()
        self.config = config
        self.backend = backend
        self.info = info
        self.batcher: DynamicBatcher | None = None
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
        self.batcher = DynamicBatcher(self.backend, self.config.batching, observe=self._observe)
        self.ready = True
        return self.ready

    def _observe(self, size: int, seconds: float, outs: Any) -> None:
        self.metrics.observe_batch(size, seconds, outs, self.name)
        if self.batcher is not None:
            self.metrics.queue_depth.labels(model_name=self.name).set(self.batcher.waiting)

    def stop(self) -> None:
        self.ready = False
        if self.backend is not None:
            self.backend.close()

    async def __call__(  # type: ignore[override]
        self,
        body: Any,
        headers: dict[str, str] | None = None,
        verb: InferenceVerb = InferenceVerb.PREDICT,
    ) -> Any:
        """KServe's pre/predict/post pipeline, plus outcome and latency metrics."""
        start = time.perf_counter()
        protocol = "v2" if isinstance(body, InferRequest) else "v1"
        code = "500"
        try:
            result = await super().__call__(body, headers, verb)
            code = "200"
            return result
        except InvalidInput:
            code = "400"
            raise
        except ServerBusy:
            code = "503"
            raise
        finally:
            self.metrics.requests.labels(model_name=self.name, protocol=protocol, code=code).inc()
            self.metrics.latency.labels(model_name=self.name).observe(time.perf_counter() - start)

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess already validated every field

    async def preprocess(
        self, payload: Any, headers: dict[str, str] | None = None
    ) -> ParsedPayload:  # type: ignore[override]
        if isinstance(payload, InferRequest):
            parsed = ParsedPayload(parse_v2(payload, self.config), True, "v2", payload.id)
        else:
            requests, batched = parse_v1(payload, self.config)
            parsed = ParsedPayload(requests, batched, "v1")
        assert self._count_tokens is not None, "load() was not called"
        check_prompt_tokens(
            parsed.requests, self._count_tokens, self.config, batched=parsed.batched
        )
        return parsed

    async def predict(  # type: ignore[override]
        self,
        payload: ParsedPayload,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> tuple[ParsedPayload, list[dict[str, Any]]]:
        assert self.batcher is not None and self.info is not None, "load() was not called"
        gauge = self.metrics.queue_depth.labels(model_name=self.name)
        try:
            outs = await asyncio.gather(
                *(self.batcher.generate([r.prompt()], r.params) for r in payload.requests)
            )
        finally:
            gauge.set(self.batcher.waiting)
        info = self.info
        return payload, [
            build_response(r, o[0], info) for r, o in zip(payload.requests, outs, strict=True)
        ]

    async def postprocess(  # type: ignore[override]
        self,
        result: tuple[ParsedPayload, list[dict[str, Any]]],
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any] | InferResponse:
        parsed, responses = result
        if parsed.protocol == "v2":
            return self._v2_response(parsed, responses)
        return {"predictions": responses} if parsed.batched else responses[0]

    def _v2_response(self, parsed: ParsedPayload, responses: list[dict[str, Any]]) -> InferResponse:
        import json

        n = len(responses)
        outputs = [
            InferOutput(
                "result", [n], "BYTES", [json.dumps(r, ensure_ascii=False) for r in responses]
            ),
            InferOutput("critique", [n], "BYTES", [r["critique"] for r in responses]),
        ]
        assert self.info is not None
        return InferResponse(
            response_id=parsed.request_id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            model_version=self.info.version,
        )
