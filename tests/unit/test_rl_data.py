"""GRPO's RL data curation (:mod:`deepcritic.stages.rl_data`): PRM800K quality-control rows, the
seed stage's problems and the label balance, every step counted; errors name the field."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
        "read": 12, "invalid": 0, "dropped_qc": 2, "dropped_duplicates": 0,
        "dropped_conflicting": 0, "dropped_per_problem": 0, "dropped_seed_overlap": 4,
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
        "read": 12, "invalid": 0, "dropped_qc": 0, "dropped_duplicates": 0,
        "dropped_conflicting": 0, "dropped_per_problem": 0, "dropped_seed_overlap": 0,
        "dropped_for_balance": 0, "dropped_over_limit": 2,
        "kept_erroneous": 7, "kept_correct": 3, "curated": 10,
    }  # fmt: skip


def _dup(i: int, problem: str, label: int, steps: tuple[str, ...] = ("a = 1", "b = 2")) -> Solution:
    return Solution(id=f"d{i}", problem=problem, steps=list(steps), label=label)


def test_duplicates_and_trajectories_per_problem(tmp_path: Path) -> None:
    rows = [
        _dup(0, "Twice?", 0), _dup(1, "Twice? ", 0, ("a  = 1", "b = 2")),  # same: one kept
        _dup(2, "Clash?", 0), _dup(3, "Clash?", -1),  # same steps, labels differ: both dropped
        _dup(4, "Many?", 0, ("x", "1")), _dup(5, "Many?", 1, ("y", "1")), _dup(6, "Many?", -1, ("z", "1")),
    ]  # fmt: skip
    labels = tmp_path / "dups.jsonl"
    write_jsonl(labels, rows)
    cfg = CriticGRPOConfig(labels_path=str(labels), drop_duplicate_solutions=True,
                           max_solutions_per_problem=2, seed=5, tracking_uri="off")  # fmt: skip
    kept, counts = rl_data.training_solutions(cfg)
    assert (counts["dropped_duplicates"], counts["dropped_conflicting"]) == (1, 2)
    assert counts["dropped_per_problem"] == 1 and counts["curated"] == 3
    ids = [r.id for r in kept]
    assert ids[0] == "d0" and len([i for i in ids if i in {"d4", "d5", "d6"}]) == 2
    assert ids == sorted(ids)  # file order kept
    assert rl_data.training_solutions(cfg)[0] == kept  # seeded: the same choice every run
    params = rl_data.curation_params(cfg)
    assert params["rl_data.max_solutions_per_problem"] == 2
    assert params["rl_data.drop_duplicate_solutions"] is True
    for bad in (0, -1, True, "2"):
        with pytest.raises(ValueError, match="max_solutions_per_problem"):
            CriticGRPOConfig(max_solutions_per_problem=bad)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), st.sampled_from([-1, 0, 1])),
                max_size=25), st.integers(1, 3), st.integers(0, 9))  # fmt: skip
def test_curation_counts_add_up_on_generated_rows(
    spec: list[tuple[int, int, int]], n: int, seed: int
) -> None:
    rows = [_dup(i, f"P{p}?", label, (f"s{v}", "t")) for i, (p, v, label) in enumerate(spec)]
    cfg = CriticGRPOConfig(drop_duplicate_solutions=True, max_solutions_per_problem=n, seed=seed)
    kept, counts = rl_data.curate(rows, cfg)
    dropped = sum(v for k, v in counts.items() if k.startswith("dropped_"))
    assert counts["read"] - dropped == counts["curated"] == len(kept)
    by_key: dict[tuple[str, tuple[str, ...]], set[int]] = {}
    for r in rows:
        by_key.setdefault((r.problem, tuple(r.steps)), set()).add(r.label)
    keys = [(r.problem, tuple(r.steps)) for r in kept]
    assert len(keys) == len(set(keys))  # no duplicate left
    assert all(len(by_key[k]) == 1 for k in keys)  # none whose copies disagree
    per = {p: sum(r.problem == p for r in kept) for p in {r.problem for r in kept}}
    assert all(v <= n for v in per.values())
    # every problem with a consistent solution keeps min(n, its consistent solutions)
    for p in {r.problem for r in rows}:
        consistent = {k for k, v in by_key.items() if k[0] == p and len(v) == 1}
        assert per.get(p, 0) == min(n, len(consistent))


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
