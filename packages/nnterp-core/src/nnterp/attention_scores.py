"""Attention scores before the softmax, as a site: ``model.attention_scores[i]``.

The scores are the input of the softmax call whose output becomes ``attention_probabilities``
(eager attention), shaped (batch, heads, query, key): ``q . k * scale`` plus whatever the model
adds before the softmax, exactly as the softmax receives it. That includes the attention mask
as the model adds it (masked keys, future positions and left padding, hold a large negative
number, e.g. ``torch.finfo(dtype).min``, or the masked fill the model uses), ALiBi or other
position biases, and soft-capping (Gemma-2). Its dtype is what the softmax receives (MPT
passes float32 scores). Assigning replaces the softmax's input for the rest of the forward.

The softmax is found by name, never by nnsight's numbered labels: by default in the same
forward as the last operation of the spec's ``attention_probabilities`` chain (the dropout
after the softmax in the transformers-5 eager attention, or the softmax itself), or along the
spec's own ``attention_scores`` chain.

Example:
    >>> model = StandardizedTransformer(hf_model, tokenizer, enable_attention_probs=True)
    >>> with model.trace("The cat sat"):
    ...     scores = model.attention_scores[1].save()          # (1, heads, seq, seq)
    ...     probs = model.attention_probabilities[1].save()
    >>> torch.allclose(scores.float().softmax(-1), probs.float())
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nnterp.accessors import GradientSource, _outside_trace_checked, _PerLayerView, normalize_layer
from nnterp.errors import UnavailableComponentError
from nnterp.stream_layout import from_standard, to_standard

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Softmax calls as attention forwards write them, tried in order.
SOFTMAX_CALLS = (
    "nn.functional.softmax",
    "torch.nn.functional.softmax",
    "F.softmax",
    "functional.softmax",
    "torch.softmax",
)


def _find_softmax(source: Any, layer: int, where: str) -> Any:
    from nnterp.attention import find_call

    for name in SOFTMAX_CALLS:
        try:
            return find_call(source, name)
        except LookupError:
            continue
    raise UnavailableComponentError(
        f"attention scores of layer {layer}: no softmax call ({', '.join(SOFTMAX_CALLS)}) in {where}; "
        "set the spec's attention_scores chain to the call whose input the scores are."
    )


def locate_scores(
    attention_envoy: Any, chain: Any, derived: bool, layer: int
) -> Any:
    """The operation whose input is layer ``layer``'s attention scores (inside a trace).

    ``chain``: the spec's ``attention_scores`` chain ending at the softmax (``derived=False``),
    or its ``attention_probabilities`` chain (``derived=True``), whose last operation sits in
    the same forward as the softmax (or is the softmax); several chains are tried in order.
    """
    from nnterp.attention import first_located

    return first_located(chain, lambda one: _located_scores(attention_envoy, one, derived, layer))


def _located_scores(attention_envoy: Any, chain: tuple[str, ...], derived: bool, layer: int) -> Any:
    from nnterp.attention import find_call, find_step, submodule_envoy, walk_chain

    if not chain:
        raise UnavailableComponentError(f"attention scores of layer {layer}: the spec's chain is empty")
    what, last = "attention scores", chain[-1]
    owner, source = walk_chain(attention_envoy, chain[:-1], what, layer, chain)
    view = source if source is not None else owner.source
    if not derived and submodule_envoy(owner, last) is None:
        return find_step(view, last, what, layer, chain)
    # The softmax sits in the forward that calls the chain's last step (or is that step).
    if last in SOFTMAX_CALLS:
        return find_call(view, last)
    return _find_softmax(view, layer, f"the forward calling {last}")


def scores_unavailable(model: StandardizedTransformer) -> str | None:
    """A model-wide reason ``attention_scores`` is unavailable, or ``None``."""
    spec = model.spec
    if spec.attention_scores is None:
        return "the spec names no softmax whose input is the scores (attention_scores=None)"
    chain = spec.attention_scores or spec.attention_probabilities
    if chain is None:
        return "this attention computes no explicit probabilities, so no softmax input is readable"
    if callable(chain):
        return (
            "the attention probabilities are located by an nnterp 1.x function, which names no softmax "
            "call: give attention_probabilities as call names to read the scores"
        )
    if spec.attention_sinks:
        return (
            "learned attention sinks: the softmax's input has an extra sink column per head, so it is "
            "not (batch, heads, query, key) scores over the real keys"
        )
    if not model.attention_probabilities_enabled:
        return (
            "attention scores need eager attention: load with "
            "StandardizedTransformer(..., enable_attention_probs=True)"
        )
    return None


class AttentionScoresAccessor(_PerLayerView):
    """``model.attention_scores[i]``: pre-softmax scores (batch, heads, query, key). Assignable.

    Example:
        >>> with model.trace("Hello world"):
        ...     scores = model.attention_scores[0]
        ...     scores[:, :, :, 0] = torch.finfo(scores.dtype).min    # no query attends to token 0
        ...     model.attention_scores[0] = scores
    """

    description = "attention scores"

    def __init__(self, model: StandardizedTransformer) -> None:
        self._model = model

    def unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no readable scores, or ``None``."""
        declared = self._model.spec.unavailable_sites.get("attention_scores")
        structure = self._model.layer_structure
        return (
            declared
            or structure.probabilities_unavailable(layer)
            or scores_unavailable(self._model)
        )

    def _operation(self, layer: int) -> Any:
        from nnterp.attention import attention_to_read

        model = self._model
        layer = normalize_layer(model, layer)
        why = self.unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(
                f"attention_scores[{layer}] of {model.spec.name}: {why}."
            )
        attention = attention_to_read(model, layer, "attention_scores")
        spec = model.spec
        if spec.attention_scores:
            return locate_scores(attention, spec.attention_scores, False, layer)
        return locate_scores(attention, spec.attention_probabilities or (), True, layer)

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        from nnterp.attention import split_merged_heads

        return to_standard(self._model, split_merged_heads(self._operation(layer).input, self._model), pattern=True)

    def gradient_source(self, layer: int) -> GradientSource:
        """Inside a trace: the scores as the softmax receives them and the function turning
        their gradient into the site's (batch, heads, query, key)."""
        from nnterp.attention import split_merged_heads

        model = self._model
        raw = self._operation(layer).input
        return raw, lambda gradient: to_standard(model, split_merged_heads(gradient, model), pattern=True)

    @_outside_trace_checked
    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        from nnterp.attention import merge_like, split_merged_heads

        operation = self._operation(layer)
        current = operation.input
        if not self._model.spec.stream_layout.is_standard:
            value = from_standard(self._model, split_merged_heads(current, self._model), value, pattern=True)
        operation.input = merge_like(value, current, self._model)


__all__ = [
    "SOFTMAX_CALLS",
    "AttentionScoresAccessor",
    "locate_scores",
    "scores_unavailable",
]
