"""An OpenAI-compatible chat route for the critic: ``POST /openai/v1/chat/completions``.

Our own route (not KServe's OpenAI layer, which needs vLLM's types and would also expose
completions, embeddings, rerank and model listing). It takes the chat fields the critic can honour
(``model``, ``messages``, ``n``, ``max_tokens``/``max_completion_tokens``, ``temperature``,
``top_p``, ``stop``, ``seed``, ``stream: false``, ``user``) and refuses anything else by name.
Requests go through the same dynamic batcher and limits as critique requests (``n`` x
``max_tokens`` within ``limits.max_request_tokens``; messages, their characters and tokens, stop
strings and their length each bounded by ``limits``; ``logprobs`` is refused), control tokens in every message are escaped
(:func:`deepcritic.prompting.escape_control_tokens`), and errors use the endpoint's one format
``{"error": "field '<name>': <reason>"}``. No streaming: the critique is returned whole.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.prompting import escape_control_tokens
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.schema import RequestError, TokenCounter, number_field
from deepcritic.serve.validation import SEED_MAX

ROLES = ("system", "user", "assistant")
CHAT_FIELDS = ("model", "messages", "n", "max_tokens", "max_completion_tokens", "temperature",
               "top_p", "stop", "seed", "stream", "user")  # fmt: skip


def _content_text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text parts only
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(f"{where}.content[{i}]", "only text content parts are supported")
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(f"{where}.content[{i}].text", "must be a string")
            parts.append(text)
        return "".join(parts)
    raise RequestError(f"{where}.content", "must be a string or a list of text parts")


def chat_prompt(messages: Any, config: ServeConfig, special_tokens: Sequence[str] = ()) -> Prompt:
    """OpenAI chat messages -> the backend's prompt, validated, control tokens escaped."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages", "must be a non-empty list of messages")
    limits = config.limits
    if len(messages) > limits.max_messages:
        raise RequestError(
            "messages",
            f"has {len(messages)} messages, limit {limits.max_messages} (limits.max_messages)",
        )
    prompt: Prompt = []
    total = 0
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise RequestError(f"messages[{i}]", "must be an object with role and content")
        unknown = sorted(set(msg) - {"role", "content", "name"})
        if unknown:
            raise RequestError(f"messages[{i}].{unknown[0]}", "is not supported")
        if msg.get("name") is not None and not isinstance(msg["name"], str):
            raise RequestError(f"messages[{i}].name", "must be a string")
        role = msg.get("role")
        if role not in ROLES:
            raise RequestError(
                f"messages[{i}].role", f"must be one of {list(ROLES)}, got {role!r:.40}"
            )
        text = _content_text(msg.get("content"), f"messages[{i}]")
        total += len(text)
        prompt.append({"role": str(role), "content": escape_control_tokens(text, special_tokens)})
        if total > limits.max_message_chars:
            raise RequestError(f"messages[{i}].content", f"brings the messages to {total} "
                               f"characters, limit {limits.max_message_chars} "
                               "(limits.max_message_chars)")  # fmt: skip
    return prompt


def check_chat_tokens(prompt: Prompt, count_tokens: TokenCounter, config: ServeConfig) -> int:
    """Refuse a chat prompt whose messages hold more than ``limits.max_prompt_tokens`` tokens."""
    counts = count_tokens([m["content"] for m in prompt])
    limit = config.limits.max_prompt_tokens
    if sum(counts) > limit:
        raise RequestError("messages", f"hold {sum(counts)} tokens, limit {limit} "
                                       "(limits.max_prompt_tokens)")  # fmt: skip
    return sum(counts)


def _stops(value: Any, config: ServeConfig) -> tuple[str, ...]:
    """Stop strings: at most ``limits.max_stop_strings``, each 1..``limits.max_stop_chars``."""
    limits = config.limits
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list):
        raise RequestError("stop", "must be a string or a list of strings")
    if len(stops) > limits.max_stop_strings:
        raise RequestError("stop", f"has {len(stops)} strings, limit {limits.max_stop_strings} "
                                   "(limits.max_stop_strings)")  # fmt: skip
    for i, s in enumerate(stops):
        where = "stop" if isinstance(value, str) else f"stop[{i}]"
        if not isinstance(s, str) or not s:
            raise RequestError(where, "must be a non-empty string")
        if len(s) > limits.max_stop_chars:
            raise RequestError(where, f"has {len(s)} characters, limit {limits.max_stop_chars} "
                                      "(limits.max_stop_chars)")  # fmt: skip
    return tuple(stops)


def chat_sampling(body: dict[str, Any], config: ServeConfig) -> SamplingParams:
    """Sampling parameters of a chat request, bounded by the same limits as critique requests."""
    limits = config.limits
    n = number_field(body, "n", "", 1, 1, limits.max_samples, integer=True)
    name = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    max_tokens = number_field(
        body, name, "", config.max_tokens, 1, limits.max_new_tokens, integer=True
    )
    if n * max_tokens > limits.max_request_tokens:
        raise RequestError(name, f"n {n} x {max_tokens} new tokens is over the limit of "
                                 f"{limits.max_request_tokens} per request")  # fmt: skip
    temperature = number_field(body, "temperature", "", config.temperature, 0,
                               limits.max_temperature, integer=False)  # fmt: skip
    top_p = number_field(body, "top_p", "", config.top_p, 1e-6, 1.0, integer=False)
    seed = None
    if body.get("seed") is not None:
        seed = number_field(body, "seed", "", 0, 0, SEED_MAX, integer=True)
    return SamplingParams(n=n, temperature=float(temperature), top_p=float(top_p),
                          max_tokens=max_tokens, seed=seed,
                          stop=_stops(body.get("stop"), config))  # fmt: skip


def parse_chat(
    body: Any, config: ServeConfig, special_tokens: Sequence[str] = ()
) -> tuple[Prompt, SamplingParams]:
    """A chat completion request body -> (prompt, sampling parameters); refuses by field name."""
    if not isinstance(body, dict):
        raise RequestError("body", f"must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(CHAT_FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"is not supported (supported: {', '.join(CHAT_FIELDS)})")
    model = body.get("model", config.model_name)
    if model != config.model_name:
        raise RequestError(
            "model", f"{model!r:.60} is not served here (this is {config.model_name!r})", 404
        )
    if body.get("stream") not in (None, False):
        raise RequestError("stream", "only stream=false is supported")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise RequestError("user", "must be a string")
    if "messages" not in body:
        raise RequestError("messages", "is missing")
    return chat_prompt(body["messages"], config, special_tokens), chat_sampling(body, config)


def chat_completion(model_name: str, outs: Sequence[Completion]) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` object for the sampled completions."""
    prompt_tokens = outs[0].prompt_tokens if outs else 0
    completion_tokens = sum(c.completion_tokens for c in outs)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(outs)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
