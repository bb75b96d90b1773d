"""nnterp results (torch tensors, numpy arrays, nested lists) as numpy arrays of a known shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from nnterp.errors import InvalidInputError


def to_numpy(values: Any, name: str) -> np.ndarray:
    """``values`` as a float64 numpy array (torch tensors are detached and moved to the CPU).

    Raises:
        InvalidInputError: ``None``, text, a mapping, complex numbers or anything else that is not
            an array of real numbers.
    """
    if values is None or isinstance(values, (str, bytes, Mapping)):
        raise InvalidInputError(f"{name} must be a tensor or array of numbers, got {type(values).__name__}.")
    if hasattr(values, "detach"):
        if values.is_complex():
            raise InvalidInputError(f"{name} is a complex tensor: pass real numbers.")
        values = values.detach().cpu().float().numpy()
    try:
        array = np.asarray(values)
        if np.iscomplexobj(array):
            raise TypeError("complex values")
        return array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"{name} must be a tensor or array of numbers, got {type(values).__name__} ({error})."
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


def require_finite(array: np.ndarray, name: str, *, allow_negative_infinity: bool = False) -> np.ndarray:
    """``array`` unchanged, unless it holds a NaN or an infinity (``-inf`` is fine in logits
    when ``allow_negative_infinity``: a token that cannot occur).

    Raises:
        InvalidInputError: naming the first bad value's index and where NaNs usually come from.
    """
    bad = np.isnan(array) | (array == np.inf)
    if not allow_negative_infinity:
        bad |= array == -np.inf
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidInputError(
            f"{name} holds {int(bad.sum())} NaN/inf value(s) (first at index {where}): a figure of them "
            "would be blank or wrong. Pass finite values (NaNs usually come from a division by zero or "
            "from padding positions: plot one unpadded prompt)."
        )
    return array


#: How far probabilities may stray outside [0, 1] (rounding in float16/bfloat16 softmaxes).
PROBABILITY_TOLERANCE = 1e-3


def require_probabilities(array: np.ndarray, name: str, fix: str) -> np.ndarray:
    """``array`` unchanged if it is finite and within [0, 1]; else `InvalidInputError` ending with ``fix``."""
    require_finite(array, name)
    low, high = float(array.min()), float(array.max())
    if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
        raise InvalidInputError(
            f"{name} must hold probabilities in [0, 1], but its values run from {low:.4g} to {high:.4g}: {fix}."
        )
    return array


def as_probabilities(array: np.ndarray, from_logits: bool | None = None, name: str = "probs") -> np.ndarray:
    """Probabilities over the last axis: softmax of ``array`` when it holds logits.

    ``from_logits=None`` decides from the values: anything outside [0, 1] means logits.

    Raises:
        InvalidInputError: NaN or ``+inf`` values; probabilities (``from_logits=False``) outside
            [0, 1]; logits whose every entry on a row is ``-inf``.
    """
    if from_logits is not None and not isinstance(from_logits, (bool, np.bool_)):
        raise InvalidInputError(f"from_logits must be True, False or None, got {from_logits!r}.")
    require_finite(array, name, allow_negative_infinity=True)
    if from_logits is None:
        finite = array[np.isfinite(array)]
        from_logits = bool(np.any(finite < 0) or np.any(finite > 1)) or not np.isfinite(array).all()
    if not from_logits:
        return require_probabilities(
            array, name, "pass from_logits=True if these are logits, or softmax them first"
        )
    row_max = array.max(axis=-1, keepdims=True)
    if np.isneginf(row_max).any():
        where = tuple(int(i) for i in np.argwhere(np.isneginf(row_max[..., 0]))[0])
        raise InvalidInputError(
            f"{name} has a row of logits that are all -inf (at index {where}): no token is possible "
            "there, so there is nothing to plot."
        )
    exponentials = np.exp(array - row_max)
    return exponentials / exponentials.sum(axis=-1, keepdims=True)
