"""Checks of the display functions' plain arguments (sizes, titles, flags, colour scales, ...).

Each raises `InvalidInputError` naming the argument, what it got and what to pass instead.
Array arguments are checked in `nnterp.display._arrays`.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from plotly.colors import named_colorscales, validate_colorscale

from nnterp.errors import InvalidInputError

#: plotly refuses figures smaller than this many pixels on a side.
MIN_FIGURE_SIZE = 10


def _got(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def optional_title(value: Any, name: str = "title") -> Any:
    """``value`` if it is ``None``, a string or a plotly title dict (``{"text": ..., "x": ...}``)."""
    if value is None or isinstance(value, (str, Mapping)):
        return value
    raise InvalidInputError(f"{name} must be a string (or None), got {_got(value)}.")


def text(value: Any, name: str) -> str:
    """``value`` if it is a string."""
    if isinstance(value, str):
        return value
    raise InvalidInputError(f"{name} must be a string, got {_got(value)}.")


def optional_size(value: Any, name: str) -> int | None:
    """A figure width or height: ``None`` (plotly's default) or an integer of at least 10 pixels."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < MIN_FIGURE_SIZE:
        raise InvalidInputError(
            f"{name} must be a whole number of pixels, at least {MIN_FIGURE_SIZE} (or None for the "
            f"default), got {_got(value)}."
        )
    return int(value)


def positive_number(value: Any, name: str) -> float:
    """``value`` as a finite number greater than 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a finite number greater than 0, got {_got(value)}.")
    return float(value)


def optional_positive_number(value: Any, name: str) -> float | None:
    """``None``, or `positive_number`."""
    return None if value is None else positive_number(value, name)


def flag(value: Any, name: str) -> bool:
    """``value`` if it is ``True`` or ``False`` (numpy booleans too)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidInputError(f"{name} must be True or False, got {_got(value)}.")


def optional_flag(value: Any, name: str) -> bool | None:
    """``None``, or `flag`."""
    return None if value is None else flag(value, name)


def optional_path(value: Any, name: str = "file") -> Any:
    """``value`` if it is ``None`` or a path (a string or ``os.PathLike``)."""
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    raise InvalidInputError(
        f"{name} must be a file path (a string or pathlib.Path ending in .html or .png), or None, got {_got(value)}."
    )


def optional_labels(value: Any, name: str) -> Sequence[Any] | None:
    """``None`` or a sequence of labels (not a string, which would label one row per character)."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidInputError(f"{name} must be a list with one label per row, or None, got {_got(value)}.")
    return value


def colorscale(value: Any, name: str = "colorscale") -> Any:
    """``value`` if plotly knows it as a colour scale: a name (``"Blues"``, ``"RdBu_r"``) or a list
    of ``[position, colour]`` pairs from 0 to 1."""
    fix = (
        "use a plotly colour scale name such as 'Blues', 'Viridis' or 'RdBu' (add '_r' to reverse it; "
        "plotly.colors.named_colorscales() lists them), or a list of [position, colour] pairs from 0 to 1"
    )
    if isinstance(value, str):
        base = value[:-2] if value.lower().endswith("_r") else value
        if base.lower() in named_colorscales():
            return value
        raise InvalidInputError(f"{name}={value!r} is not a plotly colour scale: {fix}.")
    if isinstance(value, Sequence):
        try:
            validate_colorscale(list(value))
        except Exception as error:
            raise InvalidInputError(f"{name}={value!r} is not a colour scale ({error}): {fix}.") from error
        return value
    raise InvalidInputError(f"{name} must be a colour scale, got {_got(value)}: {fix}.")


def tokenizer(value: Any, name: str = "tokenizer", *, splits_text: bool = False) -> Any:
    """``value`` if it can decode token ids (and, with ``splits_text``, tokenize a string)."""
    if not callable(getattr(value, "decode", None)) or (splits_text and not callable(value)):
        raise InvalidInputError(
            f"{name} must be a HuggingFace tokenizer (with .decode), got {type(value).__name__}: pass model.tokenizer."
        )
    return value
