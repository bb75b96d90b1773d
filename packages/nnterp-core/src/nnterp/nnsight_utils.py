"""Functional helpers over a `StandardizedTransformer`, and fast activation collection.

The getters mirror the accessors (``get_layer_output(model, i)`` is ``model.layers_output[i]``)
for code written in the functional style of nnterp 1.x; they are used inside a trace.

Example:
    >>> from nnterp.nnsight_utils import get_token_activations, collect_token_activations_batched
    >>> acts = get_token_activations(model, ["The capital of France is", "Hi"], idx=-1)
    >>> acts.shape                                  # (num_layers, batch, hidden)
    >>> many = collect_token_activations_batched(model, prompts, batch_size=16, layers=[3, 9])
"""

from __future__ import annotations


from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from nnterp.accessors import normalize_layer
from nnterp.errors import InvalidInputError
from nnterp.inputs import layer_indices, prompt_list
from nnterp.positions import absolute_positions, as_position_list
from nnterp.tracing import free_stopped_forward, single_forward_options

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def get_num_layers(model: StandardizedTransformer) -> int:
    """Number of decoder layers."""
    return model.num_layers


def get_layer(model: StandardizedTransformer, layer: int) -> Any:
    """The envoy of decoder layer ``layer``."""
    return model.layers[normalize_layer(model, layer)]


def get_layer_input(model: StandardizedTransformer, layer: int) -> torch.Tensor:
    """Hidden state entering ``layer``: (batch, seq, hidden). Inside a trace."""
    return model.layers_input[layer]


def get_layer_output(model: StandardizedTransformer, layer: int) -> torch.Tensor:
    """Hidden state leaving ``layer``: (batch, seq, hidden). Inside a trace."""
    return model.layers_output[layer]


def get_attention_output(model: StandardizedTransformer, layer: int) -> torch.Tensor:
    """Output of ``layer``'s attention module: (batch, seq, hidden). Inside a trace."""
    return model.attentions_output[layer]


def get_mlp_output(model: StandardizedTransformer, layer: int) -> torch.Tensor:
    """Output of ``layer``'s MLP module: (batch, seq, hidden). Inside a trace."""
    return model.mlps_output[layer]


def get_logits(model: StandardizedTransformer) -> torch.Tensor:
    """The model's logits: (batch, seq, vocab). Inside a trace."""
    return model.logits


def get_next_token_probs(model: StandardizedTransformer) -> torch.Tensor:
    """Next-token probabilities at the last position: (batch, vocab). Inside a trace."""
    return model.next_token_probs


def project_on_vocab(model: StandardizedTransformer, hidden_states: torch.Tensor) -> torch.Tensor:
    """Logits of a residual-stream state through ``ln_final`` and ``lm_head``: (..., vocab)."""
    return model.project_on_vocab(hidden_states)


def _token_columns(attention_mask: torch.Tensor, idx: int) -> torch.Tensor:
    """Per row, the column of token ``idx`` counted over the row's real tokens (left padding)."""
    positions = as_position_list(idx, "idx")
    if len(positions) != 1:
        raise InvalidInputError(f"idx must be one token position (an int, -1 for the last), got {idx!r}")
    relative = torch.full((attention_mask.shape[0], 1), positions[0])
    return absolute_positions(attention_mask, relative, "idx")[:, 0]


