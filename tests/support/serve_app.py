"""The endpoint's app in process for tests: a scripted backend, the real tokenizer, and one event
loop on a background thread (the batcher's worker lives on one loop, so every request of a test
must go through the same loop). Loopback only: requests go through ``httpx.ASGITransport``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import httpx

from deepcritic.generation import Completion, GenerationStats, Prompt, SamplingParams
from deepcritic.grader import render_critique
from deepcritic.serve.config import LimitsConfig, ServeConfig
from deepcritic.serve.model import CriticModel
from deepcritic.serve.routes import build_app
from deepcritic.serve.schema import ModelInfo

T = TypeVar("T")
CRITIQUE = render_critique([("fine", True), ("2 + 12 is 14", False)])
EXPLODE = "EXPLODE-IN-THE-BACKEND"  # a prompt holding this makes the backend's generate raise
GOOD = {"problem": "What is 2+3*4?", "steps": ["3*4 = 12", "2 + 12 = 15"], "max_tokens": 8}
CONFIG = ServeConfig(
    max_tokens=16,
    openai_route="on",
    limits=LimitsConfig(max_instances=4, max_steps=8, max_samples=4, max_new_tokens=64,
                        max_request_tokens=128, max_prompt_tokens=512, max_body_bytes=20_000,
                        max_messages=8, max_message_chars=4_000),
)  # fmt: skip


class TokenizingBackend:
    """Renders every prompt with the real chat template and tokenizer, as the HF backend does, so
    a text the tokenizer cannot take fails here as it would there; answers CRITIQUE."""

    name = "scripted"

    def __init__(self, tokenizer: Any, delay: float = 0.0):
        self.tokenizer = tokenizer
        self.delay = delay
        self.stats = GenerationStats()
        self.calls: list[int] = []  # prompts per generate call

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, *, desc: str | None = None
    ) -> list[list[Completion]]:
        self.calls.append(len(prompts))
        time.sleep(self.delay)
        for p in prompts:
            if any(EXPLODE in m["content"] for m in p):
                raise RuntimeError("engine error on one row")
            text = self.tokenizer.apply_chat_template(p, tokenize=False)
            self.tokenizer(text.encode("utf-8").decode("utf-8"))  # raises on a lone surrogate
        return [[Completion(CRITIQUE, "stop", 100, 40)] * params.n for _ in prompts]

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        return [0 for _ in prompts]

    def close(self) -> None:
        pass


class LoopClient:
    """An httpx client on the app, driven from a background event loop (``call`` blocks)."""

    def __init__(self, tokenizer: Any, config: ServeConfig = CONFIG, delay: float = 0.0):
        info = ModelInfo("deepcritic", "7", "models:/deepcritic/7")
        self.backend = TokenizingBackend(tokenizer, delay)
        self.model = CriticModel(config, backend=self.backend, info=info)  # type: ignore[arg-type]
        self.model.load()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        transport = httpx.ASGITransport(app=build_app(self.model, config))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")

    def call(self, work: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``work`` on the loop; raises TimeoutError when it takes over ``timeout`` s."""
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.client.aclose())
        if self.model.batcher is not None:
            self.call(self.model.batcher.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
