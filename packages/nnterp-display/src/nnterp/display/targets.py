"""Target-token tracking results (``run_prompts``) as curves across layers, one per category."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import DEFAULT_PLOTLY_COLORS, unlabel_rgb

from nnterp.display import _checks
from nnterp.display._arrays import require_finite, to_numpy
from nnterp.display._axes import layer_axis, layer_names
from nnterp.display.save import check_common, finish_figure
from nnterp.errors import InvalidInputError

BANDS = ("std", "minmax", None)


def plot_run_prompts(
    results: Mapping[str, Any],
    title: str | None = None,
    width: int = 900,
    height: int = 500,
    file: str | Path | None = None,
    *,
    band: str | None = "std",
    show_prompts: bool = False,
    layer_labels: Sequence[Any] | None = None,
    value_name: str = "probability",
) -> go.Figure:
    """Mean probability of each target category across layers, with its spread over prompts.

    Args:
        results: ``run_prompts`` output, ``{category: values}`` with values of shape
            (num_prompts, layers) (with a lens as ``get_probs_func``) or (num_prompts,) (the
            final output only: drawn as bars). Tensors, arrays or lists.
        title, width, height, file: title, size in pixels, and where to save (see `save_figure`).
        band: the shaded spread around each mean: ``"std"`` (mean ± standard deviation over
            prompts), ``"minmax"`` (lowest to highest prompt) or ``None``. On bars: error bars.
        show_prompts: also draw every prompt, faintly (lines, or points on the bars).
        layer_labels: names of the layers on the x axis (default 0..layers-1).
        value_name: the y axis title.

    Returns:
        The plotly Figure. Each category's mean trace is named after the category, in the order
        of ``results``; its ``y`` is the mean over prompts.

    Raises:
        InvalidInputError: an empty or non-mapping ``results``, NaN/inf values, categories of
            different shapes, a bad band, size or ``file``.

    Example:
        >>> results = run_prompts(model, prompts, get_probs_func=logit_lens)
        >>> plot_run_prompts(results, title="Target emergence", file="targets.html")
    """
    check_common(title, width, height, file)
    if not (band is None or isinstance(band, str)) or band not in BANDS:
        raise InvalidInputError(f"band={band!r} is not a band: use 'std', 'minmax' or None.")
    _checks.flag(show_prompts, "show_prompts")
    _checks.optional_labels(layer_labels, "layer_labels")
    _checks.text(value_name, "value_name")
    if not isinstance(results, Mapping) or not results:
        raise InvalidInputError(
            "results must be a non-empty {category: values} mapping, as run_prompts returns."
        )
    arrays = {str(name): _category(values, f"results[{name!r}]") for name, values in results.items()}
    dims = {array.ndim for array in arrays.values()}
    shapes = {name: array.shape for name, array in arrays.items()}
    if dims == {2} and len({shape[1] for shape in shapes.values()}) == 1:
        fig = _curves(arrays, band, show_prompts, layer_labels)
        num_layers = next(iter(shapes.values()))[1]
        fig.update_xaxes(layer_axis(layer_labels, num_layers), range=[-0.5, num_layers - 0.5])
    elif dims == {1}:
        fig = _bars(arrays, band, show_prompts)
    else:
        raise InvalidInputError(
            "results must all be (num_prompts, layers) with the same layers, or all (num_prompts,); "
            f"got {shapes}."
        )
    fig.update_yaxes(title={"text": value_name})
    return finish_figure(fig, title=title, width=width, height=height, file=file, hovermode="x unified")


def _category(values: Any, name: str) -> np.ndarray:
    """One category's values: finite numbers, at least one prompt (and one layer)."""
    array = require_finite(to_numpy(values, name), name)
    if array.ndim in (1, 2) and 0 in array.shape:
        raise InvalidInputError(
            f"{name} has shape {tuple(array.shape)}: it holds no values; run_prompts needs at least one "
            "prompt with a token of that category."
        )
    return array


def _spread(values: np.ndarray, band: str | None) -> tuple[np.ndarray, np.ndarray] | None:
    """Lower and upper edges of the band over prompts (axis 0)."""
    if band == "std":
        mean, std = values.mean(axis=0), values.std(axis=0)
        return mean - std, mean + std
    if band == "minmax":
        return values.min(axis=0), values.max(axis=0)
    return None


def _colour(index: int, alpha: float = 1.0) -> str:
    """The ``index``-th default plotly colour, with opacity ``alpha``."""
    red, green, blue = unlabel_rgb(DEFAULT_PLOTLY_COLORS[index % len(DEFAULT_PLOTLY_COLORS)])
    return f"rgba({red:g}, {green:g}, {blue:g}, {alpha})"


def _curves(
    arrays: dict[str, np.ndarray], band: str | None, show_prompts: bool, layer_labels: Sequence[Any] | None
) -> go.Figure:
    """One mean line per category over layers, with its band and optionally every prompt."""
    fig = go.Figure()
    for index, (name, values) in enumerate(arrays.items()):
        layers = list(range(values.shape[1]))
        names = layer_names(layer_labels, len(layers))
        edges = _spread(values, band)
        if edges is not None:
            for edge, fill in zip(edges, (None, "tonexty")):
                fig.add_trace(go.Scatter(
                    x=layers, y=edge, mode="lines", line={"width": 0}, fill=fill,
                    fillcolor=_colour(index, 0.2), legendgroup=name, showlegend=False, hoverinfo="skip",
                ))
        if show_prompts:
            for prompt, row in enumerate(values):
                fig.add_trace(go.Scatter(
                    x=layers, y=row, mode="lines", line={"width": 1, "color": _colour(index, 0.3)},
                    legendgroup=name, showlegend=False, name=f"{name} prompt {prompt}", customdata=names,
                    hovertemplate=f"{name}, prompt {prompt}, layer %{{customdata}}: %{{y:.4f}}"
                    "<extra></extra>",
                ))
        fig.add_trace(go.Scatter(
            x=layers, y=values.mean(axis=0), mode="lines+markers", name=name, legendgroup=name,
            line={"width": 2.5, "color": _colour(index)}, customdata=names,
            hovertemplate=f"{name}, layer %{{customdata}} (mean of {len(values)}): %{{y:.4f}}<extra></extra>",
        ))
    return fig


def _bars(arrays: dict[str, np.ndarray], band: str | None, show_prompts: bool) -> go.Figure:
    """One bar per category (mean over prompts), with error bars and optionally every prompt."""
    names = list(arrays)
    means = [values.mean() for values in arrays.values()]
    error = None
    if band is not None:
        lows, highs = zip(*(_spread(values[:, None], band) for values in arrays.values()))
        error = {
            "type": "data",
            "symmetric": False,
            "array": [float(high[0] - mean) for high, mean in zip(highs, means)],
            "arrayminus": [float(mean - low[0]) for low, mean in zip(lows, means)],
        }
    fig = go.Figure(go.Bar(
        x=names, y=means, error_y=error, marker_color=[_colour(i, 0.8) for i in range(len(names))],
        name="mean", hovertemplate="%{x}: %{y:.4f}<extra>mean</extra>",
    ))
    if show_prompts:
        for index, (name, values) in enumerate(arrays.items()):
            fig.add_trace(go.Scatter(
                x=[name] * len(values), y=values, mode="markers", name=f"{name} prompts", showlegend=False,
                marker={"color": _colour(index), "size": 7, "line": {"width": 1, "color": "white"}},
                customdata=list(range(len(values))),
                hovertemplate=f"{name}, prompt %{{customdata}}: %{{y:.4f}}<extra></extra>",
            ))
    return fig
