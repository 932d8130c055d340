"""The endpoint's HTTP app: exactly the documented routes, one error format, cancellation.

Routes (nothing else: no model load/unload repository routes, no ``:explain``, no ``/docs``,
no ``/openapi.json``; an unknown path is a 404 and a wrong method a 405, in the same format)::

    GET  /                               liveness (503 once a loaded model has been stopped)
    GET  /metrics                        Prometheus
    GET  /v1/models/<name>               readiness: 200 {"name", "ready": true} or 503
    POST /v1/models/<name>:predict       critique (v1)
    GET  /v2/health/live                 {"live": true}
    GET  /v2/health/ready                200 {"ready": true} or 503 (the model's state)
    GET  /v2/models/<name>               v2 metadata: the input and output tensors
    GET  /v2/models/<name>/ready         200 {"name", "ready": true} or 503
    POST /v2/models/<name>/infer         critique (v2, JSON or binary tensors)
    POST /openai/v1/chat/completions     chat (only when ``openai_route`` is on)

Every refusal is ``{"error": "..."}`` with a 4xx naming the field (503 when busy or not ready).
A client that disconnects while its request waits or generates has the request cancelled: its
queued prompts never reach the model and its generating ones stop at the next decode step (see
:mod:`deepcritic.serve.batching`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from prometheus_client import REGISTRY, exposition
from starlette.applications import Starlette
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deepcritic.serve.batching import GenerationFailed, ServerBusy
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.model import CriticModel, ParsedPayload
from deepcritic.serve.openai_route import chat_completion, check_chat_tokens, parse_chat
from deepcritic.serve.schema import RequestError, check_json_content_type, decode_json, parse_v1
from deepcritic.serve.v2 import encode_v2_response, model_metadata, parse_v2

log = logging.getLogger(__name__)
T = TypeVar("T")
CLIENT_GONE = 499  # nginx's "client closed request": logged and counted, never read


class BodyTooLarge(Exception):
    """A streamed (chunked) body grew past ``limits.max_body_bytes``."""


class BodyLimitMiddleware:
    """ASGI middleware: 413 for bodies over ``max_bytes`` (Content-Length or streamed)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await error(413, f"request body is over the limit of {self.max_bytes} bytes")(
                scope, receive, send
            )
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(f"request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class Unavailable(Exception):
    """The model named in the path is not served here (404) or not ready (503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The endpoint's one error format."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client disconnects (call only after the body has been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work``; cancel it and raise :class:`ClientGone` if the client goes away first."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        watch.cancel()
    if task.cancelled():
        raise ClientGone()
    return task.result()


class Endpoints:
    """The route handlers around one :class:`CriticModel`."""

    def __init__(self, model: CriticModel, config: ServeConfig):
        self.model = model
        self.config = config
        self.was_ready = False  # liveness fails once a ready model has been stopped

    # ---------------------------------------------------------------- helpers

    def _ready_model(self, name: str) -> CriticModel:
        if name != self.model.name:
            raise Unavailable(
                404, f"model {name!r:.80} is not served here (this is {self.model.name!r})"
            )
        if not self.model.ready:
            raise Unavailable(503, f"model {self.model.name!r} is not ready")
        self.was_ready = True
        return self.model

    async def _outcome(self, protocol: str, work: Callable[[], Awaitable[Response]]) -> Response:
        """Run a request handler; map refusals to the error format; count the outcome."""
        start, code = time.perf_counter(), 500
        try:
            response = await work()
            code = response.status_code
            return response
        except RequestError as e:
            code = e.status
            log.info("%d: %s", e.status, e)
            return error(e.status, str(e))
        except Unavailable as e:
            code = e.status
            return error(e.status, str(e), {"Retry-After": "5"} if e.status == 503 else None)
        except ServerBusy as e:
            code = 503
            return error(503, f"server busy: {e}", {"Retry-After": "1"})
        except GenerationFailed as e:
            code = 500
            log.error("%s", e, exc_info=e.cause)
            return error(500, f"{e}; see the server log")
        except BodyTooLarge as e:
            code = 413
            return error(413, str(e))
        except (ClientGone, ClientDisconnect):
            code = CLIENT_GONE
            log.info("client went away: request cancelled")
            return Response(status_code=CLIENT_GONE)
        finally:
            metrics = self.model.metrics
            metrics.requests.labels(
                model_name=self.model.name, protocol=protocol, code=str(code)
            ).inc()
            metrics.latency.labels(model_name=self.model.name).observe(time.perf_counter() - start)

    async def _json_body(self, request: Request) -> Any:
        body = await request.body()
        check_json_content_type(request.headers.get("content-type"))
        return decode_json(body)

    async def _critique(self, request: Request, payload: ParsedPayload) -> list[dict[str, Any]]:
        result = await until_disconnect(request, self.model(payload, dict(request.headers)))
        responses: list[dict[str, Any]] = result[0]
        return responses

    # ---------------------------------------------------------------- health

    async def live(self, request: Request) -> Response:
        if self.was_ready and not self.model.ready:
            return error(503, f"model {self.model.name!r} was stopped: restart the server")
        return JSONResponse({"status": "alive"})

    async def v2_live(self, request: Request) -> Response:
        if self.was_ready and not self.model.ready:
            return error(503, f"model {self.model.name!r} was stopped: restart the server")
        return JSONResponse({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        if not self.model.ready:
            return error(503, f"model {self.model.name!r} is not ready", {"Retry-After": "5"})
        return JSONResponse({"ready": True})

    async def model_ready(self, request: Request) -> Response:
        async def work() -> Response:
            model = self._ready_model(request.path_params["name"])
            return JSONResponse({"name": model.name, "ready": True})

        return await self._outcome("health", work)

    async def metrics(self, request: Request) -> Response:
        encoder, content_type = exposition.choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(REGISTRY), headers={"content-type": content_type})

    # ---------------------------------------------------------------- critique

    async def v1_predict(self, request: Request) -> Response:
        async def work() -> Response:
            self._ready_model(request.path_params["name"])
            requests, batched = parse_v1(await self._json_body(request), self.config)
            responses = await self._critique(request, ParsedPayload(requests, batched, "v1"))
            return JSONResponse({"predictions": responses} if batched else responses[0])

        return await self._outcome("v1", work)

    async def v2_metadata(self, request: Request) -> Response:
        async def work() -> Response:
            model = self._ready_model(request.path_params["name"])
            assert model.info is not None
            return JSONResponse(model_metadata(model.name, model.info))

        return await self._outcome("health", work)

    async def v2_infer(self, request: Request) -> Response:
        async def work() -> Response:
            model = self._ready_model(request.path_params["name"])
            parsed = parse_v2(await request.body(), request.headers, self.config)
            payload = ParsedPayload(parsed.requests, True, "v2", parsed)
            responses = await self._critique(request, payload)
            assert model.info is not None
            body, headers = encode_v2_response(parsed, responses, model.name, model.info.version)
            return Response(body, headers=headers)

        return await self._outcome("v2", work)

    async def chat(self, request: Request) -> Response:
        async def work() -> Response:
            body = await self._json_body(request)
            prompt, params = parse_chat(body, self.config, self.model.special_tokens)
            model = self._ready_model(self.config.model_name)
            check_chat_tokens(prompt, model.count_tokens, self.config)
            assert model.batcher is not None
            outs = await until_disconnect(request, model.batcher.generate([prompt], params))
            return JSONResponse(chat_completion(model.name, outs[0]))

        return await self._outcome("openai", work)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    elif exc.status_code == 404:
        message = f"no route {request.url.path!r:.200}: see docs/serving.md for the routes"
    else:
        message = str(exc.detail)
    return error(exc.status_code, message, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error(500, f"internal error ({type(exc).__name__}); see the server log")


class ModelNameConvertor(StringConvertor):
    """A model name in a path: one segment without ``:`` (``<name>:explain`` is no model)."""

    regex = "[^/:]+"


def routes(model: CriticModel, config: ServeConfig) -> tuple[Endpoints, list[Route]]:
    """The documented routes and their handlers."""
    register_url_convertor("model", ModelNameConvertor())
    e = Endpoints(model, config)
    table = [
        Route("/", e.live, methods=["GET"]),
        Route("/metrics", e.metrics, methods=["GET"]),
        Route("/v1/models/{name:model}", e.model_ready, methods=["GET"]),
        Route("/v1/models/{name:model}:predict", e.v1_predict, methods=["POST"]),
        Route("/v2/health/live", e.v2_live, methods=["GET"]),
        Route("/v2/health/ready", e.v2_ready, methods=["GET"]),
        Route("/v2/models/{name:model}", e.v2_metadata, methods=["GET"]),
        Route("/v2/models/{name:model}/ready", e.model_ready, methods=["GET"]),
        Route("/v2/models/{name:model}/infer", e.v2_infer, methods=["POST"]),
    ]
    if config.openai_enabled:
        table.append(Route("/openai/v1/chat/completions", e.chat, methods=["POST"]))
    return e, table


def build_app(model: CriticModel, config: ServeConfig) -> Starlette:
    """The ASGI app of the endpoint (served by uvicorn inside KServe's ModelServer)."""
    _, table = routes(model, config)
    return Starlette(
        routes=table,
        middleware=[Middleware(BodyLimitMiddleware, max_bytes=config.limits.max_body_bytes)],
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
