"""Request validation and response rendering of the critique endpoint (no model, no server)."""

from __future__ import annotations

import json

import pytest

from deepcritic.generation import Completion
from deepcritic.grader import render_critique
from deepcritic.serve.config import LimitsConfig, ServeConfig
from deepcritic.serve.schema import (
    CritiqueRequest,
    ModelInfo,
    RequestError,
    build_response,
    check_json_content_type,
    check_prompt_tokens,
    decode_json,
    parse_request,
    parse_v1,
)

CONFIG = ServeConfig(
    max_tokens=16, limits=LimitsConfig(max_steps=4, max_samples=5, max_new_tokens=64)
)
GOOD = {"problem": "1 + 1 = ?", "steps": ["1 + 1 = 3", "So 3."]}
INFO = ModelInfo("deepcritic", "7", "models:/deepcritic@champion")


def _req(**kw: object) -> CritiqueRequest:
    return parse_request({**GOOD, **kw}, CONFIG)


def test_defaults_and_overrides() -> None:
    r = _req()
    assert r.steps == ("1 + 1 = 3", "So 3.") and r.samples == 1
    assert r.params.temperature == 0.0 and r.params.max_tokens == 16
    voted = _req(samples=3, max_tokens=8, id=5)
    assert voted.params.n == 3 and voted.params.temperature == CONFIG.vote_temperature
    assert voted.params.max_tokens == 8 and voted.request_id == "5"
    assert _req(samples=3, temperature=0.5).params.temperature == 0.5


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"problem": None}, "problem"),
        ({"problem": ""}, "problem"),
        ({"steps": ["a", "b", "c", "d", "e"]}, "steps"),
        ({"steps": ["a", 1]}, "steps[1]"),
        ({"steps": {"0": "a"}}, "steps"),
        ({"samples": 6}, "samples"),
        ({"samples": True}, "samples"),
        ({"samples": 1.5}, "samples"),
        ({"max_tokens": 65}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"id": [1]}, "id"),
        ({"stpes": []}, "stpes"),
    ],
)
def test_bad_fields_are_named(patch: dict, field: str) -> None:
    with pytest.raises(RequestError) as e:
        parse_request({**GOOD, **patch}, CONFIG)
    assert e.value.field == field
    assert f"field '{field}'" in str(e.value)


def test_missing_field_and_instances() -> None:
    with pytest.raises(RequestError, match="'steps': is missing"):
        parse_request({"problem": "x"}, CONFIG)
    reqs, batched = parse_v1({"instances": [GOOD, GOOD]}, CONFIG)
    assert batched and len(reqs) == 2
    assert parse_v1(GOOD, CONFIG)[1] is False
    with pytest.raises(RequestError, match=r"instances\[1\].problem"):
        parse_v1({"instances": [GOOD, {"steps": ["a"]}]}, CONFIG)
    with pytest.raises(RequestError, match="'instances'"):
        parse_v1({"instances": []}, CONFIG)
    with pytest.raises(RequestError, match="'body'"):
        parse_v1(b"not json", CONFIG)


