"""KServe's OpenAI-compatible chat route for the critic (``/openai/v1/chat/completions``).

KServe registers its OpenAI endpoints when a served model is an ``OpenAIGenerativeModel``; its
request/response types come from vLLM, so this module imports only where vLLM is installed and
has the module layout kserve expects (kserve 0.21: vllm <= 0.28). The images ship vllm 0.31, so
there ``deepcritic.serve.server.build_model`` leaves this route off and says why. Chat requests go through the same dynamic batcher as critique requests, so they
share batches and limits. Streaming is not offered (the critique is returned whole).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from kserve.protocol.rest.openai import OpenAIGenerativeModel
from kserve.protocol.rest.openai.types import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatMessage,
    Error,
    ErrorResponse,
    UsageInfo,
)

from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.model import CriticModel
from deepcritic.serve.schema import RequestError

_ROLES = ("system", "user", "assistant")


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text parts, refuse anything else
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(f"{where}.content[{i}]", "only text content parts are supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise RequestError(f"{where}.content", "must be a string or a list of text parts")


def chat_prompt(messages: Sequence[Any], config: ServeConfig) -> Prompt:
    """OpenAI chat messages -> the backend's prompt (plain role/content dicts), validated."""
    if not messages:
        raise RequestError("messages", "is empty")
    prompt: Prompt = []
    total = 0
    for i, m in enumerate(messages):
        msg = m if isinstance(m, dict) else dict(m)
        role = msg.get("role")
        if role not in _ROLES:
            raise RequestError(
                f"messages[{i}].role", f"must be one of {list(_ROLES)}, got {role!r}"
            )
        text = _content_text(msg.get("content"), f"messages[{i}]")
        total += len(text)
        prompt.append({"role": str(role), "content": text})
    limit = config.limits.max_problem_chars + config.limits.max_steps * config.limits.max_step_chars
    if total > limit:
        raise RequestError("messages", f"hold {total} characters, limit {limit}")
    return prompt


def chat_sampling(request: Any, config: ServeConfig) -> SamplingParams:
    """Sampling parameters of a chat request, bounded by the same limits as critique requests."""
    limits = config.limits
    n = request.n or 1
    if not 1 <= n <= limits.max_samples:
        raise RequestError("n", f"{n} is outside [1, {limits.max_samples}]")
    max_tokens = (
        getattr(request, "max_completion_tokens", None)
        or getattr(request, "max_tokens", None)
        or config.max_tokens
    )
    if not 1 <= max_tokens <= limits.max_new_tokens:
        raise RequestError("max_tokens", f"{max_tokens} is outside [1, {limits.max_new_tokens}]")
    temperature = config.temperature if request.temperature is None else float(request.temperature)
    if not 0 <= temperature <= limits.max_temperature:
        raise RequestError("temperature", f"{temperature} is outside [0, {limits.max_temperature}]")
    stop = request.stop or ()
    return SamplingParams(
        n=n,
        temperature=temperature,
        top_p=config.top_p if request.top_p is None else float(request.top_p),
        max_tokens=int(max_tokens),
        seed=getattr(request, "seed", None),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
    )


def _error(message: str, code: int = 400, param: str | None = None) -> ErrorResponse:
    return ErrorResponse(
        error=Error(code=str(code), message=message, param=param, type="invalid_request_error")
    )


def _chat_completion(name: str, outs: list[Completion]) -> ChatCompletion:
    prompt_tokens = outs[0].prompt_tokens if outs else 0
    completion_tokens = sum(c.completion_tokens for c in outs)
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=name,
        choices=[
            ChatCompletionChoice(
                index=i,
                message=ChatMessage(role="assistant", content=c.text),
                finish_reason=c.finish_reason,
            )
            for i, c in enumerate(outs)
        ],
        usage=UsageInfo(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
    )


class CriticChatModel(CriticModel, OpenAIGenerativeModel):
    """The critic model plus ``/openai/v1/chat/completions`` (KServe's OpenAI route)."""

    def __init__(self, config: ServeConfig, **kwargs: Any):
        super().__init__(config, **kwargs)
        self.ready = False

    async def create_completion(
        self, request: Any, raw_request: Any = None, context: Any = None
    ) -> Any:
        return _error("only chat completions are served: POST /openai/v1/chat/completions", 400)

    async def create_chat_completion(
        self, request: Any, raw_request: Any = None, context: Any = None
    ) -> Any:
        if getattr(request, "stream", False):
            return _error("stream=true is not supported", 400, "stream")
        try:
            prompt = chat_prompt(request.messages, self.config)
            params = chat_sampling(request, self.config)
        except RequestError as e:
            return _error(str(e), 400, e.field)
        assert self.batcher is not None, "load() was not called"
        outs = await self.batcher.generate([prompt], params)
        return _chat_completion(self.name, outs[0])
