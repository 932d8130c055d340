"""The OpenAI-compatible HTTP backend against a real local server (tests/support/fake_openai_server)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deepcritic.generation import Backend, BackendConfig, SamplingParams, make_backend
from deepcritic.generation.openai import (
    EndpointError,
    OpenAIBackend,
    finish_reason_from,
    match_choice,
    split_tokens,
)
from support.fake_openai_server import FakeOpenAIServer, running_server

KEY_ENV = "DEEPCRITIC_TEST_OPENAI_KEY"
MakeBackend = Callable[..., OpenAIBackend]


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeOpenAIServer]:
    with running_server() as server:
        yield server


@pytest.fixture()
def server(_server: FakeOpenAIServer) -> FakeOpenAIServer:
    _server.reset()
    return _server


@pytest.fixture()
def backend_for(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeBackend]:
    monkeypatch.delenv(KEY_ENV, raising=False)
    made: list[OpenAIBackend] = []

    def make(**overrides: Any) -> OpenAIBackend:
        fields: dict[str, Any] = {
            "kind": "openai",
            "model": "critic-test",
            "base_url": server.base_url,
            "api_key_env": KEY_ENV,
            "max_concurrency": 4,
            "timeout_s": 5.0,
            "max_retries": 3,
        }
        fields.update(overrides)
        backend = OpenAIBackend(BackendConfig(**fields), backoff_base_s=0.01, backoff_max_s=0.05)
        made.append(backend)
        return backend

    yield make
    for b in made:
        b.close()


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]


# ------------------------------------------------------------------ pure helpers


def test_split_tokens_sums_exactly_and_follows_length() -> None:
    assert split_tokens(10, ["aaaa", "a", "aaaaa"]) == [4, 1, 5]
    parts = split_tokens(7, ["ab", "abc", "a"])
    assert sum(parts) == 7 and parts[1] >= parts[0] >= parts[2]
    assert split_tokens(5, ["", ""]) in ([3, 2], [2, 3])
    assert split_tokens(3, []) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 0), (" -1 ", 1), ("\\boxed{-1}", 1), ("The answer is 1.", 0), ("-1.", 1), ("10", None)],
)
def test_match_choice_never_confuses_minus_one(text: str, expected: int | None) -> None:
    assert match_choice(text, ["1", "-1"]) == expected


def test_match_choice_prefers_earliest_then_longest() -> None:
    assert match_choice("yes, then no", ["no", "yes"]) == 1
    assert match_choice("step 12", ["1", "12"]) == 1


def test_finish_reason_mapping() -> None:
    assert [finish_reason_from(r) for r in ("stop", None, "length", "content_filter")] == [
        "stop",
        "stop",
        "length",
        "error",
    ]


# ------------------------------------------------------------------ generate


def test_make_backend_builds_it_and_it_satisfies_the_protocol(server: FakeOpenAIServer) -> None:
    backend = make_backend(BackendConfig(kind="openai", base_url=server.base_url))
    try:
        assert isinstance(backend, OpenAIBackend) and isinstance(backend, Backend)
    finally:
        backend.close()


def test_params_and_outputs_are_mapped(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    backend = backend_for()
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=50, seed=7, stop=("|",))
    outs = backend.generate([_user("alpha beta"), _user("gamma")], params)
    body = server.requests[0].body
    assert server.requests[0].headers["content-type"] == "application/json"
    assert {k: body[k] for k in ("model", "n", "temperature", "top_p", "max_tokens", "seed")} == {
        "model": "critic-test",
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 50,
        "seed": 7,
    }
    assert body["stop"] == ["|"] and "continue_final_message" not in body
    assert [len(g) for g in outs] == [1, 1]
    first = outs[0][0]
    assert first.text == "re alpha beta " and first.finish_reason == "stop"
    assert (first.prompt_tokens, first.completion_tokens) == (4, 3)  # words, as the server counts
    assert outs[1][0].text == "re gamma "
    assert backend.stats.prompts == 2 and backend.stats.completion_tokens == 5


def test_max_tokens_gives_length_finish(backend_for: MakeBackend) -> None:
    (out,) = backend_for().generate([_user("one two three")], SamplingParams(max_tokens=3))
    assert out[0].text == "re one two" and out[0].finish_reason == "length"
    assert out[0].completion_tokens == 3


def test_order_is_preserved_when_replies_arrive_out_of_order(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    # earlier prompts answer later: prompt k waits (8 - k) * 20 ms
    server.script.delay_by = lambda body: (8 - int(body["messages"][-1]["content"][1:])) * 0.02
    prompts = [_user(f"p{k}") for k in range(8)]
    outs = backend_for(max_concurrency=8).generate(prompts, SamplingParams(max_tokens=20))
    assert [g[0].text.split(" | ")[0] for g in outs] == [f"re p{k}" for k in range(8)]
    order = [int(r.body["messages"][-1]["content"][1:]) for r in server.requests]
    assert sorted(order) == list(range(8))


def test_n_samples_in_one_request(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    backend = backend_for()
    outs = backend.generate([_user("a"), _user("b")], SamplingParams(n=3, temperature=1.0, seed=1))
    assert [len(g) for g in outs] == [3, 3]
    assert [c.text.split(" | ")[1] for c in outs[0]] == [f"sample {i} seed 1" for i in range(3)]
    assert len(server.requests) == 2 and all(r.body["n"] == 3 for r in server.requests)
    words = sum(len(c.text.split()) for g in outs for c in g)  # the server counts words
    assert backend.stats.completions == 6 and backend.stats.completion_tokens == words == 42
    assert all(c.completion_tokens == 7 for c in outs[0])  # usage total split by text length


def test_n_falls_back_to_separate_requests(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    server.script.max_choices = 1  # a server that ignores n
    backend = backend_for(max_concurrency=2)
    outs = backend.generate([_user("a"), _user("b")], SamplingParams(n=3, temperature=1.0, seed=5))
    assert [len(g) for g in outs] == [3, 3]
    assert [c.text.split(" | ")[1] for c in outs[1]] == [f"sample 0 seed {s}" for s in (5, 6, 7)]
    assert len(server.requests) == 6 and not backend.server_honours_n
    server.requests.clear()
    backend.generate([_user("c")], SamplingParams(n=2, seed=0))
    assert [r.body["n"] for r in server.requests] == [1, 1]
    assert sorted(r.body["seed"] for r in server.requests) == [0, 1]


def test_prefill_is_continued(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    prefill = [*_user("solve it"), {"role": "assistant", "content": "Step 1:"}]
    outs = backend_for().generate([prefill, _user("plain")], SamplingParams(max_tokens=30))
    by_last = {r.body["messages"][-1]["content"]: r.body for r in server.requests}
    assert by_last["Step 1:"]["continue_final_message"] is True
    assert by_last["Step 1:"]["add_generation_prompt"] is False
    assert by_last["Step 1:"]["messages"][-1]["role"] == "assistant"
    assert "continue_final_message" not in by_last["plain"]
    assert outs[0][0].text.startswith("cont re Step 1:") and not outs[1][0].text.startswith("cont")


def test_progress_bar_shows_desc(
    backend_for: MakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend_for().generate([_user("x")] * 3, SamplingParams(max_tokens=5), desc="critiquing")
    err = capsys.readouterr().err
    assert "critiquing" in err and "3/3" in err


def test_bad_prompt_is_named(backend_for: MakeBackend) -> None:
    with pytest.raises(ValueError, match="prompt 1, message 0: missing string field 'content'"):
        backend_for().generate([_user("ok"), [{"role": "user"}]], SamplingParams())


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (429, "0"), (500, None)])
def test_transient_failures_are_retried(
    server: FakeOpenAIServer, backend_for: MakeBackend, status: int, retry_after: str | None
) -> None:
    server.script.fail_first, server.script.fail_status = 2, status
    server.script.retry_after = retry_after
    backend = backend_for(max_concurrency=1)
    outs = backend.generate([_user("retry me")], SamplingParams(max_tokens=10))
    assert outs[0][0].text.startswith("re retry me")
    assert len(server.requests) == 3 and backend.stats.extra["http_retries"] == 2


def test_retries_are_bounded(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    server.script.fail_first = 100
    backend = backend_for(max_retries=2)
    with pytest.raises(EndpointError, match=r"gave up after 3 attempts.*HTTP 503") as err:
        backend.generate([_user("x")], SamplingParams())
    assert server.base_url in str(err.value) and len(server.requests) == 3


def test_non_retryable_4xx_fails_at_once_naming_url_and_status(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    server.script.fail_first, server.script.fail_status = 1, 400
    with pytest.raises(EndpointError, match=r"HTTP 400.*injected failure 0") as err:
        backend_for().generate([_user("x")], SamplingParams())
    assert err.value.status == 400 and f"{server.base_url}/chat/completions" in str(err.value)
    assert len(server.requests) == 1


def test_timeout_is_retried_then_succeeds(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    server.script.delay_s, server.script.delay_first = 1.0, 1  # only the first request is slow
    backend = backend_for(timeout_s=0.25, max_retries=1)
    outs = backend.generate([_user("slow")], SamplingParams(max_tokens=10))
    assert outs[0][0].text.startswith("re slow") and backend.stats.extra["http_retries"] == 1


def test_timeout_exhausted_raises(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    server.script.delay_s = 0.6
    with pytest.raises(EndpointError, match=r"gave up after 2 attempts.*timed out after 0.2 s"):
        backend_for(timeout_s=0.2, max_retries=1).generate([_user("slow")], SamplingParams())


def test_connection_refused_is_retried_then_reported(backend_for: MakeBackend) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = backend_for(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(EndpointError, match=rf"127.0.0.1:{port}.*connection error"):
        backend.generate([_user("x")], SamplingParams())
    assert backend.stats.extra["http_requests"] == 2


@pytest.mark.parametrize(("limit", "count"), [(1, 4), (3, 9)])
def test_concurrency_never_exceeds_the_limit(
    server: FakeOpenAIServer, backend_for: MakeBackend, limit: int, count: int
) -> None:
    server.script.delay_s = 0.1
    prompts = [_user(f"q{k}") for k in range(count)]
    outs = backend_for(max_concurrency=limit).generate(prompts, SamplingParams(n=2, max_tokens=5))
    assert len(outs) == count and len(server.requests) == count
    assert server.max_in_flight == limit  # bounded, and the bound is actually used


# ------------------------------------------------------------------ auth


def test_api_key_from_env_is_sent_as_bearer_and_never_logged(
    server: FakeOpenAIServer,
    backend_for: MakeBackend,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-secret")
    caplog.set_level(logging.DEBUG)
    server.script.fail_first, server.script.fail_status = 1, 400
    backend = backend_for()
    with pytest.raises(EndpointError) as err:
        backend.generate([_user("x")], SamplingParams())
    backend.generate([_user("x")], SamplingParams())
    assert [r.headers["authorization"] for r in server.requests] == ["Bearer sk-test-secret"] * 2
    assert "sk-test-secret" not in caplog.text + str(err.value) + repr(backend)


def test_no_key_no_header(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    backend_for().generate([_user("x")], SamplingParams())
    assert "authorization" not in server.requests[0].headers


# ------------------------------------------------------------------ choose


def _verdict_prompt(pick: str) -> list[dict[str, str]]:
    user = f"Judge this. PICK={pick} please"
    return [*_user(user), {"role": "assistant", "content": "**Answer**: \\boxed{"}]


def test_choose_uses_structured_outputs(server: FakeOpenAIServer, backend_for: MakeBackend) -> None:
    backend = backend_for()
    picks = backend.choose([_verdict_prompt(p) for p in ("-1", "1", "-1")], ["1", "-1"])
    assert picks == [1, 0, 1] and backend.choice_mode == "structured_outputs"
    body = server.requests[-1].body
    assert body["structured_outputs"] == {"choice": ["1", "-1"]} and body["temperature"] == 0.0
    assert body["continue_final_message"] is True and "guided_choice" not in body
    assert len(server.requests) == 3 and backend.stats.extra["choose_unmatched"] == 0


def test_choose_falls_back_to_guided_choice(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    server.script.choice_fields = ("guided_choice",)  # an older vLLM that ignores the new field
    backend = backend_for()
    assert backend.choose([_verdict_prompt("-1"), _verdict_prompt("1")], ["1", "-1"]) == [1, 0]
    assert backend.choice_mode == "guided_choice"
    assert server.requests[-1].body["guided_choice"] == ["1", "-1"]


def _picking_responder(body: dict[str, Any], index: int) -> str:
    text = " ".join(m["content"] for m in body["messages"])
    return f"I would say {text.split('PICK=')[1].split()[0]}." if "PICK=" in text else "no idea"


def test_choose_falls_back_to_asking_in_the_prompt(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    server.script.choice_fields, server.script.reject_unknown = (), True  # a hosted API
    server.script.responder = _picking_responder
    backend = backend_for()
    picks = backend.choose([_verdict_prompt("-1"), _verdict_prompt("1"), _user("?")], ["1", "-1"])
    assert picks == [1, 0, 0] and backend.choice_mode == "prompt"
    assert backend.stats.extra["choose_unmatched"] == 1  # "no idea" is counted, resolves to 0
    last = server.requests[-1].body
    assert "continue_final_message" not in last and "structured_outputs" not in last
    asked = [r.body["messages"][-1]["content"] for r in server.requests[2:]]
    assert all("exactly one of the following options and nothing else: 1, -1" in a for a in asked)


def test_choose_rejects_bad_choices(backend_for: MakeBackend) -> None:
    backend = backend_for()
    with pytest.raises(ValueError, match="at least one"):
        backend.choose([_user("x")], [])
    with pytest.raises(ValueError, match="distinct"):
        backend.choose([_user("x")], ["1", "1"])
    assert backend.choose([], ["1", "-1"]) == []


# ------------------------------------------------------------------ a real model behind HTTP


def _serve_with(backend: Backend) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An engine for the fake server: answer with deepcritic's own (HF) backend."""

    def engine(body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["messages"]
        assert body.get("continue_final_message", False) == (prompt[-1]["role"] == "assistant")
        params = SamplingParams(
            n=body["n"],
            temperature=body["temperature"],
            top_p=body["top_p"],
            max_tokens=body["max_tokens"],
            seed=body.get("seed"),
            stop=tuple(body.get("stop") or ()),
        )
        comps = backend.generate([prompt], params)[0]
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "finish_reason": c.finish_reason,
            }
            for i, c in enumerate(comps)
        ]
        usage = {
            "prompt_tokens": comps[0].prompt_tokens,
            "completion_tokens": sum(c.completion_tokens for c in comps),
        }
        return {"choices": choices, "usage": usage}

    return engine


