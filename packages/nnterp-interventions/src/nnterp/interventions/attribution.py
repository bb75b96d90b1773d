"""Attribution patching: the first-order (gradient x activation difference) estimate of
activation patching, for every cell at the cost of two forwards and one backward.

Patching the clean activation ``a_clean`` into the corrupted run changes the metric by about

    metric(corrupted) + sum over the patched cells of (a_clean - a_corrupted) * d metric / d a

with the gradient taken on the corrupted run (Nanda, "Attribution Patching", 2023). The
cells and the grid match `nnterp.interventions.patching.activation_patching` for every site
it patches: (layers, positions) for sites without heads, summing over the hidden dimension and
the batch; (layers, heads) for per-head sites (``heads_output``, ``queries``, ``keys``,
``values``, rotated queries/keys, ``attention_probabilities``), also summing over the patched
positions; (layers, positions, heads) with ``by_position=True``. The estimate is
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
from nnterp.errors import InvalidInputError
from nnterp.inputs import index_list, prompt_list
from nnterp.interventions.gradients import compute_gradients
from nnterp.interventions.metrics import Metric
from nnterp.interventions.patching import aligned_length, patch_geometry, patch_layers
from nnterp.tracing import remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


@remote_aware
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
    by_position: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """The linear estimate of `activation_patching`'s grid, from one backward pass.

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar``, differentiable.
        site: the accessor patched (any site `activation_patching` takes).
        layers: layers (default: every layer that has the site).
        positions: positions swept (sites without heads, or ``by_position``) or summed over
            (per-head sites); default all.
        heads: heads (per-head sites; default all of the site's heads).
        by_position: per-head sites: one cell per (position, head).
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        float32 CPU tensor shaped like `activation_patching`'s result for the same
        arguments: the estimated metric after each patch (``metric(corrupted) +`` the
        first-order change).

    Raises:
        InvalidInputError, LayerIndexError, UnavailableComponentError: as
            `activation_patching`.

    Example:
        >>> estimate = attribution_patching(model, clean, corrupted, metric, site="heads_output")
        >>> layer, head = divmod(int(estimate.argmax()), estimate.shape[1])
        >>> cells = attribution_patching(model, clean, corrupted, metric, site="values", by_position=True)
    """
    geometry = patch_geometry(model, site)
    if heads is not None and geometry.head_axis is None:
        raise InvalidInputError(f"heads= applies to per-head sites; {site} has no head dimension.")
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    layer_list = patch_layers(model, site, layers)
    position_list = index_list(positions, length, "positions") or list(range(length))
    chosen = index_list(heads, geometry.num_heads, "heads") if geometry.num_heads is not None else None
    names = [f"{site}.{layer}" for layer in layer_list]
    clean_cache = cache_activations(model, clean_list, names, dtype=torch.float32)
    corrupted_run = compute_gradients(model, corrupted_list, metric, names)
    rows = []
    for name in names:
        difference = clean_cache[name] - corrupted_run.activations[name].float()
        effect = (difference * corrupted_run.gradients[name].float()).index_select(
            geometry.position_axis, torch.tensor(position_list)
        )
        cells = geometry.reduce(effect, by_position)
        rows.append(cells if chosen is None else cells[..., chosen])
    return corrupted_run.metric.float() + torch.stack(rows)
