"""Seed building blocks: verdict reading, forced prefill, critique body, shards, the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepcritic import grader
from deepcritic.generation import Completion
from deepcritic.records import DataError
from deepcritic.stages.seed.config import SeedConfig, parse_shard
from deepcritic.stages.seed.generate import critique_body, format_messages, roundtrip_ok
from deepcritic.stages.seed.store import load_records, select_shard, shard_of
from deepcritic.stages.seed.teacher import (
    VERDICT_PREFIX,
    forced_prefill,
    read_verdict,
    steps_to_critique,
)
from support.scripted_backend import toy_solution


@pytest.mark.parametrize(
    ("text", "finish", "expected"),
    [
        ("Fine.\n\n**Judgement**: \\boxed{1}", "stop", (1, None)),
        ("Wrong: 3*4=12 not 13.\n**Judgement**: \\boxed{-1}", "stop", (-1, None)),
        ("so x = \\boxed{12}", "stop", (None, "box_not_a_verdict")),
        ("**Judgement**: \\boxed{3}", "stop", (None, "verdict_out_of_range")),
        ("**Judgement**: \\boxed{yes}", "stop", (None, "not_integer")),
        ("no verdict at all", "stop", (None, "no_box")),
        ("**Judgement**: \\boxed{1}", "length", (None, "truncated")),
        ("", "error", (None, "backend_error")),
        ("**Answer**: \\boxed{-1}", "stop", (-1, None)),
    ],
)
def test_read_verdict(text: str, finish: str, expected: tuple[int | None, str | None]) -> None:
    assert read_verdict(Completion(text, finish)) == expected  # type: ignore[arg-type]


def test_forced_prefill_continues_the_sample() -> None:
    prompt = [{"role": "user", "content": "q"}]
    out = forced_prefill(prompt, "It looks right.  \n")
    assert out[:1] == prompt and out[-1]["role"] == "assistant"
    assert out[-1]["content"] == "It looks right.\n\n" + VERDICT_PREFIX
    assert forced_prefill(prompt, "")[-1]["content"] == VERDICT_PREFIX
    assert grader.parse_critique(out[-1]["content"] + "-1}").step == -1


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ("Check 2+2=4.\n\n**Judgement**: \\boxed{1}", "Check 2+2=4."),
        ("Check it. Judgement: \\boxed{-1}", "Check it."),
        ("Check it.\nSo the step is \\boxed{-1}", "Check it.\nSo the step is"),
        ("No verdict here", "No verdict here"),
    ],
)
def test_critique_body_drops_the_trailing_verdict(text: str, body: str) -> None:
    assert critique_body(text) == body


def test_format_round_trips_through_the_grader() -> None:
    s = toy_solution("a", 1, 3)
    assert steps_to_critique(s) == 2
    messages = format_messages(s, ["ok", "bad"])
    assert roundtrip_ok(s, messages[-1]["content"])
    assert grader.predicted_label(messages[-1]["content"]) == 1
    correct = toy_solution("b", -1, 2)
    assert grader.predicted_label(format_messages(correct, ["ok", "ok"])[-1]["content"]) == -1


def test_parse_shard() -> None:
    assert parse_shard("2/8") == (2, 8)
    for bad in ("8/8", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="shard"):
        SeedConfig(shard="3/2")


def test_shards_partition_the_ids() -> None:
    sols = [toy_solution(f"id{i}", -1, 1) for i in range(50)]
    parts = [select_shard(sols, i, 4) for i in range(4)]
    ids = [s.id for p in parts for s in p]
    assert sorted(ids) == sorted(s.id for s in sols)
    assert all(parts), "a 50-item split into 4 leaves no shard empty"
    assert shard_of("id7", 4) == shard_of("id7", 4)


def test_store_repairs_a_torn_tail_and_rejects_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "b"}) + "\n" + '{"id": "c", '
    )
    assert [r["id"] for r in load_records(path)] == ["a", "b"]
    assert path.read_text().endswith("}\n")  # the torn line is gone, appends stay aligned
    path.write_text(json.dumps({"id": "a"}) + "\n" + json.dumps({"id": "b"}))
    assert [r["id"] for r in load_records(path)] == ["a", "b"]
    assert path.read_text().endswith("}\n")  # complete but unterminated: kept and terminated
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2"):
        load_records(path)
