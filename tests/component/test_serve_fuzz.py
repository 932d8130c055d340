"""The endpoint under a fuzzer (issue 26): hypothesis builds requests for every documented route
(v1 predict, v2 infer incl. the binary tensor extension, OpenAI chat, models/health/metadata/metrics)
from valid-looking bodies, mutated bodies (wrong types, huge/negative numbers, lone surrogates,
unknown keys), malformed JSON and odd headers. For every case: no 5xx, no answer slower than 10 s,
every non-2xx body is the one error format ``{"error": "<text>"}``, and a valid request sent
concurrently with it still answers 200.

The app is built once (:class:`support.serve_app.LoopClient`, the tiny model's tokenizer). The
number of cases is ``DEEPCRITIC_FUZZ_CASES`` (default 1200 over all routes); the run is
derandomized by the ``ci`` hypothesis profile in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from support.serve_app import GOOD, LoopClient

TOTAL = int(os.environ.get("DEEPCRITIC_FUZZ_CASES", "1200"))
SHARE = {"v1": 0.25, "v2": 0.25, "v2_binary": 0.1, "chat": 0.25, "get": 0.1, "raw": 0.05}
V1 = "/v1/models/deepcritic:predict"
V2 = "/v2/models/deepcritic/infer"
CHAT = "/openai/v1/chat/completions"
HEADER_LENGTH = "inference-header-content-length"
STATS = {"cases": 0, "seconds": 0.0}
CODES: Counter[int] = Counter()  # status codes of the fuzzed requests (printed at the end)

Case = tuple[str, str, dict[str, Any], bytes]  # method, path, headers, body


def _cases(family: str) -> int:
    return max(1, round(TOTAL * SHARE[family]))


# ------------------------------------------------------------------------------------ values

LONE = st.sampled_from(["\ud800", "\udfff", "a\udc00b", "\ud83d"])  # half a surrogate pair
TEXT = st.one_of(
    st.text(max_size=30),
    st.text(st.characters(exclude_categories=()), max_size=12),  # surrogates included
    LONE,
    st.sampled_from(["", " ", "<|im_start|>", "<|im_end|>", "\x00", "x" * 70_000]),
)
INT = st.one_of(
    st.integers(-3, 300),
    st.sampled_from([-(2**63), 2**63, 2**64 + 1, 10**400, -1, 0]),
)
NUMBER = st.one_of(
    INT, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([1e308, -0.0, 5e-324])
)
SCALAR = st.one_of(st.none(), st.booleans(), NUMBER, TEXT)
ANY_JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=8,
)


def _dumps(value: Any) -> bytes:
    """JSON as a client sends it (``ensure_ascii``: a lone surrogate travels as ``\\ud800``)."""
    return json.dumps(value).encode()


# ------------------------------------------------------------------------------------ bodies


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any], known: tuple[str, ...]) -> Any:
    """``base`` with zero to three mutations: a field replaced, dropped, or an unknown key added;
    sometimes not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(ANY_JSON)
    body = json.loads(json.dumps(base))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["replace", "drop", "unknown", "nested"]))
        key = draw(st.sampled_from(known))
        if kind == "replace":
            body[key] = draw(ANY_JSON)
        elif kind == "drop":
            body.pop(key, None)
        elif kind == "unknown":
            body[draw(TEXT)] = draw(SCALAR)
        elif isinstance(body.get(key), list) and body[key]:
            at = draw(st.integers(0, len(body[key]) - 1))
            body[key][at] = draw(ANY_JSON)
    return body


def _v1_base(draw: st.DrawFn) -> dict[str, Any]:
    one = {
        "problem": draw(st.text(min_size=1, max_size=40)),
        "steps": draw(st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=3)),
        "max_tokens": draw(st.integers(1, 8)),
        "samples": draw(st.integers(1, 2)),
    }
    if draw(st.booleans()):
        return {"instances": [one] * draw(st.integers(1, 3))}
    return one


V1_KEYS = ("problem", "steps", "samples", "temperature", "max_tokens", "top_p", "id", "instances")


def _v2_base(draw: st.DrawFn) -> dict[str, Any]:
    rows = draw(st.integers(1, 3))
    problems = [draw(st.text(min_size=1, max_size=30)) for _ in range(rows)]
    steps = [json.dumps(draw(st.lists(st.text(min_size=1, max_size=15), min_size=1, max_size=3)))
             for _ in range(rows)]  # fmt: skip
    return {
        "id": draw(st.one_of(st.none(), st.text(max_size=8))),
        "parameters": {"max_tokens": draw(st.integers(1, 8))},
        "inputs": [
            {"name": "problem", "shape": [rows], "datatype": "BYTES", "data": problems},
            {"name": "steps", "shape": [rows], "datatype": "BYTES", "data": steps},
        ],
    }


