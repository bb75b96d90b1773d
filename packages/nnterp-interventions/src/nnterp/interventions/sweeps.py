"""Every-block patching: the residual stream, attention and MLP grids of one model in one call.

`every_block_patching` runs `nnterp.interventions.patching.activation_patching` at three
sites of every layer and position (TransformerLens' ``get_act_patch_block_every``): the
residual stream (``layers_input`` by default, or ``layers_output``), what the attention adds
(``attentions_output``) and what the MLP adds (``mlps_output``). Each grid cell is the metric
of the corrupted run with that one clean activation patched in. Layers that lack a site (the
non-attention layers of a hybrid, a layer without an MLP) hold NaN in its grid.

Example:
    >>> from nnterp.interventions.sweeps import every_block_patching
    >>> result = every_block_patching(model, clean, corrupted, logit_difference(paris, rome))
    >>> result.attention.shape                    # (layers, positions)
    >>> result.stack().shape                      # (3, layers, positions)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from nnterp.errors import InvalidInputError
from nnterp.inputs import index_list, layer_indices, prompt_list
from nnterp.interventions.metrics import Metric
from nnterp.interventions.patching import (
    activation_patching,
    aligned_length,
    available_layers,
    site_kind,
)
from nnterp.tracing import remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: The residual-stream sites the sweep can patch (before or after each block).
RESIDUAL_SITES = ("layers_input", "layers_output")


@dataclass(frozen=True)
class BlockPatching:
    """The grids of `every_block_patching`, float32 CPU, each (layers, positions).

    Attributes:
        residual: the metric with the clean residual stream patched at (layer, position).
        attention: the same with the clean attention contribution patched.
        mlp: the same with the clean MLP contribution patched.
        sites: the site of each grid, in that order (e.g. ``("layers_input",
            "attentions_output", "mlps_output")``).
        layers: the layer of each row.
        positions: the position of each column.
    """

    residual: torch.Tensor
    attention: torch.Tensor
    mlp: torch.Tensor
    sites: tuple[str, str, str]
    layers: list[int]
    positions: list[int]

    def stack(self) -> torch.Tensor:
        """The three grids stacked: (3, layers, positions), in the order of ``sites``."""
        return torch.stack([self.residual, self.attention, self.mlp])

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{site: grid}`` for the three sites."""
        return dict(zip(self.sites, (self.residual, self.attention, self.mlp)))


@remote_aware
def every_block_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    *,
    residual: str = "layers_input",
    layers: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    remote: bool | str | None = None,
) -> BlockPatching:
    """Activation patching of the residual stream, attention and MLP at every layer and position.

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar`` (see `nnterp.interventions.metrics`).
        residual: the residual site, ``"layers_input"`` (the stream entering each block,
            TransformerLens' ``resid_pre``) or ``"layers_output"`` (``resid_post``).
        layers: layers to sweep (default all).
        positions: positions to sweep (default all); negative indices count from the end.
        batch_size: patched runs per forward pass.
        progress: show progress bars.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        A `BlockPatching` of three (len(layers), len(positions)) grids; NaN where a layer has
        no such site (`model.support()` says why).

    Raises:
        InvalidInputError: ``residual`` not one of ``RESIDUAL_SITES``, or misaligned prompts.
        LayerIndexError: a layer or position out of range.

    Example:
        >>> result = every_block_patching(model, "The capital of France is",
        ...                               "The capital of Italy is", metric)
        >>> result.residual[0, -1], result.mlp[-1, -1]
    """
    if residual not in RESIDUAL_SITES:
        raise InvalidInputError(
            f"residual must be one of {list(RESIDUAL_SITES)}, got {residual!r}"
        )
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    layer_list = layer_indices(model.num_layers, layers)
    position_list = index_list(positions, length, "positions") or list(range(length))
    sites = (residual, "attentions_output", "mlps_output")
    grids = []
    for site in sites:
        site_kind(site)
        reasons = available_layers(model, site)
        grid = torch.full((len(layer_list), len(position_list)), float("nan"))
        rows = [row for row, layer in enumerate(layer_list) if reasons[layer] is None]
        if rows:
            grid[rows] = activation_patching(
                model,
                clean_list,
                corrupted_list,
                metric,
                site=site,
                layers=[layer_list[row] for row in rows],
                positions=position_list,
                batch_size=batch_size,
                progress=progress,
            )
        grids.append(grid)
    return BlockPatching(grids[0], grids[1], grids[2], sites, layer_list, position_list)


__all__ = ["RESIDUAL_SITES", "BlockPatching", "every_block_patching"]
