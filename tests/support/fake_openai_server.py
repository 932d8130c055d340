"""A real local OpenAI-compatible HTTP server for tests (FastAPI + uvicorn on 127.0.0.1).

``POST /v1/chat/completions`` is answered by a scripted, deterministic responder:

* the text of choice ``i`` is ``responder(body, i)`` (default: ``"re <last 6 words of the last
  message> | sample i seed S"``, with a ``cont`` marker when the request continues a prefill),
  then cut at the first ``stop`` string (finish ``stop``) or after ``max_tokens`` words (finish
  ``length``); usage counts words (prompt: words in all messages);
* ``n`` choices (or ``max_choices`` at most, to imitate servers that ignore ``n``);
* guided choice: ``structured_outputs.choice`` and/or ``guided_choice``, as configured in
  ``choice_fields``; the pick is the choice named after the last ``PICK=`` in the messages, else
  the first; a field not in ``choice_fields`` is ignored (vLLM) or, with ``reject_unknown``, a 400
  (hosted APIs);
* failures: the first ``fail_first`` requests get ``fail_status`` (503, 429, 400 ...);
  ``delay_s`` sleeps before answering (only the first ``delay_first`` requests when set), and
  ``delay_by(body)`` adds a per-request delay;
* ``engine(body) -> response`` replaces the scripted text with a real model (e.g. the HF backend);
* every request is recorded (headers + body) and the peak number in flight is kept.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Responder = Callable[[dict[str, Any], int], str]
KNOWN_FIELDS = frozenset(
    {"model", "messages", "n", "temperature", "top_p", "max_tokens", "seed", "stop"}
    | {"continue_final_message", "add_generation_prompt"}
)


def default_responder(body: dict[str, Any], index: int) -> str:
    """Deterministic text from the prompt: echoes the last message's last words."""
    last = body["messages"][-1]["content"].split()[-6:]
    cont = "cont " if body.get("continue_final_message") else ""
    return f"{cont}re {' '.join(last)} | sample {index} seed {body.get('seed')}"


@dataclass
class RecordedRequest:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ServerScript:
    """What the server does; tests mutate it (``server.script.fail_first = 2``)."""

    responder: Responder = default_responder
    max_choices: int | None = None
    choice_fields: tuple[str, ...] = ("structured_outputs", "guided_choice")
    reject_unknown: bool = False
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    delay_s: float = 0.0
    delay_first: int | None = None
    delay_by: Callable[[dict[str, Any]], float] | None = None  # per-request delay from the body
    engine: Callable[[dict[str, Any]], dict[str, Any]] | None = (
        None  # a real model: body -> response
    )


@dataclass
class FakeOpenAIServer:
    script: ServerScript = field(default_factory=ServerScript)
    requests: list[RecordedRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    port: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _epoch: int = 0  # bumped by reset(): a request still running from before is not counted

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        with self._lock:
            self.script = ServerScript()
            self.requests.clear()
            self.in_flight = self.max_in_flight = 0
            self._epoch += 1

    # ------------------------------------------------------------------ the app

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                number = len(self.requests)
                self.requests.append(RecordedRequest(dict(request.headers), body))
                epoch = self._epoch
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                script = self.script
                if script.delay_s and (script.delay_first is None or number < script.delay_first):
                    await asyncio.sleep(script.delay_s)
                if script.delay_by is not None:
                    await asyncio.sleep(script.delay_by(body))
                return self._answer(body, number, script)
            finally:
                with self._lock:
                    if epoch == self._epoch:
                        self.in_flight -= 1

        return app

    def _answer(self, body: dict[str, Any], number: int, script: ServerScript) -> JSONResponse:
        if number < script.fail_first:
            headers = {"Retry-After": script.retry_after} if script.retry_after else None
            error = {"error": {"message": f"injected failure {number}", "code": script.fail_status}}
            return JSONResponse(error, status_code=script.fail_status, headers=headers)
        unknown = sorted(set(body) - KNOWN_FIELDS - set(script.choice_fields))
        if script.reject_unknown and unknown:
            msg = f"Unrecognized request argument supplied: {unknown[0]}"
            return JSONResponse({"error": {"message": msg}}, status_code=400)
        if not body.get("messages"):
            return JSONResponse({"error": {"message": "messages is required"}}, status_code=400)
        if script.engine is not None:
            return JSONResponse(script.engine(body))
        return JSONResponse(_completion(body, script))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeOpenAIServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="fake-openai"
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start within 10 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            self._server = self._thread = None


@contextmanager
def running_server() -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer().start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------ scripted completions


def _picked_choice(body: dict[str, Any], script: ServerScript) -> list[str] | None:
    if "structured_outputs" in script.choice_fields:
        so = body.get("structured_outputs")
        if isinstance(so, dict) and so.get("choice"):
            return list(so["choice"])
    if "guided_choice" in script.choice_fields and body.get("guided_choice"):
        return list(body["guided_choice"])
    return None


def _cut(text: str, stops: list[str], max_tokens: int) -> tuple[str, str]:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    reason = "stop"
    if cut >= 0:
        text = text[:cut]
    words = text.split(" ")
    if len(words) > max_tokens:
        text, reason = " ".join(words[:max_tokens]), "length"
    return text, reason


def _completion(body: dict[str, Any], script: ServerScript) -> dict[str, Any]:
    n = int(body.get("n") or 1)
    if script.max_choices is not None:
        n = min(n, script.max_choices)
    stops = body.get("stop") or []
    stops = [stops] if isinstance(stops, str) else list(stops)
    max_tokens = int(body.get("max_tokens") or 16)
    options = _picked_choice(body, script)
    everything = " ".join(m["content"] for m in body["messages"])
    choices, completion_tokens = [], 0
    for i in range(n):
        if options is not None:
            pick = everything.split("PICK=")[-1].split()[0] if "PICK=" in everything else ""
            text, reason = (pick if pick in options else options[0]), "stop"
        else:
            text, reason = _cut(script.responder(body, i), stops, max_tokens)
        completion_tokens += len(text.split())
        choices.append(
            {"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
        )
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    usage["total_tokens"] = prompt_tokens + completion_tokens
    return {
        "id": "fake",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": choices,
        "usage": usage,
    }
