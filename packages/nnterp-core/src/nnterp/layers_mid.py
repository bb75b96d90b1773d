"""The residual stream between a block's token mixer and its MLP: ``model.layers_mid[i]``.

TransformerLens calls it ``resid_mid``. On sequential blocks, ::

    layers_mid[i] == layers_input[i] + mixers_output[i]          (attentions_output[i])
    layers_output[i] == layers_mid[i] + mlps_output[i]

to rounding. It is read where the forward holds it: the input of the norm before the MLP
(``post_attention_layernorm``, GPT-2's ``ln_2``, Gemma-2's ``pre_feedforward_layernorm``; the
spec's ``mlp_norm``), or the MLP's own input when the MLP reads the stream un-normalised.

Assigning ``v`` makes ``v`` the stream there: the MLP's norm receives ``v``, and the block's
output becomes ``v + mlps_output[i]`` (the residual the block adds the MLP to is ``v`` too).
To add that residual the write waits for the MLP's output, so a trace that writes
``layers_mid[i]`` cannot also reach layer ``i``'s MLP-internal sites (``mlps_norm_scale``,
``mlps_input``, ``mlps_hidden``: they lie between the write and the MLP's output; use a
second trace); ``mlps_output[i]``, ``layers_output[i]`` and later sites stay readable after it.

Parallel blocks (GPT-J, GPT-NeoX with ``use_parallel_residual``, Falcon, Cohere, Phi-1/2), where
both sublayers read the block's input, have no such stream: ``model.support()`` says so.

Example:
    >>> with model.trace("The cat sat"):
    ...     mid = model.layers_mid[1].save()              # (1, seq, hidden)
    ...     model.layers_mid[1] = mid * 0.5
    ...     logits = model.logits.save()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nnterp.accessors import (
    GradientSource,
    _outside_trace_checked,
    _PerLayerView,
    first_tensor,
    normalize_layer,
    site_view,
    token_shape,
    unflatten_tokens,
)
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.norm_scales import norm_input_envoy
from nnterp.stream_layout import from_standard, to_standard

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


class LayersMidAccessor(_PerLayerView):
    """``model.layers_mid[i]``: (batch, seq, hidden), readable and assignable (see the module)."""

    description = "residual streams between mixer and MLP"

    def __init__(self, model: StandardizedTransformer) -> None:
        self._model = model

    def unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no stream between its mixer and its MLP, or ``None``."""
        declared = self._model.spec.unavailable_sites.get("layers_mid")
        return declared or self._model.layer_structure.mid_unavailable(layer)

    def _envoy(self, layer: int) -> Any:
        model = self._model
        why = self.unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(
                f"layers_mid[{layer}] of {model.spec.name}: {why}."
            )
        norm = model.layer_structure.norms[layer].mlp
        if norm is not None:
            return norm_input_envoy(model, layer, norm, "mlp")
        return model._mlp_input_module(layer)

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        layer = normalize_layer(self._model, layer)
        value = first_tensor(self._envoy(layer).input)
        if value.dim() == 2:  # a layer that flattens its tokens before the MLP (OPT)
            value = unflatten_tokens(value, token_shape(self._model, value))
        return to_standard(self._model, value)

    def gradient_source(self, layer: int) -> GradientSource:
        """Inside a trace: what the MLP's norm receives (the stream the forward goes on with)
        and the function turning its gradient into the site's (batch, seq, hidden)."""
        model = self._model
        raw = first_tensor(self._envoy(normalize_layer(model, layer)).input)
        return raw, site_view(model, raw, raw.dim() == 2)

    @_outside_trace_checked
    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        model = self._model
        layer = normalize_layer(model, layer)
        envoy = self._envoy(layer)
        why = model.layer_structure.mlp_unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(
                f"layers_mid[{layer}] of {model.spec.name} is read-only here ({why}): a write must add the "
                f"MLP's contribution back; patch mlps_input[{layer}] and layers_output[{layer}] instead."
            )
        current = first_tensor(envoy.input)
        standard = to_standard(model, current)
        stream_shape = (
            tuple(standard.shape)
            if current.dim() == 3
            else (*token_shape(model, current), current.shape[-1])
        )
        if tuple(getattr(value, "shape", ())) != stream_shape:
            raise InvalidInputError(
                f"layers_mid[{layer}] has shape {stream_shape} (batch, seq, hidden) but the assigned value "
                f"has shape {tuple(getattr(value, 'shape', ()))}: pass a tensor of that shape."
            )
        stream = value.to(dtype=current.dtype, device=current.device)
        envoy.input = from_standard(model, current, stream).reshape(current.shape)
        model.layers_output[layer] = stream + model.mlps_output[layer]


__all__ = ["LayersMidAccessor"]
