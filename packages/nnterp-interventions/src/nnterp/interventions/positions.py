"""Token positions that mean the same thing in a left-padded batch as in a single prompt.

A position ``p >= 0`` counts from a prompt's first real token, ``p < 0`` from its last one, so
``-1`` is always the last token and ``0`` the first, however much padding the batch adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from nnterp.errors import InvalidInputError, LayerIndexError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def as_position_list(positions: int | Sequence[int], name: str) -> list[int]:
    """``positions`` as a non-empty list of ints (a single int gives a one-element list)."""
    if isinstance(positions, bool):
        raise InvalidInputError(f"{name} must be an int or a list of ints, got a bool")
    values = [positions] if isinstance(positions, int) else list(positions)
    if not values:
        raise InvalidInputError(f"{name} is empty: pass at least one position (e.g. -1, the last token).")
    return [int(value) for value in values]


def absolute_positions(attention_mask: torch.Tensor, relative: torch.Tensor, name: str) -> torch.Tensor:
    """Column indices of ``relative`` positions in a left-padded batch.

    Args:
        attention_mask: (batch, seq), 0 at the (left) padding.
        relative: (batch, n) positions per row, counted within each prompt's real tokens.
        name: the argument's name, for errors.

    Returns:
        (batch, n) long tensor of indices into the padded sequence dimension.

    Raises:
        InvalidInputError: the batch is not left-padded.
        LayerIndexError: a position is outside its prompt's tokens.

    Example:
        >>> mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
        >>> absolute_positions(mask, torch.tensor([[0, -1], [0, -1]]), "idx")
        tensor([[0, 2],
                [1, 2]])
    """
    mask = attention_mask.to(torch.long).cpu()
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise InvalidInputError(
            "the batch is not left-padded (padding after real tokens): nnterp's positions assume "
            "left padding; tokenize with padding_side='left' or pass the prompts as strings."
        )
    seq_len = mask.shape[1]
    lengths = mask.sum(dim=1, keepdim=True)
    relative = relative.to(torch.long).cpu()
    outside = (relative >= lengths) | (relative < -lengths)
    if bool(outside.any()):
        row, column = (int(i) for i in outside.nonzero()[0])
        raise LayerIndexError(
            f"{name} {int(relative[row, column])} is outside prompt {row}, which has "
            f"{int(lengths[row])} tokens: use 0..{int(lengths[row]) - 1} or "
            f"-{int(lengths[row])}..-1 (negative counts from the last token)."
        )
    return torch.where(relative >= 0, seq_len - lengths + relative, seq_len + relative)


def traced_attention_mask(model: StandardizedTransformer) -> torch.Tensor:
    """Inside a trace: the forward's attention mask, or all ones when none was passed.

    ``generate`` drops the mask of a batch without padding.
    """
    try:
        return model.attention_mask
    except InvalidInputError:
        return torch.ones_like(model.input_ids)
