"""The logit lens: what each layer's residual stream would predict if it were the last one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import nnsight
import torch

from nnterp.inputs import layer_indices
from nnterp.interventions.positions import absolute_positions, as_position_list, traced_attention_mask
from nnterp.tracing import free_stopped_forward, single_forward_options

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def layer_list(model: StandardizedTransformer, layers: int | Sequence[int] | None) -> list[int]:
    """``layers`` as non-negative indices in the caller's order (``None``: every layer)."""
    return layer_indices(model.num_layers, layers)


@torch.no_grad()
def logit_lens(
    model: StandardizedTransformer,
    prompts: str | list[str],
    layers: int | Sequence[int] | None = None,
    idx: int | Sequence[int] = -1,
    return_logits: bool = False,
) -> torch.Tensor:
    """Next-token distribution of every layer's output, through ``ln_final`` and ``lm_head``.

    Each layer's residual stream at the chosen position(s) is unembedded with
    ``model.project_on_vocab`` (so the last layer gives exactly the model's own logits). The
    forward stops after the last layer needed; the chosen rows of every layer are then
    projected together, in one matmul with the unembedding.

    Args:
        model: a `StandardizedTransformer`.
        prompts: one prompt or a list (batched with left padding).
        layers: a layer index or several, in the order wanted (default: all layers).
        idx: the position to read, or a list of positions: ``-1`` (default) is each prompt's
            last token, ``0`` its first real token, whatever padding the batch adds.
        return_logits: return logits instead of probabilities.

    Returns:
        float32 CPU tensor of shape (batch, layers, vocab) for an int ``idx``, or
        (batch, layers, positions, vocab) for a list of positions.

    Example:
        >>> probs = logit_lens(model, ["The capital of France is", "The sun rises in the"])
        >>> probs.shape                     # (2, model.num_layers, vocab)
        >>> early = logit_lens(model, "Hello world", layers=[0, 1], idx=[0, -1], return_logits=True)
    """
    wanted = layer_list(model, layers)
    positions = as_position_list(idx, "idx")
    needed = sorted(set(wanted))
    gathered: list[torch.Tensor] = []
    with model.trace(prompts, **single_forward_options(model)) as tracer:
        mask = traced_attention_mask(model)
        relative = torch.tensor(positions).expand(mask.shape[0], -1)
        columns = absolute_positions(mask, relative, "idx")
        rows = torch.arange(mask.shape[0])[:, None]
        for layer in needed:
            hidden = model.layers_output[layer]
            gathered.append(hidden[rows.to(hidden.device), columns.to(hidden.device)])
        states = nnsight.save(torch.stack(gathered, dim=1))
        tracer.stop()
    free_stopped_forward()
    # One unembedding matmul for every layer at once: (batch, layers, positions, hidden).
    order = torch.tensor([needed.index(layer) for layer in wanted], device=states.device)
    logits = model.project_on_vocab(states.index_select(1, order)).float()
    result = (logits if return_logits else logits.softmax(dim=-1)).cpu()
    return result[:, :, 0] if isinstance(idx, int) else result
