"""The v2 open inference protocol: parsing (JSON and binary tensors), refusals, responses."""

from __future__ import annotations

import json
import struct

import pytest

from deepcritic.serve.config import LimitsConfig, ServeConfig
from deepcritic.serve.schema import ModelInfo, RequestError
from deepcritic.serve.v2 import (
    HEADER_LENGTH,
    V2Request,
    encode_v2_response,
    model_metadata,
    parse_v2,
)

CONFIG = ServeConfig(
    max_tokens=16,
    limits=LimitsConfig(max_steps=4, max_samples=4, max_new_tokens=64, max_request_tokens=128),
)
JSON = {"content-type": "application/json"}
STEPS = [json.dumps(["1 + 1 = 3", "So 3."]), json.dumps(["2"])]


def _body(**kw: object) -> dict:
    body: dict[str, object] = {
        "inputs": [
            {"name": "problem", "shape": [2], "datatype": "BYTES", "data": ["1+1?", "2?"]},
            {"name": "steps", "shape": [2], "datatype": "BYTES", "data": STEPS},
        ]
    }
    body.update(kw)
    return body


def _parse(body: object, headers: dict | None = None) -> V2Request:
    return parse_v2(json.dumps(body).encode(), headers or JSON, CONFIG)


def _bytes_tensor(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def test_rows_parameters_and_default_outputs() -> None:
    req = _parse(_body(id="r1", parameters={"max_tokens": 4, "samples": 2}))
    assert [r.steps for r in req.requests] == [("1 + 1 = 3", "So 3."), ("2",)]
    assert all(r.params.max_tokens == 4 and r.params.n == 2 for r in req.requests)
    assert req.request_id == "r1" and req.outputs == [("result", False), ("critique", False)]
    shaped = _body()
    for t in shaped["inputs"]:  # shape [B, 1] with nested rows
        t["shape"], t["data"] = [2, 1], [[x] for x in t["data"]]
    assert len(_parse(shaped).requests) == 2


def test_binary_input_tensors() -> None:
    problems, steps = _bytes_tensor(["1+1?", "2?"]), _bytes_tensor(STEPS)
    head = _body()
    head["inputs"][0] = {"name": "problem", "shape": [2], "datatype": "BYTES",
                         "parameters": {"binary_data_size": len(problems)}}  # fmt: skip
    head["inputs"][1] = {"name": "steps", "shape": [2], "datatype": "BYTES",
                         "parameters": {"binary_data_size": len(steps)}}  # fmt: skip
    raw = json.dumps(head).encode()
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(raw))}
    req = parse_v2(raw + problems + steps, headers, CONFIG)
    assert [r.problem for r in req.requests] == ["1+1?", "2?"]
    bad = [
        ({HEADER_LENGTH: "abc"}, raw + problems + steps, HEADER_LENGTH),
        ({HEADER_LENGTH: "-4"}, raw + problems + steps, HEADER_LENGTH),
        ({HEADER_LENGTH: str(10**9)}, raw + problems + steps, HEADER_LENGTH),
        ({HEADER_LENGTH: str(len(raw) - 3)}, raw + problems + steps, "body"),
        ({HEADER_LENGTH: str(len(raw))}, raw + problems, "inputs[1].parameters.binary_data_size"),
        ({HEADER_LENGTH: str(len(raw))}, raw + problems + steps + b"x", HEADER_LENGTH),
        (
            {HEADER_LENGTH: str(len(raw))},
            raw + b"\xff\xff\xff\x7f" + problems[4:] + steps,
            "inputs[0].parameters",
        ),  # fmt: skip
    ]
    for extra, data, field in bad:
        with pytest.raises(RequestError) as e:
            parse_v2(data, {"content-type": "application/octet-stream", **extra}, CONFIG)
        assert e.value.field == field and e.value.status == 400, (extra, str(e.value))


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"parameters": {"problem": "forged"}}, "parameters.problem"),
        ({"parameters": {"steps": '["forged"]'}}, "parameters.steps"),
        ({"parameters": {"max_tokens": 65}}, "parameters.max_tokens"),
        ({"parameters": {"samples": 4, "max_tokens": 64}}, "parameters"),  # 2 x 4 x 64 > 128
        ({"parameters": {"binary_data_output": "yes"}}, "parameters.binary_data_output"),
        ({"parameters": []}, "parameters"),
        ({"outputs": [{"name": "logits"}]}, "outputs[0].name"),
        ({"outputs": [{"name": "result"}, {"name": "result"}]}, "outputs[1].name"),
        (
            {"outputs": [{"name": "result", "parameters": {"binary_data": 1}}]},
            "outputs[0].parameters.binary_data",
        ),  # fmt: skip
        ({"outputs": []}, "outputs"),
        ({"inputs": []}, "inputs"),
        ({"inputs": "x"}, "inputs"),
        ({"id": ["x"]}, "id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_requests_name_the_field(patch: dict, field: str) -> None:
    with pytest.raises(RequestError) as e:
        _parse(_body(**patch))
    assert e.value.field == field, str(e.value)


def _tensor_patch(i: int, **kw: object) -> dict:
    body = _body()
    body["inputs"][i] = {**body["inputs"][i], **kw}
    return body


@pytest.mark.parametrize(
    "body,field",
    [
        (_tensor_patch(1, data=["[" * 10_000, "[]"]), "inputs.steps[0]"),  # nested-bracket row
        (_tensor_patch(1, data=["[" * 500 + "]" * 500, "[]"]), "inputs.steps[0][0]"),
        (_tensor_patch(1, data=[json.dumps({"a": 1}), "[]"]), "inputs.steps[0]"),
        (_tensor_patch(1, data=[json.dumps([1]), json.dumps(["x"])]), "inputs.steps[0][0]"),
        (_tensor_patch(1, data=[7, 8]), "inputs.steps[0]"),
        (_tensor_patch(1, data=[["a"], ["b"]]), "inputs[1].data[0]"),
        (_tensor_patch(1, data="x"), "inputs[1].data"),
        (_tensor_patch(1, datatype="FP32"), "inputs[1].datatype"),
        (_tensor_patch(1, shape=[3]), "inputs[1].shape"),
        (_tensor_patch(1, shape=[2, 2]), "inputs[1].shape"),
        (_tensor_patch(1, shape="2"), "inputs[1].shape"),
        (_tensor_patch(1, name="problem"), "inputs[1].name"),
        (_tensor_patch(1, name="solution"), "inputs[1].name"),
        (_tensor_patch(1, parameters={"binary_data_size": 3}), "inputs[1].data"),
        (_tensor_patch(0, data=["", "x"]), "inputs.problem[0]"),
        ({"inputs": [_body()["inputs"][0]]}, "inputs.steps"),
    ],
)
def test_bad_tensors_name_the_field(body: dict, field: str) -> None:
    with pytest.raises(RequestError) as e:
        _parse(body)
    assert e.value.field == field and e.value.status == 400, str(e.value)


def test_bad_bodies() -> None:
    for data, field in ((b"", "body"), (b"[]", "body"), (b"{", "body"), (b"[" * 5000, "body")):
        with pytest.raises(RequestError) as e:
            parse_v2(data, JSON, CONFIG)
        assert e.value.field == field
    with pytest.raises(RequestError) as e:
        parse_v2(b"{}", {"content-type": "application/x-www-form-urlencoded"}, CONFIG)
    assert e.value.status == 415


def test_response_json_and_binary_outputs() -> None:
    responses = [{"critique": "ok ✓", "first_error_step": -1}, {"critique": "bad", "x": 1}]
    req = _parse(_body(id="r", outputs=[{"name": "critique"}]))
    body, headers = encode_v2_response(req, responses, "deepcritic", "3")
    out = json.loads(body)
    assert headers["content-type"] == "application/json" and out["id"] == "r"
    assert out["model_version"] == "3"
    assert out["outputs"] == [
        {"name": "critique", "datatype": "BYTES", "shape": [2], "data": ["ok ✓", "bad"]}
    ]
    binary = _parse(_body(parameters={"binary_data_output": True},
                          outputs=[{"name": "result", "parameters": {"binary_data": False}},
                                   {"name": "critique"}]))  # fmt: skip
    assert binary.outputs == [("result", False), ("critique", True)]
    data, headers = encode_v2_response(binary, responses, "deepcritic", "3")
    n = int(headers[HEADER_LENGTH])
    head, tail = json.loads(data[:n]), data[n:]
    assert [json.loads(x) for x in head["outputs"][0]["data"]] == responses
    assert head["outputs"][1]["parameters"] == {"binary_data_size": len(tail)}
    assert tail == _bytes_tensor(["ok ✓", "bad"])


def test_metadata_describes_the_tensors() -> None:
    meta = model_metadata("deepcritic", ModelInfo("deepcritic", "7", "models:/deepcritic/7"))
    assert meta["versions"] == ["7"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("problem", "BYTES", [-1]),
        ("steps", "BYTES", [-1]),
    ]
    assert [t["name"] for t in meta["outputs"]] == ["result", "critique"]
