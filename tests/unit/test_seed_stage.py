"""Stage 1 with a scripted teacher: filter, balance, forced verdicts, shards, resume, format."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from deepcritic import grader
from deepcritic.config import from_dict
from deepcritic.generation import Completion, Prompt, SamplingParams
from deepcritic.prompting import critique_messages
from deepcritic.records import Solution, write_jsonl
from deepcritic.stages.seed import SeedConfig, run
from deepcritic.stages.seed.store import load_records, shard_path
from support.scripted_backend import (
    ScriptedBackend,
    SeedTeacher,
    SimulatedCrash,
    substep,
    verdict_text,
    where,
)
from support.scripted_backend import (
    toy_solution as sol,
)


def make_config(tmp_path: Path, solutions: list[Solution], **kw: object) -> SeedConfig:
    data = tmp_path / "solutions.jsonl"
    write_jsonl(data, solutions)
    base: dict[str, object] = dict(
        data=str(data), out_dir=str(tmp_path / "out"), tracking_uri="off", chunk_size=2
    )
    base.update(kw)
    return from_dict(SeedConfig, base)


def sft_rows(cfg: SeedConfig) -> list[dict]:
    path = Path(cfg.out_dir) / "sft.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_filter_keeps_first_matching_indepth_and_drops_mismatch(tmp_path: Path) -> None:
    sols = [sol("a", 1), sol("b", 2), sol("c", -1)]
    n = 4
    script = {
        # a, step 1: only the third in-depth sample agrees with the label -> kept, sample 2
        ("a", 1, "indepth"): [verdict_text(-1)] * 2
        + [verdict_text(1, "third")]
        + [verdict_text(-1)],
        # b, step 3 is wrong but no in-depth sample says so -> dropped
        ("b", 3, "indepth"): [verdict_text(1)] * n,
    }
    backend = ScriptedBackend(SeedTeacher(sols, script))
    cfg = make_config(tmp_path, sols, indepth={"n": n})
    result = run(cfg, backend)
    rows = {r["id"]: r for r in sft_rows(cfg)}
    assert set(rows) == {"a", "c"}
    records = {r["id"]: r for r in load_records(shard_path(cfg.out_dir, 0, 1))}
    assert records["b"]["reason"] == "indepth_mismatch"
    assert records["a"]["steps"][0]["indepth_sample"] == 2
    assert "third" in records["a"]["steps"][0]["indepth"]["text"]
    merged_pids = {
        where(p)[0] for ps, _ in backend.generate_calls for p in ps if substep(p) == "merge"
    }
    assert "b" not in merged_pids  # failed solutions are not merged
    t = result.counts
    assert t["total.solutions.in"] == 3 and t["total.filter.kept"] == 2
    assert t["total.filter.dropped.indepth_mismatch"] == 1
    assert t["total.indepth.requests"] == 2 + 3 + 3  # steps 1..k for a, b and c
    assert t["total.indepth.samples"] == 8 * n
    assert t["total.indepth.matched"] == 7
    assert t["total.sft.examples"] == 2 and result.kept == 2


def test_sft_text_is_grader_format_and_parses_back(tmp_path: Path) -> None:
    sols = [sol("a", 1), sol("c", -1, 2)]
    cfg = make_config(tmp_path, sols)
    run(cfg, ScriptedBackend(SeedTeacher(sols)))
    for row in sft_rows(cfg):
        s = next(x for x in sols if x.id == row["id"])
        msgs = row["messages"]
        assert msgs[:2] == critique_messages(s.problem, s.steps)
        assistant = msgs[2]["content"]
        assert msgs[2]["role"] == "assistant"
        judgment = grader.parse_critique(assistant)
        assert judgment.status == grader.ParseStatus.OK
        assert grader.is_match(judgment.label, s.label)
        assert assistant.endswith(grader.render_answer(grader.label_to_step(s.label)))
        k = len(s.steps) if s.label == -1 else s.label + 1
        assert [v.step for v in judgment.verdicts] == list(range(1, k + 1))
        assert [v.correct for v in judgment.verdicts] == [j != s.label for j in range(k)]
        assert assistant.count("**Judgement**") == k  # the teacher's own verdict line is replaced


def test_balance_caps_easy_all_correct(tmp_path: Path) -> None:
    easy = [sol(f"e{i}", -1, 2) for i in range(5)]
    hard = sol("h", -1, 2)  # all correct, but the initial critique got step 2 wrong
    errs = [sol("x", 0), sol("y", 1)]
    sols = [*easy, hard, *errs]
    script = {("h", 2, "initial"): [verdict_text(-1)]}
    cfg = make_config(tmp_path, sols, balance_cap=2)
    result = run(cfg, ScriptedBackend(SeedTeacher(sols, script)))
    ids = {r["id"] for r in sft_rows(cfg)}
    assert "h" in ids and {"x", "y"} <= ids
    assert len(ids & {s.id for s in easy}) == 2
    assert result.counts["total.balance.eligible"] == 5
    assert result.counts["total.balance.dropped"] == 3
    # deterministic: a rerun of finalize picks the same two
    again = run(replace(cfg, mode="finalize"))
    assert {r["id"] for r in sft_rows(cfg)} == ids and again.kept == len(ids)


FORCED_SCRIPT = {
    ("a", 1, "initial"): ["I think it is fine, nothing more to say."],  # no box
    ("a", 2, "initial"): [Completion("Let me compute 2 + 2 = \\boxed{4} and", "length")],
    ("a", 1, "indepth"): ["\\boxed{abc}", verdict_text(1)],  # not an integer, then fine
    ("a", 2, "indepth"): ["The result is \\boxed{4}.", "Judgement: \\boxed{7}"],
}


def test_forced_verdicts_are_counted_and_used_when_allowed(tmp_path: Path) -> None:
    sols = [sol("a", 1, 2)]
    picked: list[Prompt] = []

    def pick(prompt: Prompt, choices: list[str]) -> int:
        picked.append(prompt)
        return choices.index("-1}")

    backend = ScriptedBackend(SeedTeacher(sols, FORCED_SCRIPT), pick=pick)
    cfg = make_config(tmp_path, sols, indepth={"n": 2}, allow_forced_indepth=True)
    result = run(cfg, backend)
    assert len(picked) == 5
    assert all(
        p[-1]["role"] == "assistant" and p[-1]["content"].endswith("\\boxed{") for p in picked
    )
    assert result.forced_verdicts == 5
    c = result.counts
    assert c["total.initial.forced.no_box"] == 1 and c["total.initial.forced.truncated"] == 1
    assert c["total.indepth.forced.not_integer"] == 1
    assert c["total.indepth.forced.box_not_a_verdict"] == 1
    assert c["total.indepth.forced.verdict_out_of_range"] == 1
    assert c["total.forced.total"] == 5
    assert c["total.indepth.matched_forced"] == 1
    rec = load_records(shard_path(cfg.out_dir, 0, 1))[0]
    step1, step2 = rec["steps"]
    assert step1["initial"]["forced"] and step1["initial"]["verdict"] == -1
    assert step1["initial"]["text"].endswith("**Judgement**: \\boxed{-1}")
    assert step1["indepth_sample"] == 1 and not step1["indepth"]["forced"]  # self-written first
    assert step2["indepth_sample"] == 0 and step2["indepth"]["forced"]  # only a forced -1 matches
    assert rec["status"] == "kept"


def test_paper_default_uses_only_self_written_indepth_verdicts(tmp_path: Path) -> None:
    """Step 2's only matching in-depth samples have forced verdicts: the reference never uses
    those, so the solution is dropped and counted; step 1 prefers its self-written sample."""
    sols = [sol("a", 1, 2)]
    backend = ScriptedBackend(
        SeedTeacher(sols, FORCED_SCRIPT), pick=lambda p, ch: list(ch).index("-1}")
    )
    cfg = make_config(tmp_path, sols, indepth={"n": 2})
    result = run(cfg, backend)
    rec = load_records(shard_path(cfg.out_dir, 0, 1))[0]
    assert rec["status"] == "dropped" and rec["reason"] == "indepth_only_forced"
    assert rec["steps"][0]["indepth_sample"] == 1 and rec["steps"][1]["indepth"] is None
    c = result.counts
    assert c["total.filter.dropped.indepth_only_forced"] == 1
    assert c["total.indepth.matched_only_forced"] == 1 and c["total.indepth.matched_forced"] == 0
    assert result.kept == 0


def test_truncated_merge_is_dropped_and_counted(tmp_path: Path) -> None:
    """A merge cut by max_tokens has a forced verdict and an unfinished body: never SFT data."""
    sols = [sol("a", 0, 2), sol("b", -1, 2)]
    cut = Completion("Let me verify this another way: 2 + 2 is", "length")
    script = {("a", 1, "merge"): [cut]}
    backend = ScriptedBackend(SeedTeacher(sols, script), pick=lambda p, ch: list(ch).index("-1}"))
    cfg = make_config(tmp_path, sols)
    result = run(cfg, backend)
    assert [r["id"] for r in sft_rows(cfg)] == ["b"]
    assert result.counts["total.filter.dropped.merge_truncated"] == 1
    assert result.counts["total.merge.forced.truncated"] == 1
    kept = run(replace(cfg, out_dir=str(tmp_path / "keep"), drop_truncated_merges=False), backend)
    assert kept.kept == 2  # the local presets' choice (tiny CPU budgets cut every merge)


def test_bad_merge_verdict_is_dropped(tmp_path: Path) -> None:
    sols = [sol("a", 0, 2), sol("b", 0, 2)]
    script = {("a", 1, "merge"): [verdict_text(1)]}
    cfg = make_config(tmp_path, sols)
    result = run(cfg, ScriptedBackend(SeedTeacher(sols, script)))
    assert {r["id"] for r in sft_rows(cfg)} == {"b"}
    assert result.counts["total.filter.dropped.merge_mismatch"] == 1


def test_shards_are_disjoint_complete_and_match_one_worker(tmp_path: Path) -> None:
    sols = [sol(f"s{i}", (i % 4) - 1, 3) for i in range(12)]
    one = make_config(tmp_path / "one", sols)
    run(one, ScriptedBackend(SeedTeacher(sols)))
    cfgs = [make_config(tmp_path / "many", sols, shard=f"{i}/3", mode="generate") for i in range(3)]
    seen: list[str] = []
    for cfg in cfgs:
        backend = ScriptedBackend(SeedTeacher(sols))
        run(cfg, backend)
        seen += [r["id"] for r in load_records(shard_path(cfg.out_dir, int(cfg.shard[0]), 3))]
    assert sorted(seen) == sorted(s.id for s in sols) and len(set(seen)) == len(seen)
    assert not (Path(cfgs[0].out_dir) / "sft.jsonl").exists()  # generate mode does not finalize
    final = run(replace(cfgs[0], mode="finalize"))
    assert sft_rows(cfgs[0]) == sft_rows(one)
    assert final.kept == len(sft_rows(one)) > 0


def test_finalize_refuses_missing_shards(tmp_path: Path) -> None:
    sols = [sol(f"s{i}", -1, 2) for i in range(4)]
    cfg = make_config(tmp_path, sols, shard="0/2")
    run(cfg, ScriptedBackend(SeedTeacher(sols)))  # mode all: shard 1 not done -> no finalize
    assert not (Path(cfg.out_dir) / "sft.jsonl").exists()
    with pytest.raises(FileNotFoundError, match=r"shards \[1\] of 2"):
        run(replace(cfg, mode="finalize"))


def test_resume_after_crash_loses_nothing_duplicates_nothing(tmp_path: Path) -> None:
    sols = [sol(f"s{i}", (i % 3) - 1, 2) for i in range(7)]
    cfg = make_config(tmp_path, sols, chunk_size=1)
    order = [s.id for s in sols]  # one shard, input order
    crash_at = order[4]
    crashing = ScriptedBackend(SeedTeacher(sols), crash_when=lambda p: where(p)[0] == crash_at)
    with pytest.raises(SimulatedCrash):
        run(cfg, crashing)
    path = shard_path(cfg.out_dir, 0, 1)
    assert [r["id"] for r in load_records(path)] == order[:4]
    with open(path, "a") as f:  # a torn line, as if killed mid-write
        f.write('{"id": "s4", "status": "ke')
    backend = ScriptedBackend(SeedTeacher(sols))
    result = run(cfg, backend)
    ids = [r["id"] for r in load_records(path)]
    assert sorted(ids) == sorted(order) and len(ids) == len(set(ids))
    asked = {where(p)[0] for ps, _ in backend.generate_calls for p in ps}
    assert asked == set(order[4:])  # done ids were skipped
    assert result.counts["shard.already_done"] == 4 and result.counts["run.processed"] == 3
    assert result.counts["total.solutions.in"] == 7
    # a third run does nothing new
    again = run(cfg, ScriptedBackend(SeedTeacher(sols)))
    assert again.counts["run.processed"] == 0 and again.kept == result.kept


def test_bad_teacher_output_never_crashes(tmp_path: Path) -> None:
    sols = [sol("a", 2, 3), sol("b", -1, 2)]
    junk = [
        "",
        "\\boxed{",
        "}}}{{",
        "**Answer**: \\boxed{2}",
        "\\boxed{\\text{Step 1}}",
        Completion("", "error"),
    ]

    def respond(prompt: Prompt, params: SamplingParams) -> list[str | Completion]:
        return [junk[(len(prompt[1]["content"]) + k) % len(junk)] for k in range(params.n)]

    cfg = make_config(tmp_path, sols, indepth={"n": 3})
    result = run(cfg, ScriptedBackend(respond, pick=lambda p, c: len(p[1]["content"]) % 2))
    c = result.counts
    assert c["total.solutions.in"] == 2
    assert c["total.filter.kept"] + sum(v for k, v in c.items() if ".filter.dropped." in k) == 2
    assert c["total.initial.samples"] == c["total.initial.parsed"] + c["total.initial.forced"]
    assert c["total.indepth.samples"] == c["total.indepth.parsed"] + c["total.indepth.forced"]


def test_duplicate_input_ids_are_an_error(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, [sol("a", 0), sol("a", 1)])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        run(cfg, ScriptedBackend(SeedTeacher([sol("a", 0)])))


def test_empty_merged_critique_is_dropped(tmp_path: Path) -> None:
    sols = [sol("a", 0, 2), sol("b", 0, 2)]
    script = {("a", 1, "merge"): ["**Judgement**: \\boxed{-1}"]}
    cfg = make_config(tmp_path, sols)
    result = run(cfg, ScriptedBackend(SeedTeacher(sols, script)))
    assert {r["id"] for r in sft_rows(cfg)} == {"b"}
    assert result.counts["total.filter.dropped.empty_critique"] == 1


def test_max_critiqued_steps_skips_long_solutions_and_counts_them(tmp_path: Path) -> None:
    # steps to critique: a 1 (first step wrong), b 3 (all right), c 2, d 3 (third step wrong)
    sols = [sol("a", 0), sol("b", -1), sol("c", 1), sol("d", 2), sol("e", 0)]
    cfg = make_config(tmp_path, sols, max_critiqued_steps=2, max_solutions=2)
    result = run(cfg, ScriptedBackend(SeedTeacher(sols)))
    assert result.counts["input.skipped.too_many_steps"] == 2
    assert result.counts["input.used"] == 2  # max_solutions applies after the cut: a and c
    ids = {r["id"] for r in load_records(shard_path(cfg.out_dir, 0, 1))}
    assert ids == {"a", "c"}
    with pytest.raises(ValueError, match="max_critiqued_steps"):
        make_config(tmp_path, sols, max_critiqued_steps=0)
