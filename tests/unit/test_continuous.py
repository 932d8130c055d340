"""Pure helpers of the CPU continuous batcher."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deepcritic.generation.continuous import common_prefix, left_pad


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
