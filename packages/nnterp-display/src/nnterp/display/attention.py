"""Attention patterns: query × key heatmaps, one per head."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nnterp.display import _checks
from nnterp.display._arrays import require_probabilities, with_dims
from nnterp.display._axes import cell_data, spread, token_axis
from nnterp.display._tokens import position_labels, token_strings
from nnterp.display.save import check_common, finish_figure
from nnterp.errors import InvalidInputError
from nnterp.inputs import index_list

#: Side of one head's panel in pixels, used for the default figure size.
PANEL_SIZE = 320
LAYOUTS = ("grid", "slider")


def plot_attention(
    attention_probs: Any,
    tokens: Any = None,
    heads: int | Sequence[int] | None = None,
    *,
    tokenizer: Any = None,
    layout: str = "grid",
    columns: int = 4,
    title: str | None = None,
    width: int | None = None,
    height: int | None = None,
    file: str | Path | None = None,
    colorscale: str = "Viridis",
) -> go.Figure:
    """Attention patterns of one layer: for each head, a query × key heatmap of probabilities.

    Queries run down the y axis (first token at the top), keys along x; both are labelled with
    the tokens. When there are fewer queries than keys (a cached prefix), the queries are the
    last tokens.

    Args:
        attention_probs: shape (heads, queries, keys) or (1, heads, queries, keys), e.g.
            ``model.attention_probabilities[layer]`` saved from a trace of one prompt.
        tokens: the key tokens: a list of strings, token ids (with ``tokenizer``) or the prompt
            string (with ``tokenizer``). ``None``: positions are numbered.
        heads: which heads to show (an index or a list; negative counts from the end). ``None``: all.
        tokenizer: decodes ids / splits a prompt given as ``tokens``.
        layout: ``"grid"`` (one panel per head, ``columns`` per row) or ``"slider"`` (one panel
            and a slider that picks the head).
        title, width, height, file: title, size in pixels (default: from the number of panels),
            and where to save it (see `save_figure`).
        colorscale: plotly colour scale, from 0 to 1.

    Returns:
        The plotly Figure: one heatmap trace per shown head, in ``heads`` order, with
        ``trace.z[query][key]`` the attention probability and ``trace.name`` = ``"head {h}"``.

    Raises:
        InvalidInputError: a wrong shape, values that are not probabilities (NaN, outside [0, 1]),
            more queries than keys, ``tokens`` that do not match the keys, a bad layout, size,
            colour scale or ``file``.
        LayerIndexError: a head index out of range.

    Example:
        >>> with model.trace("The cat sat on the mat"):
        ...     probs = model.attention_probabilities[3].save()
        >>> plot_attention(probs[0], model.tokenizer.tokenize("The cat sat on the mat"))
    """
    check_common(title, width, height, file)
    _checks.colorscale(colorscale)
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise InvalidInputError(f"layout={layout!r} is not a layout: use 'grid' or 'slider'.")
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise InvalidInputError(f"columns={columns!r} must be a positive integer (panels per row).")
    array = with_dims(attention_probs, "attention_probs", ("heads", "queries", "keys"))
    require_probabilities(
        array, "attention_probs",
        "pass model.attention_probabilities[layer] (after the softmax), not attention scores",
    )
    num_heads, num_queries, num_keys = array.shape
    if num_queries > num_keys:
        raise InvalidInputError(
            f"attention_probs has {num_queries} queries but only {num_keys} keys: the last two axes "
            "must be (queries, keys)."
        )
    shown = index_list(heads, num_heads, "heads") or list(range(num_heads))
    keys = token_strings(tokens, num_keys, tokenizer, "tokens")
    first_query = num_keys - num_queries
    queries = None if keys is None else keys[first_query:]
    names = position_labels(keys, num_keys)
    hover = cell_data(
        spread(names[first_query:], (num_queries, num_keys), axis=0),
        spread(names, (num_queries, num_keys), axis=1),
    )
    traces = [
        go.Heatmap(
            z=array[head],
            x=list(range(num_keys)),
            y=list(range(num_queries)),
            name=f"head {head}",
            customdata=hover,
            hovertemplate=f"head {head}<br>query %{{customdata[0]}}<br>key %{{customdata[1]}}"
            "<br>p = %{z:.4f}<extra></extra>",
            coloraxis="coloraxis",
        )
        for head in shown
    ]
    x_axis = token_axis("key", keys, tickangle=-45 if keys is not None else None, showgrid=False)
    y_axis = token_axis("query", queries, autorange="reversed", showgrid=False)
    if layout == "grid":
        fig, rows, columns = _grid(traces, columns, x_axis, y_axis)
        margin = {}
        width = width or PANEL_SIZE * columns + 160
        height = height or PANEL_SIZE * rows + 140
    else:
        fig = _slider(traces, x_axis, y_axis)
        margin = {"b": 160}  # room for the slider under the key tokens
        width = width or PANEL_SIZE * 2 + 160
        height = height or PANEL_SIZE * 2 + 260
    coloraxis = {
        "colorscale": colorscale, "cmin": 0.0, "cmax": 1.0, "colorbar": {"title": {"text": "attention"}}
    }
    return finish_figure(
        fig, title=title, width=width, height=height, file=file, coloraxis=coloraxis, margin=margin
    )


def _grid(
    traces: list[go.Heatmap], columns: int, x_axis: dict, y_axis: dict
) -> tuple[go.Figure, int, int]:
    """One subplot per trace, ``columns`` to a row, titled with the trace name; (fig, rows, columns)."""
    columns = min(columns, len(traces))
    rows = math.ceil(len(traces) / columns)
    fig = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=[trace.name for trace in traces],
        horizontal_spacing=0.25 / columns,
        vertical_spacing=0.3 / rows,
    )
    for index, trace in enumerate(traces):
        fig.add_trace(trace, row=index // columns + 1, col=index % columns + 1)
    fig.update_xaxes(x_axis)
    fig.update_yaxes(y_axis)
    for index in range(len(traces)):
        row, col = index // columns + 1, index % columns + 1
        if col > 1:
            fig.update_yaxes(title=None, row=row, col=col)
        if index + columns < len(traces):  # a panel below carries the key title
            fig.update_xaxes(title=None, row=row, col=col)
    return fig, rows, columns


def _slider(traces: list[go.Heatmap], x_axis: dict, y_axis: dict) -> go.Figure:
    """All traces on one panel, one visible at a time, chosen with a slider."""
    fig = go.Figure(traces)
    for index, trace in enumerate(fig.data):
        trace.visible = index == 0
    steps = [
        {
            "label": trace.name,
            "method": "update",
            "args": [{"visible": [other == index for other in range(len(traces))]}],
        }
        for index, trace in enumerate(traces)
    ]
    slider = {"active": 0, "steps": steps, "currentvalue": {"prefix": "shown: "}, "pad": {"t": 90}}
    fig.update_layout(sliders=[slider])
    fig.update_xaxes(x_axis)
    fig.update_yaxes(y_axis)
    return fig
