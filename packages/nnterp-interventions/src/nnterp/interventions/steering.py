"""Activation steering, as a function (the same operation as `StandardizedTransformer.steer`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from nnterp.errors import InvalidInputError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def steer(
    model: StandardizedTransformer,
    layers: int | Sequence[int],
    steering_vector: torch.Tensor,
    factor: float = 1,
    token_positions: int | Sequence[int] | None = None,
    batch_index: int | Sequence[int] | None = None,
    *,
    positions: int | Sequence[int] | None = None,
) -> None:
    """Add ``factor * steering_vector`` to the output of each of ``layers``; call inside a trace.

    Delegates to `StandardizedTransformer.steer`, so both behave identically.

    Args:
        model: a `StandardizedTransformer` being traced.
        layers: a layer index or several.
        steering_vector: (hidden,) or broadcastable to the steered (..., hidden) slice.
        factor: scale of the vector.
        token_positions: positions to steer, counted within each prompt (``0``: its first
            real token, ``-1``: its last, whatever the left padding); default all columns.
        batch_index: rows of the batch to steer (default all).
        positions: nnterp 1.x's deprecated name of ``token_positions`` (warns).

    Warns:
        DeprecationWarning: ``positions=`` was used.

    Raises:
        InvalidInputError: both ``positions`` and ``token_positions``; wrong vector size, empty lists, positions asked after a module in
            a trace with several invokes.
        LayerIndexError: a layer or ``batch_index`` out of range.
        TokenPositionError: a position outside a steered prompt's tokens.

    Example:
        >>> with model.trace("The weather today is"):
        ...     steer(model, layers=[5, 10], steering_vector=vector, factor=1.5)
        ...     logits = model.logits.save()
    """
    if positions is not None:
        if token_positions is not None:
            raise InvalidInputError(
                "pass token_positions= only: positions= is its deprecated nnterp 1.x name."
            )
        warnings.warn(
            "steer's positions= is deprecated: use token_positions=.", DeprecationWarning, stacklevel=2
        )
        token_positions = positions
    model.steer(
        layers,
        steering_vector,
        factor=factor,
        token_positions=token_positions,
        batch_index=batch_index,
    )
