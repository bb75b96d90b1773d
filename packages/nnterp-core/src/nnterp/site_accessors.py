"""The accessors of the derived sites (issue 18), by site name, for `StandardizedTransformer`.

Each site of `nnterp.sites` that is computed around a module rather than read off one is
implemented in a module of its own; this one gathers them so the model builds each on first
use: ``model.mlps_hidden``, ``model.layers_mid``, ``model.attention_scores``,
``model.heads_result``, ``model.attentions_norm_scale``, ``model.mlps_norm_scale``.

Example:
    >>> accessor = build_accessor(model, "mlps_hidden")
    >>> accessor.unavailable(0) is None               # a dense MLP
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nnterp.attention_scores import AttentionScoresAccessor
from nnterp.errors import InvalidInputError
from nnterp.heads import HeadResultsAccessor
from nnterp.layers_mid import LayersMidAccessor
from nnterp.mlp_hidden import MlpHiddenAccessor
from nnterp.norm_scales import NormScaleAccessor

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def build_accessor(model: StandardizedTransformer, name: str) -> Any:
    """A new accessor of derived site ``name`` over ``model``.

    Raises:
        InvalidInputError: ``name`` is not a derived site.
    """
    builders = {
        "attentions_norm_scale": lambda: NormScaleAccessor(model, "attention"),
        "mlps_norm_scale": lambda: NormScaleAccessor(model, "mlp"),
        "attention_scores": lambda: AttentionScoresAccessor(model),
        "heads_result": lambda: HeadResultsAccessor(model),
        "layers_mid": lambda: LayersMidAccessor(model),
        "mlps_hidden": lambda: MlpHiddenAccessor(model),
    }
    if name not in builders:
        raise InvalidInputError(
            f"{name!r} is no derived site; use one of {', '.join(builders)}"
        )
    return builders[name]()


__all__ = [
    "AttentionScoresAccessor",
    "HeadResultsAccessor",
    "LayersMidAccessor",
    "MlpHiddenAccessor",
    "NormScaleAccessor",
    "build_accessor",
]
