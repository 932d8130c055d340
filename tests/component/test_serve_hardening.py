"""Hardening of the endpoint (issue 26): bad text, numbers and headers are 4xx naming the field; one
bad request never fails its batch-mates; stop strings and messages are bounded by ``limits``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deepcritic.serve.config import LimitsConfig
from support.serve_app import CONFIG, EXPLODE, GOOD, LoopClient

V1 = "/v1/models/deepcritic:predict"
V2 = "/v2/models/deepcritic/infer"
CHAT = "/openai/v1/chat/completions"
LONE = "\ud800"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_path)


@pytest.fixture()
def app(tokenizer: Any) -> Iterator[LoopClient]:
    client = LoopClient(tokenizer, delay=0.05)  # a slow generate: concurrent requests batch
    yield client
    client.close()


def _chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def _v2(problem: str, steps: str) -> dict[str, Any]:
    return {"inputs": [
        {"name": "problem", "shape": [1], "datatype": "BYTES", "data": [problem]},
        {"name": "steps", "shape": [1], "datatype": "BYTES", "data": [steps]},
    ]}  # fmt: skip


def _post(app: LoopClient, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()  # \ud800 escaped
    return app.call(app.client.post(path, content=content, headers=headers or {}))


BAD_TEXT = [
    (V1, {**GOOD, "problem": f"x{LONE}"}, "'problem'"),
    (V1, {**GOOD, "steps": ["ok", f"a{LONE}"]}, "'steps[1]'"),
    (V1, {**GOOD, "id": LONE}, "'id'"),
    (V1, {**GOOD, LONE: 1}, "'<key>'"),
    (V1, {"instances": [GOOD, {**GOOD, "problem": LONE}]}, "'instances[1].problem'"),
    (V2, _v2(f"p{LONE}", json.dumps(["a"])), "'inputs[0].data[0]'"),
    (V2, _v2("p", json.dumps([f"a{LONE}"], ensure_ascii=False)), "'inputs[1].data[0]'"),
    (V2, _v2("p", '["a\\ud800"]'), "'inputs.steps[0][0]'"),  # escaped inside the row's JSON
    (CHAT, _chat(f"hi {LONE}"), "'messages[0].content'"),
    (CHAT, {**_chat("hi"), "user": LONE}, "'user'"),
]


@pytest.mark.parametrize("path,body,field", BAD_TEXT, ids=[b[2] for b in BAD_TEXT])
def test_lone_surrogates_are_400_naming_the_field(
    app: LoopClient, path: str, body: Any, field: str
) -> None:
    r = _post(app, path, body)
    assert r.status_code == 400, r.text
    assert list(r.json()) == ["error"] and field in r.json()["error"], r.text
    assert "surrogate" in r.json()["error"]


BAD_NUMBERS = [
    (CHAT, _chat("hi", seed=2**64), "'seed'"),
    (CHAT, _chat("hi", seed=10**100), "'seed'"),
    (CHAT, _chat("hi", seed=-1), "'seed'"),
    (CHAT, _chat("hi", n=2**70), "'n'"),
    (CHAT, {**_chat("hi"), "max_tokens": 10**30}, "'max_tokens'"),
    (V1, {**GOOD, "samples": 10**100}, "'samples'"),
    (V1, {**GOOD, "max_tokens": -(2**64)}, "'max_tokens'"),
    (V1, {**GOOD, "temperature": 1e308 * 10}, "'body'"),  # inf is no JSON (json.dumps writes it)
]


@pytest.mark.parametrize("path,body,field", BAD_NUMBERS, ids=[str(b[1]) for b in BAD_NUMBERS])
def test_integers_are_range_checked(app: LoopClient, path: str, body: Any, field: str) -> None:
    r = _post(app, path, body)
    assert r.status_code == 400 and field in r.json()["error"], r.text


@pytest.mark.parametrize("length", ["²", "1²", "²1", "٣", "-3", "+3", "3 3", "", "9" * 40])
def test_v2_header_length_is_ascii_digits_only(app: LoopClient, length: str) -> None:
    """Starlette reads header bytes as latin-1: b"\xb2" arrives as "²", which str.isdigit takes."""
    head = json.dumps(_v2("p", json.dumps(["a"]))).encode()
    try:
        raw = length.encode("latin-1")
    except UnicodeEncodeError:
        raw = length.encode("utf-8")
    headers = {b"Inference-Header-Content-Length": raw,
               b"Content-Type": b"application/octet-stream"}  # fmt: skip
    r = app.call(app.client.post(V2, content=head, headers=headers))
    assert r.status_code == 400, r.text
    assert "inference-header-content-length" in r.json()["error"], r.text


def test_stop_strings_and_messages_are_bounded_by_the_limits(app: LoopClient) -> None:
    limits = CONFIG.limits
    cases = [
        (_chat("hi", stop=["x" * 1000] * 4), "'stop[0]': has 1000 characters"),
        (_chat("hi", stop=["a"] * (limits.max_stop_strings + 1)), "'stop': has 5 strings"),
        (_chat("hi", stop="y" * (limits.max_stop_chars + 1)), "'stop': has 17"),
        (_chat("hi", stop=[""]), "'stop[0]'"),
        ({"messages": [{"role": "user", "content": "m"}] * 9}, "'messages': has 9 messages"),
        ({"messages": [{"role": "user", "content": "m" * 3000}] * 2}, "'messages[1].content'"),
        ({"messages": [{"role": "user", "content": "two words " * 300}]}, "'messages': hold"),
    ]
    for body, message in cases:
        r = _post(app, CHAT, body)
        assert r.status_code == 400 and message in r.json()["error"], (message, r.text)
    at_limit = _chat("hi", stop=["z" * limits.max_stop_chars] * limits.max_stop_strings)
    assert _post(app, CHAT, at_limit).status_code == 200


def test_stop_string_cost_at_the_default_limit_is_bounded(tiny_backend: Any) -> None:
    """The real HF backend (tiny model), the chat request of the issue at the documented default
    limit (4 stop strings of ``limits.max_stop_chars``): it costs seconds, not the 32 s that
    4 x 1000 characters cost."""
    from deepcritic.generation import SamplingParams

    limits = LimitsConfig()
    stops = tuple(f"{i}" * limits.max_stop_chars for i in range(limits.max_stop_strings))
    prompt = [{"role": "user", "content": "Say something."}]
    start = time.perf_counter()
    tiny_backend.generate([prompt], SamplingParams(max_tokens=2, stop=stops))
    assert time.perf_counter() - start < 10.0


def test_a_bad_request_never_fails_its_batch_mates(app: LoopClient) -> None:
    """8 valid v1 requests at the same moment as 1 chat request with a lone surrogate and 1 whose
    row makes the engine raise: all 8 answer 200; the two bad ones get their own 4xx / 500."""

    async def burst() -> list[httpx.Response]:
        good = [app.client.post(V1, json={**GOOD, "id": i}) for i in range(8)]
        surrogate = app.client.post(CHAT, content=json.dumps(_chat(f"hi {LONE}")).encode())
        engine = app.client.post(CHAT, json=_chat(f"please {EXPLODE}"))
        return list(await asyncio.gather(*good[:4], surrogate, engine, *good[4:]))

    rs = app.call(burst())
    good = rs[:4] + rs[6:]
    assert [r.status_code for r in good] == [200] * 8, [r.text for r in good]
    assert sorted(r.json()["id"] for r in good) == [str(i) for i in range(8)]
    assert rs[4].status_code == 400 and "'messages[0].content'" in rs[4].json()["error"]
    assert rs[5].status_code == 500 and list(rs[5].json()) == ["error"]
    assert "generation failed for this request" in rs[5].json()["error"]
    assert max(app.backend.calls) > 1  # the good ones were batched with the failing row
