"""``deepcritic serve``: the critic behind ``kserve.ModelServer``, bound to 127.0.0.1 by default.

The HTTP app is ours (:mod:`deepcritic.serve.routes`): only the documented routes exist, with one
error format. KServe's ModelServer still owns the model registry, the event loop, signal handling
and graceful shutdown; its REST server runs uvicorn on ``config.host`` (KServe would bind
0.0.0.0) and its gRPC server is never started (it binds every interface and serves the model
repository's load/unload calls). Request bodies over ``limits.max_body_bytes`` get 413 before
they are read; a full queue gets 503 with ``Retry-After``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from deepcritic.config import add_dataclass_arguments, config_from_args
from deepcritic.serve.config import ServeConfig

log = logging.getLogger(__name__)


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


def _critic_server_class() -> type:
    ms = _import_kserve_server()
    from kserve.protocol.rest.server import RESTServer

    from deepcritic.serve.routes import build_app

    class CriticRESTServer(RESTServer):  # type: ignore[misc]
        """KServe's REST server running our app (:func:`build_app`) on ``host``."""

        def __init__(self, app: Any, *args: Any, host: str, **kwargs: Any):
            super().__init__(app, *args, **kwargs)
            self.config.host = host

        def create_application(self) -> None:
            """The app is complete already: no KServe routes, middlewares or handlers."""

    class CriticServer(ms.ModelServer):  # type: ignore[misc,name-defined]
        """ModelServer that serves our app through :class:`CriticRESTServer` (one process)."""

        def __init__(self, config: ServeConfig):
            super().__init__(
                http_port=config.port,
                workers=1,  # one process: dynamic batching needs every request in one queue
                enable_grpc=False,
                enable_docs_url=False,
            )
            self.serve_config = config

        def start(self, models: list[Any]) -> None:
            self._register_and_check_atleast_one_model_is_ready(models)
            rest = CriticRESTServer(
                build_app(models[0], self.serve_config),
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                access_log_format=self.access_log_format,
                workers=1,
                grace_period=self.grace_period,
                event_loop=self.event_loop,
                timeout_keep_alive=self.timeout_keep_alive,
                host=self.serve_config.host,
            )
            self._rest_server = rest
            self.servers.append(rest.start())
            log.info("listening on http://%s:%d", self.serve_config.host, self.http_port)
            self.setup_event_loop()
            self.register_signal_handler()
            asyncio.run(self._serve())

    return CriticServer


def build_model(config: ServeConfig) -> Any:
    """The kserve model object."""
    from deepcritic.serve.model import CriticModel

    return CriticModel(config)


def is_loopback(host: str) -> bool:
    """True when ``host`` is a loopback address (127.0.0.0/8, ::1, an IPv4-mapped 127.x) or a
    name that resolves only to such addresses. Anything that cannot be resolved is not."""
    text = host.strip().strip("[]")
    try:
        addresses = [ipaddress.ip_address(text)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(text, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            return False
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        return False
    return all(_loopback_address(a) for a in addresses)


def _loopback_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def check_bind(config: ServeConfig) -> None:
    """Warn when the server listens beyond loopback (an explicit ``host``; never the default)."""
    if not is_loopback(config.host):
        log.warning("binding %s: every client that reaches this address can call the critic "
                    "(in the cluster, Istio authentication sits in front)", config.host)  # fmt: skip


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
