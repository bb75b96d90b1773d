"""MLP hidden (neuron) activations as a site: ``model.mlps_hidden[i]``.

The input of layer ``i``'s down projection (the MLP's last projection: ``down_proj``,
GPT-2's ``c_proj``, OPT's ``fc2``, NeoX's ``dense_4h_to_h``, ...), shaped
(batch, seq, intermediate): after the activation function, and after the gate product in
gated MLPs (``act(gate(x)) * up(x)``). These are the neurons of neuron-level attribution,
patching and max-activating examples. Assigning replaces what the down projection receives.

Where the down projection is comes from the spec's ``down_proj`` (candidates tried from the
MLP module, or from the layer when the feed-forward has no module of its own). A mixture of
experts has no single hidden tensor (each token's live in the experts it is routed to):
``model.support()`` says so per layer.

Example:
    >>> with model.trace("The cat sat"):
    ...     neurons = model.mlps_hidden[1].save()           # (1, seq, intermediate)
    ...     model.mlps_hidden[1][:, :, 7] = 0               # ablate neuron 7 ... in place, or:
    ...     model.mlps_hidden[0] = model.mlps_hidden[0] * 2
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nnterp.accessors import LayerAccessor, child_envoy
from nnterp.errors import UnavailableComponentError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


class MlpHiddenAccessor(LayerAccessor):
    """``model.mlps_hidden[i]``: the down projection's input, (batch, seq, intermediate).

    Example:
        >>> with model.trace("Hello"):
        ...     h = model.mlps_hidden[0].save()
    """

    def __init__(self, model: StandardizedTransformer) -> None:
        super().__init__(
            model,
            self._down_proj,
            "input",
            "MLP hidden activations",
            tokens_flattened=self._flattened,
        )

    def unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no hidden activations, or ``None``."""
        declared = self._model.spec.unavailable_sites.get("mlps_hidden")
        return declared or self._model.layer_structure.hidden_unavailable(layer)

    def _down_proj(self, layer: int) -> Any:
        why = self.unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(
                f"mlps_hidden[{layer}] of {self._model.spec.name}: {why}."
            )
        site = self._model.layer_structure.mlps[layer]
        assert site is not None and site.down_proj is not None
        return child_envoy(self._model.layers[layer], site.down_proj)

    def _flattened(self, layer: int) -> bool:
        site = self._model.layer_structure.mlps[layer]
        return site is not None and site.contribution.tokens_flattened


__all__ = ["MlpHiddenAccessor"]
