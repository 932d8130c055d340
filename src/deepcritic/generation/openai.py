"""OpenAI-compatible HTTP backend: a ``vllm serve`` server, a KServe OpenAI route, a hosted API.

Requests go to ``{base_url}/chat/completions`` (the OpenAI chat completions API):

* **Concurrency** is bounded by ``config.max_concurrency``: a thread pool of that many workers
  shares one ``httpx.Client`` (so it works from any thread, inside or outside an event loop).
* **Retries**: connection errors, timeouts, HTTP 429 and 5xx are retried up to
  ``config.max_retries`` times with exponential backoff and full jitter (a ``Retry-After`` header
  is honoured, capped). Other 4xx fail at once with :class:`EndpointError` naming URL and status.
* **Auth**: the key is read from the env var named by ``config.api_key_env`` and sent as
  ``Authorization: Bearer``; no key, no header. The key is never logged or put in an error.
* **n samples**: ``n`` is sent; a server that returns fewer choices (some ignore ``n``) gets the
  missing samples as separate ``n=1`` requests (seed ``seed + k`` for sample ``k``), and later calls
  on the same backend go straight to separate requests.
* **Prefill**: a prompt ending in an assistant message is sent with vLLM's extra parameters
  ``continue_final_message: true, add_generation_prompt: false``; the reply is the continuation only.
* **Token counts**: ``usage.prompt_tokens`` goes on every completion of the request; with several
  choices per request ``usage.completion_tokens`` (a total) is split across them in proportion to
  their text length (largest remainder, so the sum is exact).
* **should_stop**: a cancelled prompt's requests that have not been sent are never sent; one
  already in flight (a blocking HTTP call) runs to its end. Either way its completions come back
  with ``finish_reason="cancelled"``.
* **choose()**: constrained decoding through vLLM's ``structured_outputs: {"choice": [...]}``
  (vLLM >= 0.11), else the older ``guided_choice`` (vLLM <= 0.11), else a prompt that asks for exactly
  one of the choices and matches the reply (:func:`match_choice`). The mode is probed once on the
  first prompt (a 400/422 reply, or a reply that is not exactly a choice, means "not supported") and
  kept on ``backend.choice_mode``. A reply matching no choice (possible only when the server does not
  constrain decoding) is logged, counted in ``stats.extra["choose_unmatched"]`` and resolves to
  choice 0.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Literal

import httpx
from tqdm.auto import tqdm

from deepcritic.generation.base import (
    Completion,
    GenerationStats,
    Prompt,
    SamplingParams,
    StopCheck,
    cancelled_completion,
    check_prompts,
    continues_assistant,
    finish_reason_from,
    match_choice,
)
from deepcritic.generation.config import BackendConfig
from deepcritic.prompting import load_prompt, render_template

log = logging.getLogger(__name__)

ChoiceMode = Literal["structured_outputs", "guided_choice", "prompt"]
CHOICE_MODES: tuple[ChoiceMode, ...] = ("structured_outputs", "guided_choice", "prompt")
_UNSUPPORTED_STATUS = (400, 422)  # how servers reject an extra field they do not know
# The choose() fallback for servers without guided decoding (one line, filled per prompt).


class EndpointError(RuntimeError):
    """A request the endpoint refused (non-retryable 4xx) or that failed after every retry."""

    def __init__(self, url: str, status: int | None, detail: str):
        what = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"POST {url} failed ({what}): {detail}")
        self.url = url
        self.status = status
        self.detail = detail


# ------------------------------------------------------------------ pure request/response mapping


def build_request_body(
    model: str,
    prompt: Prompt,
    params: SamplingParams,
    *,
    n: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """The JSON body of one chat completions request (``n``/``seed`` override ``params``)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m["role"], "content": m["content"]} for m in prompt],
        "n": params.n if n is None else n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
    }
    seed = params.seed if seed is None else seed
    if seed is not None:
        body["seed"] = seed
    if params.stop:
        body["stop"] = list(params.stop)
    if continues_assistant(prompt):  # vLLM's extra parameters for prefill
        body["continue_final_message"] = True
        body["add_generation_prompt"] = False
    return body


