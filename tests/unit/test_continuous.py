"""Pure helpers of the CPU continuous batcher."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deepcritic.generation.continuous import (
    ContinuousBatcher,
    RoundEnd,
    Row,
    common_prefix,
    left_pad,
)


def test_common_prefix_examples() -> None:
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert common_prefix([[7, 8]]) == [7, 8]
    assert common_prefix([[1, 2], [3, 4]]) == []
    assert common_prefix([[1, 2], []]) == []


@given(st.lists(st.lists(st.integers(0, 3), max_size=6), min_size=1, max_size=5))
def test_common_prefix_is_the_longest_shared_start(seqs: list[list[int]]) -> None:
    prefix = common_prefix(seqs)
    assert all(s[: len(prefix)] == prefix for s in seqs)
    n = len(prefix)
    assert any(len(s) == n for s in seqs) or len({s[n] for s in seqs}) > 1


def test_left_pad_masks_and_positions() -> None:
    ids, mask, pos = left_pad([[7, 8, 9], [5]], pad_id=0, device="cpu")
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert pos.tolist() == [[0, 1, 2], [0, 0, 0]]


def _rows(prompts: int, copies: int) -> list[Row]:
    import torch

    kv = [(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))]
    return [
        Row(p * copies + c, [1, 2, 3], list(kv), generated=[5] * (p + 1))
        for p in range(prompts)
        for c in range(copies)
    ]


def test_retire_frees_a_cancelled_prompts_rows_and_keeps_the_others() -> None:
    rows, finished, done = _rows(prompts=3, copies=2), {}, []  # type: ignore[var-annotated]
    left = ContinuousBatcher._retire(
        rows, finished, 2, is_finished=lambda r: False, on_prompt_done=done.append,
        should_stop=lambda p: p == 1,
    )  # fmt: skip
    assert [r.request for r in left] == [0, 1, 4, 5]  # prompts 0 and 2 go on decoding
    assert sorted(finished) == [2, 3] and done == [1]
    for r in finished.values():
        assert r.cancelled and r.done and r.kv == []  # its cache rows are let go
        assert r.generated == [5, 5]  # what it generated so far is kept
    assert not any(r.cancelled or r.done for r in left)


def test_retire_a_row_that_finished_is_not_cancelled() -> None:
    rows, finished = _rows(prompts=2, copies=1), {}  # type: ignore[var-annotated]
    left = ContinuousBatcher._retire(
        rows, finished, 1, is_finished=lambda r: r.request == 0, on_prompt_done=None,
        should_stop=lambda p: True,
    )  # fmt: skip
    assert left == []
    assert not finished[0].cancelled and finished[1].cancelled


def test_round_end_stops_every_row_once_cancel_is_true() -> None:
    import torch

    gone = [False]
    end = RoundEnd(frozenset({9}), None, rows=3, end_after=3, device="cpu",
                   cancel=lambda: gone[0])  # fmt: skip
    ids = torch.tensor([[1, 9], [1, 2], [1, 3]])
    assert end(ids, None).tolist() == [True, False, False]  # row 0 hit EOS: only it
    gone[0] = True
    assert end(ids, None).tolist() == [True, True, True]  # the round ends at this step
