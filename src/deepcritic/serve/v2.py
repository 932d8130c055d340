"""The critic over the v2 open inference protocol (``POST /v2/models/<name>/infer``).

Tensors (also what ``GET /v2/models/<name>`` describes):

* inputs ``problem`` (BYTES, shape ``[B]`` or ``[B, 1]``: one problem per row) and ``steps`` (BYTES,
  same shape: each row a JSON list of step strings);
* outputs ``result`` (BYTES ``[B]``: the JSON critique response of :mod:`deepcritic.serve.schema`)
  and ``critique`` (BYTES ``[B]``: the critique text).

Request ``parameters`` hold sampling settings only (``samples``, ``temperature``, ``max_tokens``,
``top_p``) plus ``binary_data_output``; a parameter named like an input (or anything else) is
refused, so parameters can never replace the input tensors. ``outputs`` selects and orders the
returned tensors; each may ask for ``binary_data``. The binary tensor extension is supported both
ways: an ``Inference-Header-Content-Length`` header splits the body into the JSON header and raw
tensor bytes (BYTES elements as 4-byte little-endian length + bytes). Every malformed part is a
:class:`~deepcritic.serve.schema.RequestError` naming it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deepcritic.serve.config import ServeConfig
from deepcritic.serve.schema import (
    CritiqueRequest,
    ModelInfo,
    RequestError,
    check_json_content_type,
    check_request_cost,
    check_steps,
    check_text,
    decode_json,
    media_type,
    sampling_params,
)
from deepcritic.serve.validation import ascii_int

INPUTS = ("problem", "steps")
OUTPUTS = ("result", "critique")
SAMPLING = ("samples", "temperature", "max_tokens", "top_p")
PARAMETERS = (*SAMPLING, "binary_data_output")
HEADER_LENGTH = "inference-header-content-length"
# model_name / model_version: KServe's Python client sends them in the body (informational)
_BODY_KEYS = ("id", "parameters", "inputs", "outputs", "model_name", "model_version")
_TENSOR_KEYS = ("name", "shape", "datatype", "parameters", "data")


@dataclass(frozen=True)
class V2Request:
    request_id: str | None
    requests: list[CritiqueRequest]
    outputs: list[tuple[str, bool]]  # (output name, as binary data), in the order to return


def model_metadata(name: str, info: ModelInfo) -> dict[str, Any]:
    """The v2 model metadata: the input and output tensors (batch dimension -1)."""

    def tensors(names: Sequence[str]) -> list[dict[str, Any]]:
        return [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in names]

    return {
        "name": name,
        "versions": [info.version],
        "platform": "deepcritic",
        "inputs": tensors(INPUTS),
        "outputs": tensors(OUTPUTS),
    }


def _object(value: Any, field_name: str, allowed: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(field_name, f"must be a JSON object, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        where = f"{field_name}.{unknown[0]}" if field_name != "body" else unknown[0]
        raise RequestError(where, f"is not allowed here (allowed: {', '.join(allowed)})")
    return value


def _or_empty(value: Any) -> Any:
    """An absent (or null) parameters object is empty; anything else is checked as given."""
    return {} if value is None else value


def split_body(body: bytes, headers: Mapping[str, str]) -> tuple[bytes, bytes]:
    """(JSON header, binary tail) of a v2 body; checks the Content-Type and the header."""
    raw = headers.get(HEADER_LENGTH)
    if raw is None:
        check_json_content_type(headers.get("content-type"))
        return body, b""
    mime, _ = media_type(headers.get("content-type"))
    if mime != "application/octet-stream":
        check_json_content_type(headers.get("content-type"))
    n = ascii_int(raw, HEADER_LENGTH, 1, len(body))  # 1..the body's length
    return body[:n], body[n:]


def _bytes_elements(raw: bytes, field_name: str) -> list[str]:
    """Decode a binary BYTES tensor: 4-byte little-endian length + bytes, repeated."""
    out, at = [], 0
    while at < len(raw):
        if at + 4 > len(raw):
            raise RequestError(field_name, f"binary data ends inside an element length at {at}")
        (n,) = struct.unpack_from("<I", raw, at)
        at += 4
        if at + n > len(raw):
            raise RequestError(field_name, f"binary element of {n} bytes overruns the data at {at}")
        try:
            out.append(raw[at : at + n].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(field_name, f"binary element at byte {at} is not UTF-8") from None
        at += n
    return out


def _flat_rows(data: Any, shape: list[int], field_name: str) -> list[Any]:
    """``data`` as a flat list (row-major; one nesting level allowed for shape [B, 1])."""
    if not isinstance(data, list):
        raise RequestError(field_name, f"must be a list, got {type(data).__name__}")
    flat: list[Any] = []
    for i, row in enumerate(data):
        if isinstance(row, list) and len(shape) == 2:
            flat.extend(row)
        elif isinstance(row, list):
            raise RequestError(f"{field_name}[{i}]", f"must be a string (shape {shape})")
        else:
            flat.append(row)
    return flat


def _shape(value: Any, field_name: str) -> list[int]:
    ok = isinstance(value, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    )
    if not ok or not 1 <= len(value) <= 2 or (len(value) == 2 and value[1] != 1):
        raise RequestError(field_name, f"must be [B] or [B, 1] with B >= 0, got {value!r:.60}")
    return list(value)


def _tensor_values(
    tensor: dict[str, Any], where: str, tail: memoryview, at: int
) -> tuple[list[Any], int]:
    """The tensor's flat values and the new offset in the binary tail."""
    shape = _shape(tensor.get("shape"), f"{where}.shape")
    if tensor.get("datatype") != "BYTES":
        raise RequestError(
            f"{where}.datatype", f"must be BYTES, got {tensor.get('datatype')!r:.40}"
        )
    params = _object(_or_empty(tensor.get("parameters")), f"{where}.parameters",
                     ("binary_data_size", "content_type"))  # fmt: skip
    size = params.get("binary_data_size")
    if size is not None:
        if "data" in tensor:
            raise RequestError(f"{where}.data", "is not allowed with parameters.binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(tail) - at:
            raise RequestError(f"{where}.parameters.binary_data_size",
                               f"must be an integer in 0..{len(tail) - at} (binary bytes left)")  # fmt: skip
        values: list[Any] = _bytes_elements(bytes(tail[at : at + size]), f"{where}.parameters")
        at += size
    elif "data" in tensor:
        values = _flat_rows(tensor["data"], shape, f"{where}.data")
    else:
        raise RequestError(f"{where}.data", "is missing (or give parameters.binary_data_size)")
    expected = shape[0] * (shape[1] if len(shape) == 2 else 1)
    if len(values) != expected:
        raise RequestError(
            f"{where}.shape", f"{shape} needs {expected} values, data has {len(values)}"
        )
    return values, at


def _columns(inputs: Any, tail: bytes) -> dict[str, list[Any]]:
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("inputs", "must be a non-empty list of tensors")
    columns: dict[str, list[Any]] = {}
    view, at = memoryview(tail), 0
    for i, raw in enumerate(inputs):
        tensor = _object(raw, f"inputs[{i}]", _TENSOR_KEYS)
        name = tensor.get("name")
        if name not in INPUTS:
            raise RequestError(
                f"inputs[{i}].name", f"must be one of {list(INPUTS)}, got {name!r:.40}"
            )
        if name in columns:
            raise RequestError(f"inputs[{i}].name", f"{name!r} is given twice")
        columns[name], at = _tensor_values(tensor, f"inputs[{i}]", view, at)
    if at != len(tail):
        raise RequestError(
            HEADER_LENGTH, f"{len(tail) - at} binary bytes are not claimed by any input"
        )
    for name in INPUTS:
        if name not in columns:
            raise RequestError(f"inputs.{name}", "is missing (BYTES tensor expected)")
    return columns


def _outputs(value: Any, binary_default: bool) -> list[tuple[str, bool]]:
    if value is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(value, list) or not value:
        raise RequestError("outputs", 'must be a non-empty list of {"name": ...} objects')
    out: list[tuple[str, bool]] = []
    for i, raw in enumerate(value):
        spec = _object(raw, f"outputs[{i}]", ("name", "parameters"))
        name = spec.get("name")
        if name not in OUTPUTS:
            raise RequestError(
                f"outputs[{i}].name", f"must be one of {list(OUTPUTS)}, got {name!r:.40}"
            )
        if any(name == n for n, _ in out):
            raise RequestError(f"outputs[{i}].name", f"{name!r} is requested twice")
        params = _object(
            _or_empty(spec.get("parameters")), f"outputs[{i}].parameters", ("binary_data",)
        )
        binary = params.get("binary_data", binary_default)
        if not isinstance(binary, bool):
            raise RequestError(f"outputs[{i}].parameters.binary_data", "must be true or false")
        out.append((name, binary))
    return out


def _rows(
    columns: dict[str, list[Any]], config: ServeConfig, params: dict[str, Any]
) -> list[CritiqueRequest]:
    rows = len(columns["problem"])
    if rows != len(columns["steps"]) or rows == 0:
        raise RequestError(
            "inputs.steps", f"needs one row per problem ({rows}), got {len(columns['steps'])}"
        )
    if rows > config.limits.max_instances:
        raise RequestError(
            "inputs.problem", f"has {rows} rows, limit {config.limits.max_instances}"
        )
    sampling = sampling_params(
        {k: params[k] for k in SAMPLING if k in params}, "parameters.", config
    )
    limits = config.limits
    out = []
    for i in range(rows):
        problem = check_text(
            columns["problem"][i], f"inputs.problem[{i}]", limits.max_problem_chars
        )
        row = check_text(
            columns["steps"][i],
            f"inputs.steps[{i}]",
            limits.max_steps * (limits.max_step_chars + 8),
        )
        steps = check_steps(
            decode_json(row.encode(), f"inputs.steps[{i}]"), f"inputs.steps[{i}]", config
        )
        out.append(CritiqueRequest(problem, steps, sampling))
    return out


def parse_v2(body: bytes, headers: Mapping[str, str], config: ServeConfig) -> V2Request:
    """An infer request body (JSON, or JSON + binary tensors) -> validated critique requests."""
    head, tail = split_body(body, headers)
    obj = _object(decode_json(head), "body", _BODY_KEYS)
    for key in ("model_name", "model_version"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise RequestError(key, f"must be a string, got {type(obj[key]).__name__}")
    rid = obj.get("id")
    if rid is not None and (not isinstance(rid, (str, int)) or isinstance(rid, bool)):
        raise RequestError("id", f"must be a string, got {type(rid).__name__}")
    params = _object(_or_empty(obj.get("parameters")), "parameters", PARAMETERS)
    binary = params.get("binary_data_output", False)
    if not isinstance(binary, bool):
        raise RequestError("parameters.binary_data_output", "must be true or false")
    requests = _rows(_columns(obj.get("inputs"), tail), config, params)
    check_request_cost(requests, config, "parameters")
    return V2Request(
        None if rid is None else str(rid), requests, _outputs(obj.get("outputs"), binary)
    )


def _encode_bytes(values: Sequence[str]) -> bytes:
    parts = []
    for v in values:
        data = v.encode("utf-8")
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def encode_v2_response(
    req: V2Request, responses: Sequence[dict[str, Any]], model_name: str, version: str
) -> tuple[bytes, dict[str, str]]:
    """The infer response body and its headers (binary tensors appended after the JSON)."""
    columns = {
        "result": [json.dumps(r, ensure_ascii=False) for r in responses],
        "critique": [str(r["critique"]) for r in responses],
    }
    outputs, raw = [], []
    for name, binary in req.outputs:
        tensor: dict[str, Any] = {"name": name, "datatype": "BYTES", "shape": [len(responses)]}
        if binary:
            data = _encode_bytes(columns[name])
            tensor["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        else:
            tensor["data"] = columns[name]
        outputs.append(tensor)
    head: dict[str, Any] = {"model_name": model_name, "model_version": version, "outputs": outputs}
    if req.request_id is not None:
        head["id"] = req.request_id
    body = json.dumps(head, ensure_ascii=False).encode("utf-8")
    if not raw:
        return body, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(body))}
    return body + b"".join(raw), headers