V2_KEYS = ("id", "parameters", "inputs", "outputs", "model_name", "model_version")


def _chat_base(draw: st.DrawFn) -> dict[str, Any]:
    roles = st.sampled_from(["system", "user", "assistant"])
    messages = [{"role": draw(roles), "content": draw(st.text(max_size=40))}
                for _ in range(draw(st.integers(1, 3)))]  # fmt: skip
    body: dict[str, Any] = {"messages": messages, "max_tokens": draw(st.integers(1, 8))}
    if draw(st.booleans()):
        body["stop"] = draw(st.lists(st.text(min_size=1, max_size=6), max_size=3))
    if draw(st.booleans()):
        body["seed"] = draw(st.integers(0, 2**40))
    return body


CHAT_KEYS = ("model", "messages", "n", "max_tokens", "max_completion_tokens", "temperature",
             "top_p", "stop", "seed", "stream", "user")  # fmt: skip

CONTENT_TYPES = st.sampled_from([
    None, "application/json", "application/json; charset=utf-8", "application/vnd.x+json",
    "text/plain", "application/json; charset=latin-1", "application/octet-stream", "",
    ";;;", "application/json; charset=", "multipart/form-data; boundary=x",
])  # fmt: skip
HEADER_BYTES = st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b)


@st.composite
def headers(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        out["content-type"] = content_type
    if draw(st.integers(0, 4)) == 0:
        name = draw(st.sampled_from(["x-request-id", "accept", "content-encoding", "x-junk"]))
        out[name] = draw(HEADER_BYTES)
    return out


@st.composite
def raw_body(draw: st.DrawFn, base: Any) -> bytes:
    """Mostly the JSON of ``base``; sometimes truncated, padded, not UTF-8, or empty."""
    data = _dumps(base)
    kind = draw(st.integers(0, 11))
    if kind == 0:
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == 1:
        return draw(st.binary(max_size=64))
    if kind == 2:
        return b"[" * draw(st.integers(1, 5000))
    if kind == 3:
        return b"\xff\xfe" + data
    if kind == 4:
        return data.replace(b"1", b"NaN", 1)
    return data


@st.composite
def json_case(draw: st.DrawFn, path: str, base_fn: Any, keys: tuple[str, ...]) -> Case:
    body = draw(mutated(base_fn(draw), keys))
    hdrs = draw(headers())
    if draw(st.integers(0, 5)) == 0:
        hdrs["content-type"] = "application/json"
    return "POST", path, hdrs, draw(raw_body(body))


def _binary_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


@st.composite
def v2_binary_case(draw: st.DrawFn) -> Case:
    """The binary tensor extension: a JSON header, then raw BYTES tensors; lengths mutated."""
    base = _v2_base(draw)
    tail = b""
    for tensor in base["inputs"]:
        if draw(st.booleans()):
            data = _binary_tensor(tensor.pop("data"))
            if draw(st.integers(0, 3)) == 0:
                data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=6))
            size = draw(st.one_of(st.just(len(data)), INT))
            tensor["parameters"] = {"binary_data_size": size}
            tail += data
    if draw(st.booleans()):
        base["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}}
                           for n in draw(st.sampled_from([["result"], ["critique", "result"]]))]  # fmt: skip
    head = _dumps(draw(mutated(base, V2_KEYS)) if draw(st.integers(0, 2)) == 0 else base)
    length: Any = draw(st.one_of(
        st.just(str(len(head))), INT.map(str),
        st.sampled_from(["", " 12", "1e3", "٣", "²", "-0", "0x10", "99999999999999999999999"]),
    ))  # fmt: skip
    ctype = draw(st.sampled_from(["application/octet-stream", "application/json", "text/plain"]))
    return "POST", V2, {HEADER_LENGTH: length, "content-type": ctype}, head + tail


NAMES = st.one_of(
    st.sampled_from(["deepcritic", "other", "deepcritic:explain", "..", "%00", "deepcritic "]),
    st.text(max_size=12).map(lambda s: quote(s.encode("utf-8", "surrogatepass"), safe="")),
)