def split_tokens(total: int, texts: Sequence[str]) -> list[int]:
    """Split a token total across texts in proportion to their length; the parts sum to ``total``."""
    if not texts:
        return []
    weights = [len(t) for t in texts] if any(texts) else [1] * len(texts)
    exact = [total * w / sum(weights) for w in weights]
    parts = [int(x) for x in exact]
    by_remainder = sorted(range(len(texts)), key=lambda i: (parts[i] - exact[i], i))
    for i in by_remainder[: total - sum(parts)]:
        parts[i] += 1
    return parts


def completions_from_response(data: Any, url: str) -> tuple[list[Completion], bool]:
    """Parse a chat completions response; returns the completions (in choice order) and whether
    ``usage`` was present. A malformed body raises :class:`EndpointError` naming the field."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise EndpointError(url, 200, f"response has no 'choices' list: {str(data)[:300]}")
    ordered = sorted(enumerate(choices), key=lambda ic: (_choice_index(ic[1], ic[0], url), ic[0]))
    texts, reasons = [], []
    for i, choice in ordered:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if content is not None and not isinstance(content, str):
            raise EndpointError(url, 200, f"choices[{i}].message.content is not a string")
        texts.append(content or "")
        reasons.append(finish_reason_from(choice.get("finish_reason")))
    usage = data.get("usage")
    has_usage = isinstance(usage, dict)
    prompt_tokens = int(usage.get("prompt_tokens") or 0) if has_usage else 0
    total = int(usage.get("completion_tokens") or 0) if has_usage else 0
    tokens = split_tokens(total, texts)
    comps = [
        Completion(text=t, finish_reason=r, prompt_tokens=prompt_tokens, completion_tokens=k)
        for t, r, k in zip(texts, reasons, tokens, strict=True)
    ]
    return comps, has_usage


def _choice_index(choice: Any, position: int, url: str) -> int:
    if not isinstance(choice, dict):
        raise EndpointError(url, 200, f"choices[{position}] is not an object")
    index = choice.get("index", position)
    return index if isinstance(index, int) else position


def choice_fallback_prompt(prompt: Prompt, choices: Sequence[str]) -> Prompt:
    """The prompt-only version of ``choose``: ask for exactly one option in plain words.

    A trailing assistant prefill cannot be continued by every server, so it is kept as a finished
    turn and a user message asks to continue it; otherwise the instruction joins the last user turn.
    """
    instruction = render_template(
        load_prompt("choose_fallback.md").strip(), options=", ".join(choices)
    )
    messages = [dict(m) for m in prompt]
    if continues_assistant(prompt):
        tail = prompt[-1]["content"][-200:]
        messages.append(
            {
                "role": "user",
                "content": render_template(load_prompt("choose_continue.md"), tail=tail)
                + instruction,
            }
        )
    elif messages and messages[-1]["role"] == "user":
        messages[-1]["content"] = f"{messages[-1]['content'].rstrip()}\n\n{instruction}"
    else:
        messages.append({"role": "user", "content": instruction})
    return messages


def _error_detail(response: httpx.Response) -> str:
    try:
        data = response.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        return str(msg)[:500]
    except ValueError:
        return response.text[:500] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


# ------------------------------------------------------------------ the backend

_Job = tuple[int, int, int]  # (prompt index, index of its first sample, n for this request)


class OpenAIBackend:
    """:class:`~deepcritic.generation.base.Backend` over an OpenAI-compatible HTTP endpoint."""

    name = "openai"

    def __init__(
        self, config: BackendConfig, *, backoff_base_s: float = 0.5, backoff_max_s: float = 20.0
    ) -> None:
        if config.max_concurrency < 1:
            raise ValueError(
                f"generation.max_concurrency must be >= 1, got {config.max_concurrency}"
            )
        if config.max_retries < 0:
            raise ValueError(f"generation.max_retries must be >= 0, got {config.max_retries}")
        if config.timeout_s <= 0:
            raise ValueError(f"generation.timeout_s must be > 0, got {config.timeout_s}")
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"
        self.stats = GenerationStats()
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.choice_mode: ChoiceMode | None = None  # probed on the first choose()
        self.server_honours_n = True  # set False once a server returns fewer choices than n
        self._lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(config.api_key_env, "") if config.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=config.max_concurrency)
        self._client: httpx.Client | None = httpx.Client(
            headers=headers, timeout=httpx.Timeout(config.timeout_s), limits=limits
        )
        log.info(
            "OpenAI-compatible backend: %s model=%s api key %s",
            self.url,
            config.model,
            f"from ${config.api_key_env}" if key else "not set",
        )

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIBackend(url={self.url!r}, model={self.config.model!r})"

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP with retries

    def _count(self, key: str, amount: float = 1.0) -> None:
        with self._lock:
            self.stats.extra[key] = self.stats.extra.get(key, 0.0) + amount

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After is a floor. Capped."""
        delay = random.uniform(0, self.backoff_base_s * 2 ** (attempt - 1))
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.backoff_max_s)

    def post(self, body: dict[str, Any]) -> Any:
        """POST one request; retry transient failures; return the decoded JSON body."""
        if self._client is None:
            raise RuntimeError("OpenAIBackend is closed")
        last, retry_after = "", None
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self._count("http_retries")
                time.sleep(self._backoff(attempt, retry_after))
            self._count("http_requests")
            retry_after = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException as e:
                last = f"timed out after {self.config.timeout_s:g} s ({type(e).__name__})"
                continue
            except httpx.TransportError as e:
                last = f"connection error: {type(e).__name__}: {e}"
                continue
            if response.is_success:
                return self._decode(response)
            detail = f"HTTP {response.status_code}: {_error_detail(response)}"
            if response.status_code == 429 or response.status_code >= 500:
                last, retry_after = detail, _retry_after(response)
                log.debug("retryable failure from %s: %s", self.url, detail)
                continue
            raise EndpointError(self.url, response.status_code, _error_detail(response))
        attempts = self.config.max_retries + 1
        raise EndpointError(
            self.url, None, f"gave up after {attempts} attempts; last error: {last}"
        )

    def _decode(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise EndpointError(
                self.url, response.status_code, f"response is not JSON: {response.text[:200]!r}"
            ) from e

    def _request(
        self, prompt: Prompt, params: SamplingParams, n: int, seed: int | None
    ) -> list[Completion]:
        body = build_request_body(self.config.model, prompt, params, n=n, seed=seed)
        comps, has_usage = completions_from_response(self.post(body), self.url)
        if not has_usage:
            self._count("responses_without_usage")
        return comps

    # ------------------------------------------------------------------ generate

    def _first_jobs(self, count: int, params: SamplingParams) -> list[_Job]:
        if params.n == 1 or self.server_honours_n:
            return [(i, 0, params.n) for i in range(count)]
        return [(i, k, 1) for i in range(count) for k in range(params.n)]

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        *,
        desc: str | None = None,
        should_stop: StopCheck | None = None,
    ) -> list[list[Completion]]:
        """``params.n`` completions per prompt, in prompt order; ``desc`` labels a progress bar;
        a prompt for which ``should_stop(i)`` is true sends no more requests (module doc)."""
        items = check_prompts(prompts)
        start = time.perf_counter()
        slots: list[list[Completion | None]] = [[None] * params.n for _ in items]
        filled = [0] * len(items)

        def on_done(job: _Job, comps: list[Completion]) -> list[_Job]:
            i, k, asked = job
            if len(comps) > asked:
                log.warning(
                    "%s returned %d choices for n=%d; kept %d", self.url, len(comps), asked, asked
                )
            kept = comps[:asked]
            slots[i][k : k + len(kept)] = kept
            filled[i] += len(kept)
            if filled[i] == params.n:
                bar.update(1)
            if len(kept) == asked:
                return []
            if self.server_honours_n:
                log.warning(
                    "%s returned %d of n=%d choices: sending separate requests",
                    self.url,
                    len(kept),
                    asked,
                )
                self.server_honours_n = False
            return [(i, j, 1) for j in range(k + len(kept), k + asked)]

        def call(job: _Job) -> list[Completion]:
            i, k, n = job
            if should_stop is not None and should_stop(i):
                return [cancelled_completion()] * n
            return self._request(items[i], params, n, _seed_for(params.seed, k))

        with tqdm(total=len(items), desc=desc, unit="prompt", disable=desc is None) as bar:
            self._run_jobs(self._first_jobs(len(items), params), call, on_done)
        groups = [[c for c in group if c is not None] for group in slots]
        if should_stop is not None:
            groups = [_cancelled(g) if should_stop(i) else g for i, g in enumerate(groups)]
        self.stats.add(groups, time.perf_counter() - start)
        return groups

    def _run_jobs(
        self,
        jobs: list[_Job],
        call: Callable[[_Job], list[Completion]],
        on_done: Callable[[_Job, list[Completion]], list[_Job]],
    ) -> None:
        """Run jobs on at most ``max_concurrency`` workers; ``on_done`` (main thread) may add jobs.
        The first failure cancels what has not started and is raised."""
        workers = max(1, min(self.config.max_concurrency, len(jobs)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
            pending: dict[Future[list[Completion]], _Job] = {pool.submit(call, j): j for j in jobs}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job = pending.pop(fut)
                        for extra in on_done(job, fut.result()):
                            pending[pool.submit(call, extra)] = extra
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise

    # ------------------------------------------------------------------ choose

    def choose(self, prompts: Sequence[Prompt], choices: Sequence[str]) -> list[int]:
        """For each prompt, the index of the choice the model produces (see the module doc)."""
        options = list(choices)
        if not options:
            raise ValueError("choose() needs at least one choice")
        if len(set(options)) != len(options):
            raise ValueError(f"choose() choices must be distinct, got {options}")
        items = check_prompts(prompts)
        if not items:
            return []
        start = time.perf_counter()
        replies: list[str] = [""] * len(items)
        first = 0
        if self.choice_mode is None:
            self.choice_mode, replies[0] = self._probe_choice_mode(items[0], options)
            first = 1
        mode = self.choice_mode
        workers = max(1, min(self.config.max_concurrency, len(items)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
            rest = pool.map(lambda p: self._choice_reply(p, options, mode), items[first:])
            replies[first:] = list(rest)
        picked = [match_choice(r, options) for r in replies]
        unmatched = sum(p is None for p in picked)
        if unmatched:
            log.warning(
                "choose(): %d of %d replies matched none of %s (mode %s); they resolve to %r",
                unmatched, len(items), options, mode, options[0],
            )  # fmt: skip
        self._count("choose_unmatched", unmatched)
        self._count("choose_prompts", len(items))
        self._count("choose_seconds", time.perf_counter() - start)
        return [0 if p is None else p for p in picked]

    def _choice_reply(self, prompt: Prompt, choices: list[str], mode: ChoiceMode) -> str:
        longest = max(len(c) for c in choices)
        if mode == "prompt":
            params = SamplingParams(temperature=0.0, max_tokens=longest + 32)
            return self._request(choice_fallback_prompt(prompt, choices), params, 1, None)[0].text
        params = SamplingParams(temperature=0.0, max_tokens=longest + 8)
        body = build_request_body(self.config.model, prompt, params, n=1)
        if mode == "structured_outputs":
            body["structured_outputs"] = {"choice": choices}
        else:
            body["guided_choice"] = choices
        return completions_from_response(self.post(body), self.url)[0][0].text

    def _probe_choice_mode(self, prompt: Prompt, choices: list[str]) -> tuple[ChoiceMode, str]:
        """Find the first mode the server honours: a guided mode counts when the server accepts
        the field and replies with exactly one of the choices."""
        for mode in CHOICE_MODES[:-1]:
            try:
                reply = self._choice_reply(prompt, choices, mode)
            except EndpointError as e:
                if e.status not in _UNSUPPORTED_STATUS:
                    raise
                log.info(
                    "%s rejects %s (%s); trying the next choice mode", self.url, mode, e.detail
                )
                continue
            if reply.strip() in choices:
                log.info("choose(): %s supports %s", self.url, mode)
                return mode, reply
            log.info(
                "%s ignored %s (reply %r); trying the next choice mode", self.url, mode, reply[:40]
            )
        log.warning("choose(): %s has no guided decoding; asking in the prompt instead", self.url)
        return "prompt", self._choice_reply(prompt, choices, "prompt")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _cancelled(group: list[Completion]) -> list[Completion]:
    """A cancelled prompt's completions, with what they hold, marked ``cancelled``."""
    return [cancelled_completion(c.prompt_tokens, c.text, c.completion_tokens) for c in group]


def _seed_for(seed: int | None, k: int) -> int | None:
    """The seed of the ``k``-th sample when samples go out as separate requests."""
    return None if seed is None else seed + k
