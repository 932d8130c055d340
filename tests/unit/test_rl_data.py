"""GRPO's RL data curation (:mod:`deepcritic.stages.rl_data`): PRM800K quality-control rows, the
seed stage's problems and the label balance, every step counted; errors name the field."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from deepcritic import reference
from deepcritic.prompting import critique_messages
from deepcritic.records import Solution, write_jsonl
from deepcritic.stages import rl_data
from deepcritic.stages.grpo import CriticGRPOConfig
from support.reference_cache import needs_reference, seed_reference_cache


def _sol(i: int, problem: str, label: int, qc: bool = False) -> Solution:
    meta = {"quality_control": True} if qc else {}
    return Solution(id=f"s{i}", problem=problem, steps=["a = 1", "b = 2"], label=label, meta=meta)


# 12 rows: 2 QC rows; problems P0..P3 are the seed's (4 rows); of the 6 others 4 wrong, 2 right
ROWS = [
    _sol(0, "Problem  zero?", 0),  # seed: by id (a shard record)
    _sol(1, "Problem zero?", -1),  # the same problem, other whitespace: also left out
    _sol(2, "Problem one?", 1),  # seed: by its stored deepcritic prompt
    _sol(3, "Problem two?", -1),  # seed: by a 'problem' field
    _sol(4, "QC one?", 0, qc=True),
    _sol(5, "QC two?", -1, qc=True),
    *[_sol(6 + i, f"Fresh {i}?", 0 if i < 4 else -1) for i in range(6)],
]


def _seed_dir(tmp_path: Path, extra: list[dict[str, Any]] | None = None) -> Path:
    out = tmp_path / "seed"
    (out / "shards").mkdir(parents=True)
    prompt = critique_messages("Problem one?", ["a = 1", "b = 2"])
    sft = [{"id": "elsewhere-1", "label": 1, "messages": [*prompt, {"role": "assistant",
                                                                   "content": "x"}]}]  # fmt: skip
    write_jsonl(out / "sft.jsonl", sft + (extra or []))
    records = [{"id": "s0", "status": "dropped", "messages": None},
               {"id": "unknown-id", "status": "dropped", "messages": None}]  # fmt: skip
    write_jsonl(out / "shards" / "critiques-00000-of-00001.jsonl", records)
    return out


def _config(tmp_path: Path, **kw: Any) -> CriticGRPOConfig:
    labels = tmp_path / "labels.jsonl"
    write_jsonl(labels, ROWS)
    kw.setdefault("labels_path", str(labels))
    return CriticGRPOConfig(tracking_uri="off", **kw)


def test_every_curation_step_is_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seed = _seed_dir(tmp_path, extra=[{"id": "x", "problem": "Problem two?"}])
    cfg = _config(tmp_path, drop_quality_control=True, exclude_problems_from=str(seed),
                  balance_labels=True, seed=3)  # fmt: skip
    with caplog.at_level(logging.INFO, logger=rl_data.__name__):
        kept, counts = rl_data.training_solutions(cfg)
    assert counts == {
        "read": 12, "invalid": 0, "dropped_qc": 2, "dropped_seed_overlap": 4,
        "dropped_for_balance": 2, "dropped_over_limit": 0,
        "exclude_rows": 3, "exclude_unresolved": 1, "exclude_problems": 3,
        "kept_erroneous": 2, "kept_correct": 2, "curated": 4,
    }  # fmt: skip
    assert {r.id for r in kept if r.label == -1} == {"s10", "s11"}
    assert {r.id for r in kept if r.label != -1} <= {"s6", "s7", "s8", "s9"}
    assert "dropped_seed_overlap 4" in caplog.text and "dropped_qc 2" in caplog.text
    again, _ = rl_data.training_solutions(cfg)
    assert [r.id for r in again] == [r.id for r in kept]  # seeded: the same choice every run
    other, _ = rl_data.training_solutions(CriticGRPOConfig(**{**cfg.__dict__, "seed": 4}))
    assert len(other) == 4


def test_steps_off_change_nothing_and_every_count_is_there(tmp_path: Path) -> None:
    kept, counts = rl_data.training_solutions(_config(tmp_path, limit=10))
    assert [r.id for r in kept] == [r.id for r in ROWS[:10]]
    assert counts == {
        "read": 12, "invalid": 0, "dropped_qc": 0, "dropped_seed_overlap": 0,
        "dropped_for_balance": 0, "dropped_over_limit": 2,
        "kept_erroneous": 7, "kept_correct": 3, "curated": 10,
    }  # fmt: skip


def test_a_seed_file_and_its_problems(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write_jsonl(path, [{"problem": " Problem\none? "}])  # normalized: whitespace runs, ends
    cfg = _config(tmp_path, exclude_problems_from=str(path))
    kept, counts = rl_data.training_solutions(cfg)
    assert "s2" not in {r.id for r in kept} and counts["dropped_seed_overlap"] == 1


def test_bad_curation_input_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="exclude_problems_from: .*nowhere does not exist"):
        rl_data.training_solutions(
            _config(tmp_path, exclude_problems_from=str(tmp_path / "nowhere"))
        )
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="exclude_problems_from: .* holds neither"):
        rl_data.training_solutions(_config(tmp_path, exclude_problems_from=str(tmp_path / "empty")))
    ids = tmp_path / "ids.jsonl"
    write_jsonl(ids, [{"id": "not-in-the-rl-data"}])
    with pytest.raises(ValueError, match="exclude_problems_from: .* names no problem"):
        rl_data.training_solutions(_config(tmp_path, exclude_problems_from=str(ids)))
    one_sided = tmp_path / "right.jsonl"
    write_jsonl(one_sided, [r for r in ROWS if r.label == -1])
    with pytest.raises(ValueError, match="balance_labels: 0 erroneous and 5 correct"):
        rl_data.training_solutions(
            CriticGRPOConfig(labels_path=str(one_sided), balance_labels=True)
        )


def test_a_released_rl_set_is_read_as_given(tmp_path: Path) -> None:
    released = tmp_path / "released.jsonl"
    write_jsonl(released, ROWS)
    cfg = _config(tmp_path, rl_data_uri=f"jsonl:{released}", drop_quality_control=True,
                  balance_labels=True, labels_path="")  # fmt: skip
    kept, counts = rl_data.training_solutions(cfg)
    assert kept == ROWS and counts["dropped_qc"] == counts["dropped_for_balance"] == 0
    assert rl_data.curation_params(cfg)["rl_data.curated"] is False
    assert rl_data.curation_params(cfg)["rl_data.source"] == f"jsonl:{released}"


@needs_reference
def test_reference_prompts_name_their_problem_and_build_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_reference_cache(tmp_path / "cache", monkeypatch)
    ref = reference.critic_prompt("Fresh 0?", ["a = 1"], "reference")
    assert rl_data.problem_from_prompt(ref) == "Fresh 0?"
    assert rl_data.problem_from_prompt(critique_messages("Fresh 1?\n", ["x"])) == "Fresh 1?"
    assert rl_data.problem_from_prompt([{"role": "user", "content": "Fresh 0?"}]) is None
    seed = tmp_path / "sft.jsonl"
    seed.write_text(json.dumps({"messages": [*ref, {"role": "assistant", "content": "x"}]}) + "\n")
    cfg = _config(tmp_path, exclude_problems_from=str(seed), prompt_set="reference")
    kept, counts = rl_data.training_solutions(cfg)
    assert counts["dropped_seed_overlap"] == 1 and "s6" not in {r.id for r in kept}
    dataset, built = rl_data.build_dataset(kept[:2], None, cfg)
    assert built == {"solutions": 2, "kept": 2, "dropped_prompt_too_long": 0}
    assert dataset["prompt"] == [
        reference.reference_critique_messages(r.problem, r.steps) for r in kept[:2]
    ]
    assert dataset["label"] == [r.label for r in kept[:2]]
