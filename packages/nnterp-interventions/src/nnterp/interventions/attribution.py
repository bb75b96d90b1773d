"""Attribution patching: the first-order (gradient x activation difference) estimate of
activation patching, for every cell at the cost of two forwards and one backward.

Patching the clean activation ``a_clean`` into the corrupted run changes the metric by about

    metric(corrupted) + sum over the patched cells of (a_clean - a_corrupted) * d metric / d a

with the gradient taken on the corrupted run (Nanda, "Attribution Patching", 2023). The
cells and the grid match `nnterp.interventions.patching.activation_patching`: (layers,
positions) for residual-like sites, summing over the hidden dimension and the batch;
(layers, heads) for per-head sites, also summing over the patched positions. The estimate is
exact for small differences and degrades where the metric is far from linear (large
residual-stream changes, saturated softmaxes); check it against real patching on a few cells.

Example:
    >>> from nnterp.interventions.attribution import attribution_patching
    >>> estimate = attribution_patching(model, clean, corrupted, logit_difference(paris, rome))
    >>> exact = activation_patching(model, clean, corrupted, logit_difference(paris, rome))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from nnterp.cache import cache_activations
from nnterp.inputs import index_list, layer_indices, prompt_list
from nnterp.interventions.gradients import compute_gradients
from nnterp.interventions.metrics import Metric
from nnterp.interventions.patching import (
    aligned_length,
    head_count,
    site_kind,
)

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def attribution_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    *,
    site: str = "layers_output",
    layers: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """The linear estimate of `activation_patching`'s grid, from one backward pass.

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar``, differentiable.
        site: the accessor patched (residual-like or per-head, as in `activation_patching`).
        layers: layers (default all).
        positions: positions swept (residual-like) or summed over (per-head); default all.
        heads: heads (per-head sites; default all).

    Returns:
        float32 CPU tensor shaped like `activation_patching`'s result: the estimated metric
        after each patch (``metric(corrupted) +`` the first-order change).

    Example:
        >>> estimate = attribution_patching(model, clean, corrupted, metric, site="heads_output")
        >>> layer, head = divmod(int(estimate.argmax()), estimate.shape[1])
    """
    kind = site_kind(site)
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    layer_list = layer_indices(model.num_layers, layers)
    position_list = index_list(positions, length, "positions") or list(range(length))
    chosen = index_list(heads, head_count(model, site), "heads") if kind == "head" else None
    names = [f"{site}.{layer}" for layer in layer_list]
    clean_cache = cache_activations(model, clean_list, names, dtype=torch.float32)
    corrupted_run = compute_gradients(model, corrupted_list, metric, names)
    rows = []
    for name in names:
        difference = clean_cache[name] - corrupted_run.activations[name].float()
        # (batch, seq, ...) -> one value per position (and per head for per-head sites).
        effect = (difference * corrupted_run.gradients[name].float())[:, position_list]
        if kind == "position":
            rows.append(effect.flatten(2).sum(dim=(0, 2)))
        else:
            per_head = effect.sum(dim=(0, 1, 3))
            rows.append(per_head if chosen is None else per_head[chosen])
    return corrupted_run.metric.float() + torch.stack(rows)
