"""The Monte Carlo labelling rule on hand-made estimate tables: every branch."""

from __future__ import annotations

import pytest

from deepcritic.stages.mc import MCLabel, in_shard, label_from_estimates, parse_shard, prefix_prompt


def test_clean_error_at_first_zero_after_success() -> None:
    # steps 1, 2 keep succeeding, step 3 drops to 0 and stays there, final answer wrong
    assert label_from_estimates([1.0, 0.5, 0.0, 0.0], False) == MCLabel(2, "clean_error")


def test_clean_error_on_first_step() -> None:
    assert label_from_estimates([0.0, 0.0], False) == MCLabel(0, "clean_error")


def test_error_only_in_last_step_when_every_prefix_succeeds() -> None:
    # all prefixes fine but the final answer is wrong: the last step is the first error
    assert label_from_estimates([0.75, 0.5], False) == MCLabel(2, "clean_error")


def test_single_step_wrong_solution() -> None:
    assert label_from_estimates([], False) == MCLabel(0, "clean_error")


def test_recovery_after_dip_is_skipped_by_default() -> None:
    # step 2 dips to 0 but step 3 recovers: the dip is noise; the lasting drop is at step 4
    got = label_from_estimates([0.5, 0.0, 0.25, 0.0], False)
    assert got == MCLabel(3, "error_after_dip")


def test_recovery_after_dip_is_ambiguous_when_configured() -> None:
    got = label_from_estimates([0.5, 0.0, 0.25, 0.0], False, recovery="ambiguous")
    assert got.ambiguous and got.reason == "ambiguous:recovered_dip"


def test_all_correct() -> None:
    assert label_from_estimates([1.0, 0.875, 0.125], True) == MCLabel(-1, "all_correct")
    assert label_from_estimates([], True) == MCLabel(-1, "all_correct")


def test_correct_solution_with_failed_prefix_is_ambiguous() -> None:
    got = label_from_estimates([1.0, 0.0, 0.5], True)
    assert got.ambiguous and got.reason == "ambiguous:correct_with_failed_prefix"


def test_gray_zone_thresholds() -> None:
    kw = {"fail_at": 0.125, "succeed_at": 0.5}
    # 0.25 is neither a failure nor a success: a correct solution through it is ambiguous
    assert (
        label_from_estimates([0.75, 0.25], True, **kw).reason
        == "ambiguous:correct_with_gray_prefix"
    )
    # the drop (0.125 <= fail_at) follows a gray prefix: cannot tell which step broke
    assert (
        label_from_estimates([0.75, 0.25, 0.125], False, **kw).reason
        == "ambiguous:gray_before_error"
    )
    # the drop follows a clear success: clean
    assert label_from_estimates([0.75, 0.125, 0.0], False, **kw) == MCLabel(1, "clean_error")


def test_unsolved_problem_is_ambiguous() -> None:
    got = label_from_estimates([0.0, 0.0], False, start=0.0)
    assert got.ambiguous and got.reason == "ambiguous:start_fails"


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="fail_at"):
        label_from_estimates([0.5], False, fail_at=0.5, succeed_at=0.5)
    with pytest.raises(ValueError, match=r"estimates\[1\]"):
        label_from_estimates([0.5, 1.5], False)
    with pytest.raises(ValueError, match="recovery"):
        label_from_estimates([0.5], False, recovery="x")  # type: ignore[arg-type]


def test_shards_partition_ids() -> None:
    ids = [f"p{i}" for i in range(200)]
    groups = [[x for x in ids if in_shard(x, i, 3)] for i in range(3)]
    assert sorted(sum(groups, [])) == sorted(ids)
    assert all(groups)
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "x", "1-2"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_prefix_prompt_continues_after_the_prefix() -> None:
    msgs = prefix_prompt("What is 2+3?", ["2+3 = 5.", "So \\boxed{5}."], 1)
    assert msgs[-1] == {"role": "assistant", "content": "Step 1: 2+3 = 5.\n\nStep 2:"}
    assert msgs[-2]["role"] == "user" and "What is 2+3?" in msgs[-2]["content"]
