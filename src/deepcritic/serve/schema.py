"""The critique endpoint's request and response: validation (4xx naming the field) and rendering.

Request (v1 body, or each element of ``instances``)::

    {"problem": str, "steps": [str, ...], "samples": k?, "temperature"?, "max_tokens"?, "top_p"?,
     "id"?}

Response::

    {"first_error_step": 0-based int, -1 (all steps right) or null (no readable judgment),
     "verdicts": [{"step": 0-based, "correct": bool|null, "critique": str}, ...],
     "critique": full text, "parse_status": ..., "finish_reason": ..., "usage": {...},
     "votes": {...} (k > 1 only), "model": {"name", "version", "uri"}, "id"? }

The v2 open inference protocol carries the same thing as tensors (:mod:`deepcritic.serve.v2`).

Every refusal is a :class:`RequestError`: a 4xx answered as ``{"error": "field '<name>': <why>"}``.
Bodies are UTF-8 JSON sent as ``application/json`` (any parameters, charset UTF-8) or with no
Content-Type; form and text types are refused (415) so a web page cannot post to a local server
without a CORS preflight.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.grader import Judgment, parse_critique
from deepcritic.reference import critic_prompt
from deepcritic.serve.config import ServeConfig
from deepcritic.serve.validation import RequestError as RequestError
from deepcritic.serve.validation import check_unicode

log = logging.getLogger(__name__)

REQUEST_FIELDS = ("problem", "steps", "samples", "temperature", "max_tokens", "top_p", "id")
TokenCounter = Callable[[Sequence[str]], list[int]]


JSON_TYPES = ("application/json",)  # plus any application/*+json
_TEXT_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """``"application/json; charset=UTF-8"`` -> ``("application/json", {"charset": "utf-8"})``."""
    if not content_type:
        return "", {}
    mime, *params = content_type.split(";")
    parsed = {}
    for param in params:
        key, _, value = param.partition("=")
        parsed[key.strip().lower()] = value.strip().strip('"').lower()
    return mime.strip().lower(), parsed


def check_json_content_type(content_type: str | None) -> None:
    """JSON (any parameters, UTF-8) or no Content-Type; anything else is a 415."""
    mime, params = media_type(content_type)
    is_json = mime in JSON_TYPES or (mime.startswith("application/") and mime.endswith("+json"))
    if mime and not is_json:
        raise RequestError(
            "content-type",
            f"{mime} is not accepted: send JSON with 'Content-Type: application/json'",
            415,
        )
    charset = params.get("charset")
    if charset and charset not in _TEXT_CHARSETS:
        raise RequestError("content-type", f"charset {charset} is not accepted: send UTF-8", 415)


def decode_json(data: bytes, field_name: str = "body") -> Any:
    """UTF-8 JSON -> Python; every failure (bad UTF-8, bad JSON, NaN, nesting deeper than the
    parser's recursion limit, a string holding a lone surrogate) is a :class:`RequestError`
    naming the field."""
    if not data.strip():
        raise RequestError(field_name, "is empty (send a JSON object)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RequestError(field_name, f"is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise RequestError(field_name, "nests arrays/objects too deeply") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno} column {e.colno}"
        raise RequestError(field_name, f"is not valid JSON ({e.msg} at {where})") from None
    except ValueError as e:  # NaN / Infinity
        raise RequestError(field_name, f"is not valid JSON ({e})") from None
    check_unicode(value, "" if field_name == "body" else field_name)
    return value


@dataclass(frozen=True)
class ModelInfo:
    """Which critic answered: registry name + version, and where it was loaded from."""

    name: str
    version: str
    uri: str
    path: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "uri": self.uri}


@dataclass(frozen=True)
class CritiqueRequest:
    problem: str
    steps: tuple[str, ...]
    params: SamplingParams
    request_id: str | None = None

    @property
    def samples(self) -> int:
        return self.params.n

    @property
    def cost(self) -> int:
        """New tokens this request may generate: samples x max_tokens."""
        return self.params.n * self.params.max_tokens

    def prompt(self, special_tokens: Iterable[str] = (), prompt_set: str = "deepcritic") -> Prompt:
        """The critique prompt of ``prompt_set`` (:func:`deepcritic.reference.critic_prompt`);
        control tokens in the problem and steps are escaped in either set."""
        return critic_prompt(self.problem, self.steps, prompt_set, special_tokens=special_tokens)


def check_text(value: Any, field_name: str, max_chars: int) -> str:
    """A non-empty string of at most ``max_chars`` characters."""
    if not isinstance(value, str):
        raise RequestError(field_name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError(field_name, "is empty")
    if len(value) > max_chars:
        raise RequestError(field_name, f"has {len(value)} characters, limit {max_chars}")
    return value


def _text(obj: dict[str, Any], name: str, where: str, max_chars: int) -> str:
    if name not in obj:
        raise RequestError(where + name, "is missing")
    return check_text(obj[name], where + name, max_chars)


def check_steps(steps: Any, field_name: str, config: ServeConfig) -> tuple[str, ...]:
    """A non-empty list of at most ``limits.max_steps`` step strings."""
    limits = config.limits
    if not isinstance(steps, list):
        raise RequestError(field_name, f"must be a list of strings, got {type(steps).__name__}")
    if not steps:
        raise RequestError(field_name, "is empty")
    if len(steps) > limits.max_steps:
        raise RequestError(field_name, f"has {len(steps)} steps, limit {limits.max_steps}")
    for i, step in enumerate(steps):
        check_text(step, f"{field_name}[{i}]", limits.max_step_chars)
    return tuple(steps)


def number_field(
    obj: dict[str, Any],
    name: str,
    where: str,
    default: float,
    lo: float,
    hi: float,
    *,
    integer: bool,
) -> Any:
    value = obj.get(name, default)
    if value is None:
        value = default
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not ok_type or not finite:
        kind = "an integer" if integer else "a number"
        raise RequestError(where + name, f"must be {kind}, got {value!r:.40}")
    if not lo <= value <= hi:
        raise RequestError(where + name, f"{value} is outside [{lo}, {hi}]")
    return value


def sampling_params(obj: dict[str, Any], where: str, config: ServeConfig) -> SamplingParams:
    """``samples``, ``temperature``, ``max_tokens``, ``top_p`` of ``obj`` within the limits."""
    limits = config.limits
    k = number_field(obj, "samples", where, 1, 1, limits.max_samples, integer=True)
    default_t = config.temperature if k == 1 else config.vote_temperature
    temperature = number_field(
        obj, "temperature", where, default_t, 0, limits.max_temperature, integer=False
    )
    max_tokens = number_field(
        obj, "max_tokens", where, config.max_tokens, 1, limits.max_new_tokens, integer=True
    )
    top_p = number_field(obj, "top_p", where, config.top_p, 1e-6, 1.0, integer=False)
    return SamplingParams(
        n=k, temperature=float(temperature), top_p=float(top_p), max_tokens=max_tokens
    )


def parse_request(obj: Any, config: ServeConfig, *, where: str = "") -> CritiqueRequest:
    """Validate one request object; raise :class:`RequestError` naming the bad field."""
    if not isinstance(obj, dict):
        raise RequestError(
            where.rstrip(".") or "body", f"must be a JSON object, got {type(obj).__name__}"
        )
    unknown = sorted(set(obj) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(
            where + unknown[0], f"is not a known field (known: {', '.join(REQUEST_FIELDS)})"
        )
    problem = _text(obj, "problem", where, config.limits.max_problem_chars)
    if "steps" not in obj:
        raise RequestError(where + "steps", "is missing")
    steps = check_steps(obj["steps"], where + "steps", config)
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise RequestError(where + "id", f"must be a string or integer, got {rid!r:.40}")
    return CritiqueRequest(
        problem, steps, sampling_params(obj, where, config), None if rid is None else str(rid)
    )


def check_request_cost(
    requests: Sequence[CritiqueRequest], config: ServeConfig, field_name: str
) -> int:
    """Refuse a request whose instances x samples x max_tokens exceed
    ``limits.max_request_tokens``; returns the total."""
    total = sum(r.cost for r in requests)
    limit = config.limits.max_request_tokens
    if total > limit:
        detail = " + ".join(f"{r.samples}x{r.params.max_tokens}" for r in requests[:8])
        more = " + ..." if len(requests) > 8 else ""
        raise RequestError(
            field_name,
            f"asks for up to {total} new tokens (samples x max_tokens: {detail}{more}), "
            f"limit {limit} per request (limits.max_request_tokens)",
        )
    return total


def parse_v1(body: Any, config: ServeConfig) -> tuple[list[CritiqueRequest], bool]:
    """A v1 body: one request object, or ``{"instances": [...]}``. Returns (requests, batched)."""
    requests, batched = _parse_v1(body, config)
    check_request_cost(requests, config, "instances" if batched else "max_tokens")
    return requests, batched


def _parse_v1(body: Any, config: ServeConfig) -> tuple[list[CritiqueRequest], bool]:
    if isinstance(body, (bytes, str)):
        raise RequestError("body", "must be a JSON object (send Content-Type: application/json)")
    if isinstance(body, dict) and "instances" in body:
        instances = body["instances"]
        extra = sorted(set(body) - {"instances"})
        if extra:
            raise RequestError(extra[0], "is not allowed beside 'instances'")
        if not isinstance(instances, list) or not instances:
            raise RequestError("instances", "must be a non-empty list of request objects")
        if len(instances) > config.limits.max_instances:
            raise RequestError(
                "instances", f"has {len(instances)} items, limit {config.limits.max_instances}"
            )
        return [
            parse_request(x, config, where=f"instances[{i}].") for i, x in enumerate(instances)
        ], True
    return [parse_request(body, config)], False


def check_prompt_tokens(
    requests: Sequence[CritiqueRequest],
    count_tokens: TokenCounter,
    config: ServeConfig,
    *,
    batched: bool,
    v2: bool = False,
) -> list[int]:
    """Count each request's problem and steps tokens; refuse prompts over
    ``limits.max_prompt_tokens`` (the error names ``[instances[i].]problem|steps``, or
    ``inputs.problem|steps[i]`` for v2)."""
    texts: list[str] = []
    for r in requests:
        texts.extend([r.problem, "\n\n".join(r.steps)])
    counts = count_tokens(texts)
    limit = config.limits.max_prompt_tokens
    totals = []
    for i, _ in enumerate(requests):
        problem_n, steps_n = counts[2 * i], counts[2 * i + 1]
        if problem_n + steps_n > limit:
            name = "steps" if steps_n >= problem_n else "problem"
            if v2:
                name = f"inputs.{name}[{i}]"
            elif batched:
                name = f"instances[{i}].{name}"
            raise RequestError(
                name,
                f"the critique prompt is too long: problem {problem_n} + steps {steps_n} tokens, "
                f"limit {limit}",
            )
        totals.append(problem_n + steps_n)
    return totals


def _label_in_range(j: Judgment, n_steps: int) -> int | None:
    label = j.label
    return label if label is not None and -1 <= label < n_steps else None


def _verdicts(j: Judgment, n_steps: int) -> list[dict[str, Any]]:
    out = [
        {"step": v.step - 1, "correct": v.correct, "critique": v.critique}
        for v in j.verdicts
        if 1 <= v.step <= n_steps
    ]
    if len(out) < len(j.verdicts):
        log.warning(
            "ignored %d verdict(s) for steps outside 1..%d", len(j.verdicts) - len(out), n_steps
        )
    return out


def _vote(labels: list[int | None]) -> tuple[int | None, dict[str, Any]]:
    from deepcritic.scoring import majority_vote

    winner = majority_vote(labels)
    counts = Counter(label for label in labels if label is not None)
    votes = {
        "labels": labels,
        "counts": {str(k): v for k, v in sorted(counts.items())},
        "unparsed": sum(label is None for label in labels),
        "agreement": counts[winner] / len(labels) if winner is not None else 0.0,
    }
    return winner, votes


def build_response(
    req: CritiqueRequest, completions: Sequence[Completion], model: ModelInfo
) -> dict[str, Any]:
    """Parse every sampled critique with the one grader and render the response object."""
    n = len(req.steps)
    judgments = [parse_critique(c.text) for c in completions]
    labels = [_label_in_range(j, n) for j in judgments]
    votes: dict[str, Any] | None = None
    if len(completions) > 1:
        first, votes = _vote(labels)
        chosen = next((i for i, label in enumerate(labels) if label == first), 0)
    else:
        first, chosen = labels[0], 0
    j, c = judgments[chosen], completions[chosen]
    status = j.status.value if first is not None or j.label is None else "out_of_range"
    out: dict[str, Any] = {
        "first_error_step": first,
        "verdicts": _verdicts(j, n),
        "critique": c.text,
        "parse_status": status,
        "finish_reason": c.finish_reason,
        "usage": {
            "prompt_tokens": completions[0].prompt_tokens,
            "completion_tokens": sum(x.completion_tokens for x in completions),
        },
        "model": model.to_dict(),
    }
    if votes is not None:
        out["votes"] = votes
    if req.request_id is not None:
        out["id"] = req.request_id
    return out
