"""The critique endpoint's request and response: validation (4xx naming the field) and rendering.

Request (v1 body, or each element of ``instances``)::

    {"problem": str, "steps": [str, ...], "samples": k?, "temperature"?, "max_tokens"?, "top_p"?,
     "id"?}

Response::

    {"first_error_step": 0-based int, -1 (all steps right) or null (no readable judgment),
     "verdicts": [{"step": 0-based, "correct": bool|null, "critique": str}, ...],
     "critique": full text, "parse_status": ..., "finish_reason": ..., "usage": {...},
     "votes": {...} (k > 1 only), "model": {"name", "version", "uri"}, "id"? }

The v2 open inference protocol carries the same thing as tensors: inputs ``problem`` (BYTES [B])
and ``steps`` (BYTES [B], each a JSON list of strings), sampling fields in ``parameters``; outputs
``result`` (BYTES [B], the JSON above) and ``critique`` (BYTES [B]).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kserve.errors import InvalidInput

from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.grader import Judgment, parse_critique
from deepcritic.prompting import critique_messages
from deepcritic.serve.config import ServeConfig

log = logging.getLogger(__name__)

REQUEST_FIELDS = ("problem", "steps", "samples", "temperature", "max_tokens", "top_p", "id")
TokenCounter = Callable[[Sequence[str]], list[int]]


class RequestError(InvalidInput):
    """A bad request: KServe answers 400 with ``{"error": "<field>: <reason>"}``."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"field '{field_name}': {reason}")
        self.field = field_name


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

    def prompt(self) -> Prompt:
        return critique_messages(self.problem, self.steps)


def _check_text(value: Any, field_name: str, max_chars: int) -> str:
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
    return _check_text(obj[name], where + name, max_chars)


def _steps(obj: dict[str, Any], where: str, config: ServeConfig) -> tuple[str, ...]:
    limits = config.limits
    if "steps" not in obj:
        raise RequestError(where + "steps", "is missing")
    steps = obj["steps"]
    if not isinstance(steps, list):
        raise RequestError(
            where + "steps", f"must be a list of strings, got {type(steps).__name__}"
        )
    if not steps:
        raise RequestError(where + "steps", "is empty")
    if len(steps) > limits.max_steps:
        raise RequestError(where + "steps", f"has {len(steps)} steps, limit {limits.max_steps}")
    for i, step in enumerate(steps):
        _check_text(step, f"{where}steps[{i}]", limits.max_step_chars)
    return tuple(steps)


def _number(
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
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise RequestError(where + name, f"must be {kind}, got {value!r:.40}")
    if not lo <= value <= hi:
        raise RequestError(where + name, f"{value} is outside [{lo}, {hi}]")
    return value


def _sampling(obj: dict[str, Any], where: str, config: ServeConfig) -> SamplingParams:
    limits = config.limits
    k = _number(obj, "samples", where, 1, 1, limits.max_samples, integer=True)
    default_t = config.temperature if k == 1 else config.vote_temperature
    temperature = _number(
        obj, "temperature", where, default_t, 0, limits.max_temperature, integer=False
    )
    max_tokens = _number(
        obj, "max_tokens", where, config.max_tokens, 1, limits.max_new_tokens, integer=True
    )
    top_p = _number(obj, "top_p", where, config.top_p, 1e-6, 1.0, integer=False)
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
    steps = _steps(obj, where, config)
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise RequestError(where + "id", f"must be a string or integer, got {rid!r:.40}")
    return CritiqueRequest(
        problem, steps, _sampling(obj, where, config), None if rid is None else str(rid)
    )


def parse_v1(body: Any, config: ServeConfig) -> tuple[list[CritiqueRequest], bool]:
    """A v1 body: one request object, or ``{"instances": [...]}``. Returns (requests, batched)."""
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
) -> list[int]:
    """Count each request's problem and steps tokens; refuse prompts over ``limits.max_prompt_tokens``."""
    texts: list[str] = []
    for r in requests:
        texts.extend([r.problem, "\n\n".join(r.steps)])
    counts = count_tokens(texts)
    limit = config.limits.max_prompt_tokens
    totals = []
    for i, _ in enumerate(requests):
        problem_n, steps_n = counts[2 * i], counts[2 * i + 1]
        if problem_n + steps_n > limit:
            where = f"instances[{i}]." if batched else ""
            name = "steps" if steps_n >= problem_n else "problem"
            raise RequestError(
                where + name,
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


def _bytes_column(tensor: Any, name: str) -> list[str]:
    try:
        values = tensor.as_numpy().reshape(-1).tolist()
    except Exception as e:  # numpy/shape mismatch inside the tensor
        raise RequestError(f"inputs.{name}", f"cannot be decoded: {e}") from e
    out = []
    for v in values:
        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
    return out


def parse_v2(infer_request: Any, config: ServeConfig) -> list[CritiqueRequest]:
    """An open-inference-protocol request -> one :class:`CritiqueRequest` per batch row."""
    columns: dict[str, list[Any]] = {}
    for name in ("problem", "steps"):
        tensor = infer_request.get_input_by_name(name)
        if tensor is None:
            raise RequestError(f"inputs.{name}", "is missing (BYTES tensor expected)")
        if tensor.datatype != "BYTES":
            raise RequestError(f"inputs.{name}", f"must have datatype BYTES, got {tensor.datatype}")
        columns[name] = _bytes_column(tensor, name)
    rows = len(columns["problem"])
    if rows != len(columns["steps"]) or rows == 0:
        raise RequestError(
            "inputs.steps", f"needs one row per problem ({rows}), got {len(columns['steps'])}"
        )
    if rows > config.limits.max_instances:
        raise RequestError(
            "inputs.problem", f"has {rows} rows, limit {config.limits.max_instances}"
        )
    params = dict(infer_request.parameters or {})
    out = []
    for i in range(rows):
        try:
            steps = json.loads(columns["steps"][i])
        except (TypeError, json.JSONDecodeError) as e:
            raise RequestError(f"inputs.steps[{i}]", "must be a JSON list of strings") from e
        obj = {"problem": columns["problem"][i], "steps": steps, **params}
        out.append(parse_request(obj, config, where=f"inputs[{i}]."))
    return out