@st.composite
def get_case(draw: st.DrawFn) -> Case:
    name = draw(NAMES)
    path = draw(st.sampled_from([
        "/", "/metrics", "/v1/models/{}", "/v2/health/live", "/v2/health/ready",
        "/v2/models/{}", "/v2/models/{}/ready", "/v1/models/{}:predict", "/v2/models/{}/infer",
        "/openai/v1/chat/completions", "/docs", "/openapi.json", "/v2/repository/index",
        "/v1/models/{}:explain", "/v2/models/{}/versions/1/infer",
    ])).format(name)  # fmt: skip
    method = draw(st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    hdrs: dict[str, Any] = {}
    if path == "/metrics" and draw(st.booleans()):
        hdrs["accept"] = draw(st.sampled_from(["application/openmetrics-text", "*/*", "x/y;;q"]))
    body = _dumps(draw(ANY_JSON)) if method in ("POST", "PUT", "PATCH") else b""
    return method, path, hdrs, body


@st.composite
def raw_case(draw: st.DrawFn) -> Case:
    """Any body on a POST route, with a Content-Length that may lie (the body-limit middleware)."""
    path = draw(st.sampled_from([V1, V2, CHAT]))
    body = draw(st.one_of(st.binary(max_size=200), st.just(b"{" * 25_000), st.just(b" " * 19_999)))
    hdrs: dict[str, Any] = dict(draw(headers()))
    if draw(st.booleans()):
        hdrs["content-length"] = draw(
            st.sampled_from(["-1", "abc", "99999999999999", "", "0", "١٢", "20001"])
        )
    return "POST", path, hdrs, body


# ------------------------------------------------------------------------------------ harness


@pytest.fixture(scope="module")
def app(tiny_model_path: str) -> Iterator[LoopClient]:
    from transformers import AutoTokenizer

    client = LoopClient(AutoTokenizer.from_pretrained(tiny_model_path))
    yield client
    client.close()
    print(f"\nfuzz: {STATS['cases']} cases in {STATS['seconds']:.1f} s; codes {dict(CODES)}")


def _check(case: Case, response: httpx.Response) -> None:
    method, path, _, _ = case
    where = f"{method} {path[:80]} -> {response.status_code}: {response.text[:300]!r}"
    assert response.status_code < 500, where
    if response.status_code >= 300:
        body = response.json()
        assert isinstance(body, dict) and list(body) == ["error"], where
        assert isinstance(body["error"], str) and body["error"], where


def run(app: LoopClient, case: Case) -> None:
    """Send ``case`` and a valid request together; check both."""
    method, path, hdrs, body = case
    raw = {k: v.encode("utf-8") if isinstance(v, str) else v for k, v in hdrs.items()}  # as sent
    start = time.perf_counter()

    async def both() -> tuple[httpx.Response, httpx.Response]:
        fuzz = app.client.request(method, path, headers=raw, content=body or None)
        valid = app.client.post(V1, json=GOOD)
        got = await asyncio.gather(fuzz, valid)
        return got[0], got[1]

    fuzzed, valid = app.call(both(), timeout=10.0)
    STATS["cases"] += 1
    STATS["seconds"] += time.perf_counter() - start
    CODES[fuzzed.status_code] += 1
    _check(case, fuzzed)
    assert valid.status_code == 200, f"the valid request beside {method} {path}: {valid.text}"


# ------------------------------------------------------------------------------------ tests


@settings(max_examples=_cases("v1"))
@given(case=json_case(V1, _v1_base, V1_KEYS))
@example(case=("POST", V1, {}, _dumps({**GOOD, "max_tokens": 10**400})))
@example(case=("POST", V1, {}, _dumps({**GOOD, "samples": 2**64})))
@example(case=("POST", V1, {}, _dumps({"instances": [GOOD, {**GOOD, "steps": "\ud800"}]})))
def test_fuzz_v1_predict(app: LoopClient, case: Case) -> None:
    run(app, case)


@settings(max_examples=_cases("v2"))
@given(case=json_case(V2, _v2_base, V2_KEYS))
def test_fuzz_v2_infer_json(app: LoopClient, case: Case) -> None:
    run(app, case)


@settings(max_examples=_cases("v2_binary"))
@given(case=v2_binary_case())
@example(
    case=("POST", V2, {HEADER_LENGTH: "-5", "content-type": "application/octet-stream"}, b"{}")
)
def test_fuzz_v2_infer_binary(app: LoopClient, case: Case) -> None:
    run(app, case)


@settings(max_examples=_cases("chat"))
@given(case=json_case(CHAT, _chat_base, CHAT_KEYS))
@example(case=("POST", CHAT, {}, _dumps({"messages": [{"role": "user", "content": "\udfff"}]})))
def test_fuzz_chat_completions(app: LoopClient, case: Case) -> None:
    run(app, case)


@settings(max_examples=_cases("get"))
@given(case=get_case())
def test_fuzz_read_routes(app: LoopClient, case: Case) -> None:
    run(app, case)


@settings(max_examples=_cases("raw"))
@given(case=raw_case())
def test_fuzz_raw_bodies(app: LoopClient, case: Case) -> None:
    run(app, case)
