"""The logit lens over a whole prompt: the top token of every (layer, position)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from nnterp.display import _checks
from nnterp.display._arrays import as_probabilities, with_dims
from nnterp.display._axes import layer_axis, layer_names, spread, token_axis
from nnterp.display._token_heatmap import token_heatmap
from nnterp.display._tokens import position_labels, token_strings
from nnterp.display.save import check_common, finish_figure


def plot_logit_lens_heatmap(
    probs: Any,
    tokenizer: Any,
    input_tokens: Any = None,
    title: str | None = None,
    width: int = 1000,
    height: int = 600,
    file: str | Path | None = None,
    *,
    from_logits: bool | None = None,
    layer_labels: Sequence[Any] | None = None,
    colorscale: str = "Blues",
    zmax: float | None = None,
    font_size: int = 11,
) -> go.Figure:
    """Heatmap of the logit lens at every position: positions along x, layers up y.

    Each cell shows the most likely next token at that layer and position, coloured by its
    probability (hover: input token, layer, top token, id, probability).

    Args:
        probs: probabilities or logits for one prompt, shape (layers, positions, vocab) or
            (1, layers, positions, vocab), e.g. ``logit_lens(model, prompt, idx=[0, 1, ...])``.
        tokenizer: decodes token ids (``model.tokenizer``).
        input_tokens: labels of the positions: the prompt string (tokenized with ``tokenizer``
            as ``model.trace`` does), its token strings, or its token ids. ``None``: numbers.
        title, width, height, file: as in `plot_topk_tokens`.
        from_logits: ``True``/``False`` to say what ``probs`` holds; ``None`` guesses.
        layer_labels: names of the rows (default 0..layers-1).
        colorscale, zmax: the colour scale, from 0 to ``zmax`` (default: the largest value).
        font_size: size of the token text in the cells.

    Returns:
        The plotly Figure; in ``fig.data[0]``, ``z[layer][position]`` is the top token's
        probability and ``text[layer][position]`` the token.

    Raises:
        InvalidInputError: a wrong shape, NaN/inf values, ``input_tokens`` that do not match the
            positions, a bad tokenizer, size, colour scale or ``file``.

    Example:
        >>> prompt = "The capital of France is"
        >>> every = list(range(len(model.tokenizer(prompt)["input_ids"])))
        >>> probs = logit_lens(model, prompt, idx=every)[0]  # (layers, positions, vocab)
        >>> plot_logit_lens_heatmap(probs, model.tokenizer, prompt)
    """
    check_common(title, width, height, file)
    _checks.tokenizer(tokenizer)
    _checks.optional_labels(layer_labels, "layer_labels")
    _checks.colorscale(colorscale)
    zmax = _checks.optional_positive_number(zmax, "zmax")
    _checks.positive_number(font_size, "font_size")
    array = as_probabilities(with_dims(probs, "probs", ("layers", "positions", "vocab")), from_logits)
    num_layers, num_positions, _ = array.shape
    inputs = token_strings(input_tokens, num_positions, tokenizer, "input_tokens")
    top_ids = array.argmax(axis=-1)
    top_probs = np.take_along_axis(array, top_ids[..., None], axis=-1)[..., 0]
    shape = (num_layers, num_positions)
    heatmap = token_heatmap(
        top_ids,
        top_probs,
        tokenizer,
        hover_columns=[
            spread(position_labels(inputs, num_positions), shape, axis=1),
            spread(layer_names(layer_labels, num_layers), shape, axis=0),
        ],
        hover_text=(
            "position %{customdata[2]}, layer %{customdata[3]}<br>"
            "top: %{customdata[0]} (id %{customdata[1]})"
        ),
        colorbar_title="top-token<br>probability",
        colorscale=colorscale,
        zmax=zmax,
        font_size=font_size,
    )
    fig = go.Figure(heatmap)
    fig.update_xaxes(token_axis("input token", inputs))
    fig.update_yaxes(layer_axis(layer_labels, num_layers))
    return finish_figure(fig, title=title, width=width, height=height, file=file)
