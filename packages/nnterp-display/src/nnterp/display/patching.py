"""Activation-patching results: a metric for every (layer, position) that was patched."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nnterp.display import _checks
from nnterp.display._arrays import require_finite, with_dims
from nnterp.display._axes import cell_data, layer_axis, layer_names, spread, token_axis
from nnterp.display._tokens import position_labels, token_strings
from nnterp.display.save import check_common, finish_figure


def plot_patching_grid(
    grid: Any,
    tokens: Any = None,
    title: str | None = None,
    width: int = 1000,
    height: int = 600,
    file: str | Path | None = None,
    *,
    tokenizer: Any = None,
    metric: str = "metric",
    layer_labels: Sequence[Any] | None = None,
    colorscale: str | None = None,
    show_values: bool = False,
    value_format: str = ".2f",
) -> go.Figure:
    """Heatmap of an activation-patching sweep: positions along x, layers up y, metric as colour.

    Args:
        grid: the metric after patching each (layer, position), shape (layers, positions) or
            (1, layers, positions); a tensor, array or nested list.
        tokens: labels of the positions: token strings, token ids (with ``tokenizer``) or the
            prompt (with ``tokenizer``). ``None``: numbers.
        title, width, height, file: title, size in pixels, and where to save (see `save_figure`).
        tokenizer: decodes ids / splits a prompt given as ``tokens``.
        metric: the name of the metric (colour bar and hover).
        layer_labels: names of the rows (default 0..layers-1).
        colorscale: default ``"RdBu"`` centred on 0 when the grid has values of both signs
            (e.g. a logit difference), else ``"Viridis"``.
        show_values: write each cell's value in it, formatted with ``value_format``.

    Returns:
        The plotly Figure; ``fig.data[0].z[layer][position]`` is the metric.

    Raises:
        InvalidInputError: a wrong shape, NaN/inf values, ``tokens`` that do not match the
            positions, a bad size, colour scale or ``file``.

    Example:
        >>> grid = activation_patching(model, clean, corrupted, metric=logit_diff)
        >>> plot_patching_grid(grid, model.tokenizer.tokenize(clean), metric="logit diff")
    """
    check_common(title, width, height, file)
    _checks.text(metric, "metric")
    _checks.optional_labels(layer_labels, "layer_labels")
    if colorscale is not None:
        _checks.colorscale(colorscale)
    _checks.flag(show_values, "show_values")
    _checks.text(value_format, "value_format")
    array = require_finite(with_dims(grid, "grid", ("layers", "positions")), "grid")
    num_layers, num_positions = array.shape
    labels = token_strings(tokens, num_positions, tokenizer, "tokens")
    finite = array[np.isfinite(array)]
    diverging = finite.size > 0 and finite.min() < 0 < finite.max()
    if colorscale is None:
        colorscale = "RdBu" if diverging else "Viridis"
    limit = float(np.abs(finite).max()) if diverging else None
    shape = (num_layers, num_positions)
    heatmap = go.Heatmap(
        z=array,
        x=list(range(num_positions)),
        y=list(range(num_layers)),
        colorscale=colorscale,
        zmid=0.0 if diverging else None,
        zmin=None if limit is None else -limit,
        zmax=limit,
        customdata=cell_data(
            spread(position_labels(labels, num_positions), shape, axis=1),
            spread(layer_names(layer_labels, num_layers), shape, axis=0),
        ),
        hovertemplate=(
            f"position %{{customdata[0]}}, layer %{{customdata[1]}}<br>{metric} = %{{z:.4g}}<extra></extra>"
        ),
        colorbar={"title": {"text": metric}},
        xgap=1,
        ygap=1,
    )
    if show_values:
        heatmap.update(texttemplate=f"%{{z:{value_format}}}")
    fig = go.Figure(heatmap)
    fig.update_xaxes(token_axis("patched position", labels))
    fig.update_yaxes(layer_axis(layer_labels, num_layers))
    return finish_figure(fig, title=title, width=width, height=height, file=file)
