"""Axis settings shared by the heatmaps: integer positions labelled with tokens or layer names."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnterp.display._tokens import token_label
from nnterp.errors import InvalidInputError

#: Unlabelled layer axes show at most about this many ticks.
MAX_LAYER_TICKS = 30


def labelled_axis(title: str, labels: Sequence[str] | None = None, **settings: Any) -> dict[str, Any]:
    """An axis over positions 0..n-1 whose ticks read ``labels`` (one per position).

    Positions, not the labels, are the coordinates: a categorical axis would merge repeated
    tokens (two " the" in a prompt) into one row.
    """
    axis: dict[str, Any] = {"title": {"text": title}, **settings}
    if labels is not None:
        axis.update(tickmode="array", tickvals=list(range(len(labels))), ticktext=list(labels))
    return axis


def token_axis(title: str, tokens: Sequence[str] | None, **settings: Any) -> dict[str, Any]:
    """``labelled_axis`` whose ticks are token strings, with whitespace made visible."""
    labels = None if tokens is None else [token_label(token) for token in tokens]
    return labelled_axis(title, labels, **settings)


def layer_names(layer_labels: Sequence[Any] | None, count: int) -> list[str]:
    """Names of ``count`` layers: ``layer_labels`` as strings (checked), by default "0".."count-1"."""
    if layer_labels is None:
        return [str(layer) for layer in range(count)]
    names = [str(label) for label in layer_labels]
    if len(names) != count:
        raise InvalidInputError(f"layer_labels has {len(names)} names but the data has {count} layers.")
    return names


def layer_axis(layer_labels: Sequence[Any] | None, count: int) -> dict[str, Any]:
    """The layer axis: integer ticks (thinned when there are many layers) or the given names."""
    if layer_labels is not None:
        return labelled_axis("layer", layer_names(layer_labels, count))
    return labelled_axis("layer", None, tick0=0, dtick=max(1, math.ceil(count / MAX_LAYER_TICKS)))


def cell_data(*grids: Any) -> np.ndarray:
    """Hover data for a heatmap: the same-shaped 2-D ``grids`` stacked on a last axis (objects)."""
    return np.stack([np.asarray(grid, dtype=object) for grid in grids], axis=-1)


def spread(labels: Sequence[Any], shape: tuple[int, int], axis: int) -> np.ndarray:
    """A ``shape`` object grid whose cells repeat ``labels`` along ``axis`` (0: one per row)."""
    column = np.asarray(labels, dtype=object)
    column = column[:, None] if axis == 0 else column[None, :]
    return np.broadcast_to(column, shape)
