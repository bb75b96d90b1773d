"""nnterp results (torch tensors, numpy arrays, nested lists) as numpy arrays of a known shape."""

from __future__ import annotations

from typing import Any

import numpy as np

from nnterp.errors import InvalidInputError


def to_numpy(values: Any, name: str) -> np.ndarray:
    """``values`` as a float64 numpy array (torch tensors are detached and moved to the CPU)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be a tensor or array of numbers, got {type(values).__name__}."
        ) from error


def with_dims(values: Any, name: str, dims: tuple[str, ...]) -> np.ndarray:
    """``values`` as an array with one axis per name in ``dims``; a leading batch of one is dropped.

    Raises:
        InvalidInputError: another number of dimensions, a batch of several prompts, or an empty axis.
    """
    array = to_numpy(values, name)
    shape = ", ".join(dims)
    if array.ndim == len(dims) + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != len(dims):
        hint = ""
        if array.ndim == len(dims) + 1:
            hint = f" It holds a batch of {array.shape[0]} prompts: plot one at a time, e.g. {name}[0]."
        raise InvalidInputError(
            f"{name} has shape {tuple(array.shape)} but must be ({shape}) for one prompt "
            f"(or (1, {shape})).{hint}"
        )
    if 0 in array.shape:
        raise InvalidInputError(f"{name} has shape {tuple(array.shape)}: no axis of ({shape}) may be empty.")
    return array


def as_probabilities(array: np.ndarray, from_logits: bool | None = None) -> np.ndarray:
    """Probabilities over the last axis: softmax of ``array`` when it holds logits.

    ``from_logits=None`` decides from the values: anything outside [0, 1] means logits.
    """
    if from_logits is None:
        finite = array[~np.isnan(array)]
        from_logits = bool(np.any(finite < 0) or np.any(finite > 1))
    if not from_logits:
        return array
    shifted = array - array.max(axis=-1, keepdims=True)
    exponentials = np.exp(shifted)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
