"""The reference logit-lens figure: the top-k tokens of every layer for one prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nnterp.display import _checks
from nnterp.display._arrays import as_probabilities, with_dims
from nnterp.display._axes import labelled_axis, layer_axis, layer_names, spread
from nnterp.display._token_heatmap import token_heatmap
from nnterp.display.save import check_common, finish_figure
from nnterp.errors import InvalidInputError


def plot_topk_tokens(
    probs: Any,
    tokenizer: Any,
    k: int = 5,
    title: str | None = None,
    width: int = 1000,
    height: int = 600,
    file: str | Path | None = None,
    *,
    from_logits: bool | None = None,
    layer_labels: Sequence[Any] | None = None,
    colorscale: str = "Blues",
    zmax: float | None = None,
    font_size: int = 12,
) -> go.Figure:
    """Heatmap of each layer's ``k`` most likely tokens: layers up the y axis, ranks along x.

    Each cell is written with its token (``" Paris"`` shows as ``␣Paris``, a newline as ``\\n``)
    and coloured by its probability; hovering gives layer, rank, token id and probability.

    Args:
        probs: one prompt's logit lens, shape (layers, vocab) or (1, layers, vocab); a torch
            tensor, numpy array or nested list. Logits are accepted too (softmaxed).
        tokenizer: decodes the token ids (``model.tokenizer``).
        k: how many tokens per layer (1..vocab).
        title, width, height: the figure's title and size in pixels.
        file: also save it there (``.html`` or ``.png``, see `save_figure`).
        from_logits: ``True``/``False`` to say what ``probs`` holds; ``None`` guesses (values
            outside [0, 1] are logits).
        layer_labels: names of the rows, one per layer (default 0..layers-1).
        colorscale: plotly colour scale; the colour bar runs from 0 to ``zmax`` (default: the
            largest probability shown).
        font_size: size of the token text in the cells.

    Returns:
        The plotly Figure. In its heatmap ``fig.data[0]``, ``z[layer][r]`` is the probability of
        the token ranked ``r`` (0 = most likely) at ``layer``, ``text[layer][r]`` its string and
        ``customdata[layer][r]`` is (string, token id, layer name).

    Raises:
        InvalidInputError: a wrong shape, NaN/inf values, probabilities outside [0, 1] with
            ``from_logits=False``, a bad ``k``, tokenizer, size, colour scale or ``file``.

    Example:
        >>> probs = logit_lens(model, "The capital of France is")
        >>> plot_topk_tokens(probs[0], model.tokenizer, k=5, file="lens.png")
    """
    check_common(title, width, height, file)
    _checks.tokenizer(tokenizer)
    _checks.optional_labels(layer_labels, "layer_labels")
    _checks.colorscale(colorscale)
    zmax = _checks.optional_positive_number(zmax, "zmax")
    _checks.positive_number(font_size, "font_size")
    array = as_probabilities(with_dims(probs, "probs", ("layers", "vocab")), from_logits)
    num_layers, vocab = array.shape
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= vocab:
        raise InvalidInputError(f"k={k!r} must be an integer from 1 to the vocabulary size {vocab}.")
    top_ids = np.argsort(-array, axis=-1, kind="stable")[:, :k]
    top_probs = np.take_along_axis(array, top_ids, axis=-1)
    names = spread(layer_names(layer_labels, num_layers), (num_layers, k), axis=0)
    heatmap = token_heatmap(
        top_ids,
        top_probs,
        tokenizer,
        hover_columns=[names],
        hover_text="layer %{customdata[2]}<br>%{customdata[0]} (id %{customdata[1]})",
        colorbar_title="probability",
        colorscale=colorscale,
        zmax=zmax,
        font_size=font_size,
    )
    fig = go.Figure(heatmap)
    fig.update_xaxes(labelled_axis("", [f"top {rank}" for rank in range(1, k + 1)], side="top"))
    fig.update_yaxes(layer_axis(layer_labels, num_layers))
    return finish_figure(fig, title=title, width=width, height=height, file=file)
