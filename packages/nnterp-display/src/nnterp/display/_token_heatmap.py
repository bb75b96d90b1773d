"""The heatmap shared by the lens figures: a token written in each cell, coloured by its probability."""

from __future__ import annotations

from typing import Any

import numpy as np
import plotly.graph_objects as go

from nnterp.display._axes import cell_data
from nnterp.display._tokens import label_grid


def token_heatmap(
    token_ids: np.ndarray,
    probs: np.ndarray,
    tokenizer: Any,
    *,
    hover_columns: list[np.ndarray],
    hover_text: str,
    colorbar_title: str,
    colorscale: str,
    zmax: float | None,
    font_size: int,
) -> go.Heatmap:
    """Cells (row, col) at y=row, x=col showing ``token_ids`` decoded, coloured by ``probs``.

    Hover data: ``customdata[0]`` is the token label, ``[1]`` its id, then ``hover_columns``
    (grids of the same shape); ``hover_text`` is the line(s) above the probability.
    """
    labels = label_grid(tokenizer, token_ids)
    rows, columns = token_ids.shape
    return go.Heatmap(
        z=probs,
        x=list(range(columns)),
        y=list(range(rows)),
        text=labels,
        texttemplate="%{text}",
        textfont={"size": font_size},
        customdata=cell_data(labels, token_ids, *hover_columns),
        hovertemplate=f"{hover_text}<br>p = %{{z:.4f}}<extra></extra>",
        colorscale=colorscale,
        zmin=0.0,
        zmax=zmax,
        colorbar={"title": {"text": colorbar_title}},
        xgap=1,
        ygap=1,
    )
