"""nnterp.positions: the one rule for token positions in a left-padded batch, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import nnterp
from nnterp.errors import InvalidInputError, LayerIndexError, TokenPositionError
from nnterp.positions import absolute_positions, as_position_list

#: Row 0 has 4 real tokens, row 1 has 2 (two columns of left padding), row 2 has 3.
MASK = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 1, 1, 1]])


def test_positions_count_within_each_prompt():
    relative = torch.tensor([[0, 1, -1, -2]]).expand(3, -1)
    # Row r's first real token sits at column 4 - length(r); -1 is always the last column.
    expected = [[0, 1, 3, 2], [2, 3, 3, 2], [1, 2, 3, 2]]
    assert absolute_positions(MASK, relative, "idx").tolist() == expected


def test_rows_restrict_the_check_and_keep_batch_numbers():
    # Position 2 exists in rows 0 and 2 but not in row 1 (2 tokens).
    assert absolute_positions(MASK, torch.tensor([[2], [2]]), "idx", rows=[0, 2]).tolist() == [[2], [3]]
    with pytest.raises(TokenPositionError, match="idx 2 is outside prompt 1, which has 2 tokens: use 0..1 or -2..-1"):
        absolute_positions(MASK, torch.tensor([[2], [2]]), "idx", rows=[2, 1])


def test_out_of_range_names_the_prompt_and_is_both_error_kinds():
    with pytest.raises(TokenPositionError, match="pos -3 is outside prompt 1, which has 2 tokens") as raised:
        absolute_positions(MASK, torch.tensor([[-3]]).expand(3, -1), "pos")
    assert isinstance(raised.value, InvalidInputError) and isinstance(raised.value, ValueError)
    assert isinstance(raised.value, IndexError)
    assert not isinstance(raised.value, LayerIndexError)
    assert nnterp.TokenPositionError is TokenPositionError and nnterp.LayerIndexError is LayerIndexError


def test_right_and_two_sided_padding_count_within_each_prompt():
    # Columns written out: row 0 is all real, row 1 pads on the right, row 2 on both sides.
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 1, 1, 0]])
    relative = torch.tensor([[0, -1, 1], [0, -1, 1], [0, -1, 1]])
    expected = torch.tensor([[0, 3, 1], [0, 1, 1], [1, 2, 2]])
    assert torch.equal(absolute_positions(mask, relative, "idx"), expected)
    with pytest.raises(TokenPositionError, match="prompt 1, which has 2 tokens"):
        absolute_positions(mask, torch.tensor([[2], [2], [0]]), "idx")


def test_padding_inside_a_prompt_is_refused():
    with pytest.raises(InvalidInputError, match="prompt 1 has padding between its real tokens"):
        absolute_positions(torch.tensor([[1, 1, 1], [1, 0, 1]]), torch.tensor([[0], [0]]), "idx")


def test_position_lists():
    assert as_position_list(-1, "idx") == [-1]
    assert as_position_list((0, 2), "idx") == [0, 2]
    assert as_position_list([np.int64(3), torch.tensor(-2)], "idx") == [3, -2]
    assert as_position_list(torch.tensor(1), "idx") == [1]
    with pytest.raises(InvalidInputError, match="idx is empty"):
        as_position_list([], "idx")
    with pytest.raises(InvalidInputError, match="got True"):
        as_position_list(True, "idx")
    with pytest.raises(InvalidInputError, match="got 1.5"):
        as_position_list([0, 1.5], "idx")
    with pytest.raises(InvalidInputError, match="got float"):
        as_position_list(1.5, "idx")
