"""How a model holds its token-indexed tensors, and the standard (batch, seq, ...) view of them.

Almost every causal LM keeps the residual stream as (batch, seq, hidden), one position per
input token. A few do not: XLNet runs sequence-first, (seq, batch, hidden); CPM-Ant prepends
``config.prompt_length`` learned prompt positions inside the model, so its stream is
(batch, prompt_length + seq, hidden). A spec's `StreamLayout` says so, and every site with a
token dimension is read through `to_standard` and written back through `from_standard`: the
sites keep their standard shapes and meanings (``layers_output[i][b, t]`` is input token
``t`` of prompt ``b``), and writes leave the positions the standard view does not show as
the model computed them.

Example:
    >>> layout = StreamLayout(prefix_positions="prompt_length")   # CPM-Ant
    >>> with model.trace("Hello"):
    ...     h = model.layers_output[0].save()    # (1, seq, hidden): the prompt positions dropped
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from nnterp.errors import RenamingError
from nnterp.spec import StreamLayout, config_value

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def prefix_length(layout: StreamLayout, config: Any) -> int:
    """How many positions the model prepends (0 without ``prefix_positions``).

    Raises:
        RenamingError: the config has no value for the spec's ``prefix_positions`` key.

    Example:
        >>> prefix_length(StreamLayout(prefix_positions="prompt_length"), cpmant.config)
        32
    """
    if layout.prefix_positions is None:
        return 0
    value = config_value(config, (layout.prefix_positions,))
    if value is None:
        raise RenamingError(
            f"the model's config sets no {layout.prefix_positions!r}, which the spec's "
            "stream_layout.prefix_positions names: fix the spec's key for this config"
        )
    return int(value)


def _batch_first(layout: StreamLayout, value: torch.Tensor, pattern: bool) -> torch.Tensor:
    return value.transpose(0, 1) if layout.sequence_first and not pattern else value


def view_tensor(layout: StreamLayout, config: Any, value: torch.Tensor, pattern: bool = False) -> torch.Tensor:
    """``value`` as the model holds it, seen in the standard layout.

    Args:
        layout: The spec's layout.
        config: The model's config (for ``prefix_positions``).
        value: A token-indexed tensor in the model's layout.
        pattern: ``value`` is an attention pattern (batch, heads, query, key): the attention
            computes those in its own axis order (nnterp reads them as that), so only
            prepended positions are dropped, from both the query and the key dimension.

    Example:
        >>> view_tensor(StreamLayout(sequence_first=True), config, torch.zeros(5, 2, 8)).shape
        torch.Size([2, 5, 8])
    """
    if layout.is_standard:
        return value
    value = _batch_first(layout, value, pattern)
    prefix = prefix_length(layout, config)
    if prefix:
        value = value[_after_prefix(value, prefix, pattern)]
    return value


def _after_prefix(value: torch.Tensor, prefix: int, pattern: bool) -> tuple[Any, ...]:
    """The index of ``value``'s positions after the first ``prefix``.

    The model prepends the positions to the forward that fills its cache; a cached generation
    step runs only its new tokens, so its stream has no prefix, while its keys (read from the
    cache) still do. So a stream holds the prefix when it is longer than the prefix (a cached
    step of more new tokens than ``prefix`` at once would be misread: CPM-Ant's is 32), keys
    always, and queries when they are as many as the keys (the forward that prepends them)."""
    index: list[Any] = [slice(None)] * value.dim()
    if pattern:
        index[3] = slice(prefix, None)
        if value.shape[2] == value.shape[3]:
            index[2] = slice(prefix, None)
    elif value.shape[1] > prefix:
        index[1] = slice(prefix, None)
    return tuple(index)


def unview_tensor(
    layout: StreamLayout, config: Any, current: torch.Tensor, value: torch.Tensor, pattern: bool = False
) -> torch.Tensor:
    """``current`` (in the model's layout) with its standard view replaced by ``value``;
    positions the view does not show (prepended prompt positions) keep ``current``'s values.

    Example:
        >>> unview_tensor(StreamLayout(sequence_first=True), config, h_model, h_standard).shape
        torch.Size([5, 2, 8])
    """
    if layout.is_standard:
        return value
    prefix = prefix_length(layout, config)
    if prefix:
        full = _batch_first(layout, current, pattern).clone()
        full[_after_prefix(full, prefix, pattern)] = value.to(full.dtype)
        value = full
    if layout.sequence_first and not pattern:
        # A sequence-first model may .view() what it receives: hand it contiguous memory.
        return value.transpose(0, 1).contiguous()
    return value


def to_standard(model: StandardizedTransformer, value: Any, pattern: bool = False) -> Any:
    """`view_tensor` with ``model``'s spec and config (non-tensors pass through)."""
    layout = model.spec.stream_layout
    if layout.is_standard or not isinstance(value, torch.Tensor):
        return value
    return view_tensor(layout, model._module.config, value, pattern)


def from_standard(model: StandardizedTransformer, current: Any, value: Any, pattern: bool = False) -> Any:
    """`unview_tensor` with ``model``'s spec and config."""
    layout = model.spec.stream_layout
    if layout.is_standard or not isinstance(current, torch.Tensor):
        return value
    return unview_tensor(layout, model._module.config, current, value, pattern)


__all__ = [
    "StreamLayout",
    "from_standard",
    "prefix_length",
    "to_standard",
    "unview_tensor",
    "view_tensor",
]