def test_prompt_token_limit_names_the_bigger_part() -> None:
    config = ServeConfig(max_tokens=16, limits=LimitsConfig(max_prompt_tokens=12))

    def count(texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    short = parse_request(GOOD, config)
    assert check_prompt_tokens([short], count, config, batched=False) == [5 + 7]
    long_steps = parse_request({**GOOD, "steps": ["w " * 20]}, config)
    with pytest.raises(
        RequestError, match=r"instances\[1\].steps': the critique prompt is too long"
    ):
        check_prompt_tokens([short, long_steps], count, config, batched=True)


def _completion(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", prompt_tokens=50, completion_tokens=20)


def test_response_from_a_critique() -> None:
    text = render_critique([("fine", True), ("1 + 1 is 2, not 3", False)])
    r = _req(samples=1)
    req = CritiqueRequest(r.problem, ("a", "b", "c"), r.params, "q")
    out = build_response(req, [_completion(text)], INFO)
    assert out["first_error_step"] == 1  # 0-based: the critic's \boxed{2}
    assert [v["step"] for v in out["verdicts"]] == [0, 1]
    assert [v["correct"] for v in out["verdicts"]] == [True, False]
    assert "not 3" in out["verdicts"][1]["critique"]
    assert out["critique"] == text and out["parse_status"] == "ok"
    assert out["model"] == {
        "name": "deepcritic",
        "version": "7",
        "uri": "models:/deepcritic@champion",
    }
    assert out["id"] == "q" and "votes" not in out
    assert out["usage"] == {"prompt_tokens": 50, "completion_tokens": 20}
    json.dumps(out)  # serializable as is


def test_all_correct_unreadable_and_out_of_range() -> None:
    req = _req()
    all_ok = render_critique([("ok", True), ("ok", True)])
    assert build_response(req, [_completion(all_ok)], INFO)["first_error_step"] == -1
    none = build_response(req, [_completion("I am not sure.")], INFO)
    assert none["first_error_step"] is None and none["parse_status"] == "no_box"
    beyond = build_response(req, [_completion("**Answer**: \\boxed{9}")], INFO)
    assert beyond["first_error_step"] is None and beyond["parse_status"] == "out_of_range"


def test_majority_vote_over_samples() -> None:
    wrong2 = render_critique([("ok", True), ("bad", False)])
    all_ok = render_critique([("ok", True), ("ok", True)])
    outs = [_completion(all_ok), _completion(wrong2), _completion("no box"), _completion(wrong2)]
    out = build_response(_req(samples=4), outs, INFO)
    assert out["first_error_step"] == 1
    assert out["critique"] == wrong2  # the shown critique agrees with the voted answer
    assert out["votes"] == {
        "labels": [-1, 1, None, 1],
        "counts": {"-1": 1, "1": 2},
        "unparsed": 1,
        "agreement": 0.5,
    }
    assert out["usage"]["completion_tokens"] == 80


def test_request_cost_is_bounded() -> None:
    config = ServeConfig(
        max_tokens=16,
        limits=LimitsConfig(max_samples=8, max_new_tokens=64, max_request_tokens=128),
    )
    one = {**GOOD, "samples": 2, "max_tokens": 64}
    assert len(parse_v1(one, config)[0]) == 1  # 2 x 64 = 128: at the limit
    with pytest.raises(RequestError, match="'max_tokens': asks for up to 192 new tokens") as e:
        parse_v1({**one, "samples": 3}, config)
    assert "limits.max_request_tokens" in str(e.value)
    with pytest.raises(RequestError, match="'instances': asks for up to 256 new tokens"):
        parse_v1({"instances": [one, one]}, config)
    with pytest.raises(ValueError, match="max_request_tokens"):
        LimitsConfig(max_new_tokens=64, max_request_tokens=32)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "is empty"),
        (b"   ", "is empty"),
        (b'{"problem": "x", "steps": [', "is not valid JSON"),
        (b"[" * 10_000 + b"]" * 10_000, "nests arrays/objects too deeply"),
        (b'{"samples": NaN}', "NaN is not JSON"),
        (b'{"a": 1} trailing', "is not valid JSON"),
        (b'{"problem": "caf\xe9"}', "is not UTF-8"),
    ],
)
def test_body_decoding_errors_name_the_body(data: bytes, reason: str) -> None:
    with pytest.raises(RequestError, match=reason) as e:
        decode_json(data)
    assert e.value.field == "body" and e.value.status == 400


def test_json_content_types() -> None:
    for ok in (None, "", "application/json", "application/json; charset=utf-8",
               "Application/JSON;charset=UTF-8", "application/vnd.api+json"):  # fmt: skip
        check_json_content_type(ok)
    for bad in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data; b=1",
                "application/json; charset=latin-1"):  # fmt: skip
        with pytest.raises(RequestError) as e:
            check_json_content_type(bad)
        assert e.value.status == 415 and e.value.field == "content-type"


def test_huge_integers_are_a_field_error_not_a_crash() -> None:
    with pytest.raises(RequestError, match="'samples': 1000000000000000000000"):
        parse_request({**GOOD, "samples": 10**21}, CONFIG)
    with pytest.raises(RequestError, match="'temperature'"):
        parse_request({**GOOD, "temperature": 10**400}, CONFIG)