def encode(model: StandardizedTransformer, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenize ``prompts`` as one left-padded batch: ``input_ids`` and ``attention_mask`` (batch, seq)."""
    for prompt in prompts:
        if not prompt:
            raise InvalidInputError("a prompt is an empty string: give every prompt some text.")
    encoding = model.tokenizer(list(prompts), return_tensors="pt", padding=True)
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}


def _collect_batch(
    model: StandardizedTransformer,
    encoding: dict[str, torch.Tensor],
    layers: list[int],
    idx: int,
    stop_early: bool,
) -> torch.Tensor:
    positions = _token_columns(encoding["attention_mask"], idx)
    rows = torch.arange(positions.shape[0])
    last = max(layers)
    import nnsight  # lazily, as the trace itself does: importing this module must not load nnsight

    saved: dict[int, Any] = {}
    with torch.no_grad(), model.trace(dict(encoding), **single_forward_options(model)) as tracer:
        for layer in sorted(set(layers)):
            hidden = model.layers_output[layer]
            saved[layer] = nnsight.save(hidden[rows.to(hidden.device), positions.to(hidden.device)])
            if stop_early and layer == last:
                tracer.stop()
    if stop_early:
        free_stopped_forward()
    return torch.stack([saved[layer] for layer in layers])


def get_token_activations(
    model: StandardizedTransformer,
    prompts: str | Sequence[str],
    idx: int = -1,
    layers: int | Sequence[int] | None = None,
) -> torch.Tensor:
    """Residual-stream activations at one token of each prompt, for every requested layer.

    Runs one forward that stops after the last requested layer (no unembedding).

    Args:
        model: the `StandardizedTransformer`.
        prompts: a prompt or a list of prompts (one batch).
        idx: the token, counted over each prompt's own tokens (``-1``: last; ``0``: first).
        layers: layer indices (default all), negative allowed.

    Returns:
        (num_layers, batch, hidden) tensor, in the order of ``layers``.

    Example:
        >>> acts = get_token_activations(model, ["The capital of France is"], idx=-1, layers=[0, 5])
        >>> acts.shape
        torch.Size([2, 1, 576])
    """
    texts = prompt_list(prompts)
    chosen = layer_indices(model.num_layers, layers)
    return _collect_batch(model, encode(model, texts), chosen, idx, stop_early=True)


def collect_token_activations_batched(
    model: StandardizedTransformer,
    prompts: Sequence[str],
    batch_size: int = 32,
    layers: int | Sequence[int] | None = None,
    idx: int = -1,
    tqdm: bool = True,
    sort_by_length: bool = True,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`get_token_activations` over many prompts, batch by batch, holding only the requested rows.

    Prompts are grouped by token length (less padding), longest first, each forward stops
    after the last requested layer, nothing is unembedded, and results come back in the caller's order.

    Args:
        prompts: the prompts.
        batch_size: prompts per forward.
        layers, idx: as in `get_token_activations`.
        tqdm: show a progress bar.
        sort_by_length: group prompts of similar length (set False to batch in the given order).
        device, dtype: where and how results are kept (default CPU, the model's dtype).

    Returns:
        (num_layers, num_prompts, hidden) tensor.

    Example:
        >>> acts = collect_token_activations_batched(model, prompts, batch_size=16, layers=[3, 9, 11])
    """
    texts = prompt_list(prompts)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive int, got {batch_size!r}")
    chosen = layer_indices(model.num_layers, layers)
    order = list(range(len(texts)))
    if sort_by_length:
        lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
        # Longest first: the first batch allocates the largest buffers and later, smaller
        # batches reuse them, so the allocator's footprint stops growing (and an input too
        # large for memory fails at once, not at the end).
        order.sort(key=lambda i: -lengths[i])
    result: torch.Tensor | None = None
    batches = range(0, len(texts), batch_size)
    for start in _progress(batches, tqdm, "collecting activations"):
        indices = order[start : start + batch_size]
        activations = _collect_batch(model, encode(model, [texts[i] for i in indices]), chosen, idx, True)
        activations = activations.to(device=device if device is not None else activations.device)
        if dtype is not None:
            activations = activations.to(dtype)
        if result is None:
            result = activations.new_empty((len(chosen), len(texts), activations.shape[-1]))
        result[:, torch.tensor(indices)] = activations
    assert result is not None
    return result


def _progress(iterable: Any, enabled: bool, description: str) -> Any:
    return tqdm(iterable, desc=description, disable=not enabled)
