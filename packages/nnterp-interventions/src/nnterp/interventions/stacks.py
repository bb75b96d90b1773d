"""Stacks of residual-stream states, and the final norm applied to a whole stack.

`accumulated_resid` gives the residual stream as it stands after each layer, stacked:
``[layers_input[0], layers_output[0], ..., layers_output[-1]]``, (layers + 1, batch, [pos,]
hidden) (TransformerLens' ``cache.accumulated_resid``). `apply_ln_to_stack` sends every element
of a stack through the final norm, either with the scale *frozen* at one residual stream (the
final one by default: TransformerLens' ``apply_ln_to_stack``, which keeps the map linear so a
stack of components still sums to the normed residual) or *recomputed* for each element (the
norm module itself on each element, what a logit lens does).

Unlike TransformerLens, nnterp does not fold the norm's weights into the unembedding, so the
normed stack includes the norm's weight (and, with ``include_bias``, its bias): for a stack of
residual states ``apply_ln_to_stack(model, stack)[-1]`` is exactly the final norm's output, and
multiplied by the unembedding it gives the logits (before any logit scale or soft-cap).

Example:
    >>> from nnterp.interventions.stacks import accumulated_resid, apply_ln_to_stack
    >>> stack = accumulated_resid(model, "The capital of France is", positions=-1)  # (L+1, 1, hidden)
    >>> normed = apply_ln_to_stack(model, stack)             # scale frozen at stack[-1]
    >>> logits = normed @ model._module.lm_head.weight.T     # (L+1, 1, vocab); [-1] = the logits
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from nnterp.cache import Positions, cache_activations
from nnterp.errors import InvalidInputError
from nnterp.inputs import require_finite, require_hidden
from nnterp.interventions.decomposition import _submodule, freeze_final_norm
from nnterp.tracing import remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


@torch.no_grad()
@remote_aware
def accumulated_resid(
    model: StandardizedTransformer,
    prompts: Any,
    *,
    positions: Positions = None,
    return_labels: bool = False,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = torch.float32,
    remote: bool | str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
    """The residual stream after each layer, stacked: (layers + 1, batch, [pos,] hidden).

    Element 0 is what enters layer 0 (``layers_input[0]``: the embeddings as the stream sees
    them); element ``i + 1`` is ``layers_output[i]``; the last is the stream entering the final
    norm.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        positions: as `nnterp.cache.cache_activations`: ``None`` (every position: a ``pos``
            dimension of the sequence length), an int (no ``pos`` dimension), a list, or one
            list per prompt.
        return_labels: also return the label of each element (``"layers_input.0"``,
            ``"layers_output.0"``, ...).
        device, dtype: of the returned stack (``None``: the model's).
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        The stack, or ``(stack, labels)``.

    Raises:
        InvalidInputError, TokenPositionError: bad prompts or positions.

    Example:
        >>> stack, labels = accumulated_resid(model, ["Hi there", "Hello"], positions=-1,
        ...                                   return_labels=True)
        >>> stack.shape, labels[:2]          # (layers + 1, 2, hidden), ['layers_input.0', 'layers_output.0']
    """
    sites = ["layers_input.0", "layers_output"]
    cache = cache_activations(
        model, prompts, sites, positions=positions, device=device, dtype=dtype
    )
    labels = ["layers_input.0"] + [
        f"layers_output.{layer}" for layer in range(model.num_layers)
    ]
    stack = torch.stack([cache[label] for label in labels])
    return (stack, labels) if return_labels else stack


@torch.no_grad()
def apply_ln_to_stack(
    model: StandardizedTransformer,
    stack: torch.Tensor,
    *,
    residual: torch.Tensor | None = None,
    frozen: bool = True,
    include_bias: bool = True,
) -> torch.Tensor:
    """The final norm applied to every element of ``stack`` (float32 CPU, same shape).

    Args:
        model: a `StandardizedTransformer`.
        stack: (..., *residual_shape) where ``residual_shape`` is (batch, [pos,] hidden):
            residual states (`accumulated_resid`) or components of one residual
            (`nnterp.interventions.decomposition.decompose_residual`'s ``components``).
        residual: with ``frozen``, the residual stream whose norm scale is used, shaped like one
            element; default ``stack[-1]`` (right for `accumulated_resid`; for components pass
            their sum, e.g. ``parts.residual``).
        frozen: ``True``: every element is centred (LayerNorm) and multiplied by the norm's
            weight over ``residual``'s scale, a linear map (TransformerLens semantics).
            ``False``: the norm module itself on each element, its scale recomputed.
        include_bias: add the norm's bias to every element. Keep it for residual states; for
            components pass ``False`` (their sum plus the bias once is the normed residual).

    Returns:
        The normed stack. For a model without a final norm, the stack itself.

    Raises:
        InvalidInputError: the last dimension is not the hidden size, ``residual`` does not
            match an element's shape, or NaN/inf values.
        UnavailableComponentError: the final norm is not of the form ``gamma * P(x) / s + beta``.

    Example:
        >>> parts = decompose_residual(model, prompts)
        >>> shares = apply_ln_to_stack(model, parts.components, residual=parts.residual,
        ...                            include_bias=False)
        >>> normed_residual = shares.sum(0) + freeze_final_norm(model, parts.residual).offset
    """
    if not isinstance(stack, torch.Tensor):
        raise InvalidInputError(f"stack must be a tensor, got {type(stack).__name__}")
    require_hidden(stack, model.hidden_size, "stack")
    require_finite(stack, "stack")
    values = stack.detach().float().cpu()
    if not frozen:
        if residual is not None:
            raise InvalidInputError(
                "residual= sets the frozen scale; with frozen=False each element's own scale is used."
            )
        return _recomputed(model, values, include_bias)
    reference = values[-1] if residual is None else residual.detach().float().cpu()
    if residual is not None:
        require_finite(reference, "residual")
    if (
        stack.dim() < 2
        or tuple(reference.shape) != tuple(values.shape[-reference.dim() :])
        or reference.dim() >= stack.dim()
    ):
        raise InvalidInputError(
            f"residual has shape {tuple(reference.shape)} but the stack's elements have shape "
            f"{tuple(values.shape[1:])}: pass a residual shaped like one element (batch, [pos,] hidden)."
        )
    hidden = values.shape[-1]
    norm = freeze_final_norm(model, reference.reshape(-1, hidden))
    centred = values - values.mean(-1, keepdim=True) if norm.centered else values
    normed = centred * norm.scale.reshape(reference.shape)
    return normed + norm.offset if include_bias else normed


def _recomputed(
    model: StandardizedTransformer, values: torch.Tensor, include_bias: bool
) -> torch.Tensor:
    norm = _submodule(model, "ln_final")
    if norm is None:
        return values
    parameter = next(norm.parameters(), None)

    def run(x: torch.Tensor) -> torch.Tensor:
        moved = (
            x
            if parameter is None
            else x.to(device=parameter.device, dtype=parameter.dtype)
        )
        return norm(moved).float().cpu()

    normed = run(values)
    return (
        normed
        if include_bias
        else normed - run(values.new_zeros(1, values.shape[-1]))[0]
    )


__all__ = ["accumulated_resid", "apply_ln_to_stack"]