def test_tiny_model_over_http_matches_the_model_in_process(
    server: FakeOpenAIServer, backend_for: MakeBackend, tiny_backend: Backend
) -> None:
    prompts = [
        _user("What is 2 + 2?"),
        [*_user("Solve x + 1 = 3."), {"role": "assistant", "content": "Step 1:"}],
    ]
    params = SamplingParams(max_tokens=12)
    direct = tiny_backend.generate(prompts, params)
    server.script.engine = _serve_with(tiny_backend)
    via_http = backend_for().generate(prompts, params)
    assert via_http == direct  # text, finish reason and token counts, for greedy decoding
    assert all(c.completion_tokens > 0 for g in via_http for c in g)


def test_should_stop_sends_no_request_for_a_cancelled_prompt(
    server: FakeOpenAIServer, backend_for: MakeBackend
) -> None:
    backend = backend_for(max_concurrency=1)
    prompts = [_user(f"p{i}") for i in range(4)]

    def should_stop(i: int) -> bool:  # prompt 2 goes away once two requests have been answered
        return i == 2 and len(server.requests) >= 2

    outs = backend.generate(prompts, SamplingParams(max_tokens=8), should_stop=should_stop)
    asked = [r.body["messages"][-1]["content"] for r in server.requests]
    assert asked == ["p0", "p1", "p3"]  # one worker, in order: p2 was never sent
    assert [o[0].finish_reason for o in outs] == ["stop", "stop", "cancelled", "stop"]
    assert outs[2][0].completion_tokens == 0 and outs[3][0].completion_tokens > 0
