"""The logit lens: what each layer's residual stream would predict if it were the last one."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Union, overload

import nnsight
import torch

from nnterp.inputs import layer_indices
from nnterp.interventions.positions import absolute_positions, as_position_list, traced_attention_mask
from nnterp.prompt_utils import remote_option
from nnterp.tracing import free_stopped_forward, single_forward_options

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def layer_list(model: StandardizedTransformer, layers: int | Sequence[int] | None) -> list[int]:
    """``layers`` as non-negative indices in the caller's order (``None``: every layer)."""
    return layer_indices(model.num_layers, layers)


@overload
def logit_lens(
    model: StandardizedTransformer,
    prompts: str | list[str],
    layers: int | Sequence[int] | None = ...,
    idx: int | Sequence[int] = ...,
    return_logits: bool = ...,
    *,
    remote: bool | str | None = ...,
    return_inv_logits: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def logit_lens(
    model: StandardizedTransformer,
    prompts: str | list[str],
    layers: int | Sequence[int] | None = ...,
    idx: int | Sequence[int] = ...,
    return_logits: bool = ...,
    *,
    remote: bool | str | None = ...,
    return_inv_logits: Literal[True],
) -> tuple[torch.Tensor, torch.Tensor]: ...


@torch.no_grad()
def logit_lens(
    model: StandardizedTransformer,
    prompts: str | list[str],
    layers: int | Sequence[int] | None = None,
    idx: int | Sequence[int] = -1,
    return_logits: bool = False,
    *,
    remote: bool | str | None = False,
    return_inv_logits: bool = False,
) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
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
        remote: run the trace on NDIF (through nnsight), as in nnterp 1.x.
        return_inv_logits: as in nnterp 1.x, also return the distribution of the negated
            normalized state, ``lm_head(-ln_final(h))`` (then the logit post-processing).

    Returns:
        float32 CPU tensor of shape (batch, layers, vocab) for an int ``idx``, or
        (batch, layers, positions, vocab) for a list of positions; with
        ``return_inv_logits``, a pair (that tensor, the same for the negated state).

    Warns:
        DeprecationWarning: a bool as third or fourth positional argument, read as nnterp 1.x's
            ``remote`` / ``return_inv_logits`` (now keyword arguments after ``layers``, ``idx``).

    Example:
        >>> probs = logit_lens(model, ["The capital of France is", "The sun rises in the"])
        >>> probs.shape                     # (2, model.num_layers, vocab)
        >>> early = logit_lens(model, "Hello world", layers=[0, 1], idx=[0, -1], return_logits=True)
    """
    if isinstance(layers, bool):  # nnterp 1.x's logit_lens(model, prompts, remote, return_inv_logits)
        warnings.warn(
            "logit_lens's third argument is layers since nnterp 2.0: pass 1.x's remote as remote=.",
            DeprecationWarning,
            stacklevel=3,
        )
        remote = bool(layers)
        layers = None
    if isinstance(idx, bool):
        warnings.warn(
            "logit_lens's fourth argument is idx since nnterp 2.0: pass 1.x's return_inv_logits as "
            "return_inv_logits=.",
            DeprecationWarning,
            stacklevel=3,
        )
        return_inv_logits = bool(idx)
        idx = -1
    wanted = layer_list(model, layers)
    positions = as_position_list(idx, "idx")
    needed = sorted(set(wanted))
    gathered: list[torch.Tensor] = []
    with model.trace(prompts, **single_forward_options(model), **remote_option(remote)) as tracer:
        mask = traced_attention_mask(model)
        relative = torch.tensor(positions).expand(mask.shape[0], -1)
        columns = absolute_positions(mask, relative, "idx")
        rows = torch.arange(mask.shape[0])[:, None]
        leaving = getattr(model, model.residual_sites[1])
        for layer in needed:
            hidden = leaving[layer]
            gathered.append(hidden[rows.to(hidden.device), columns.to(hidden.device)])
        states = nnsight.save(torch.stack(gathered, dim=1))
        tracer.stop()
    free_stopped_forward()
    # One unembedding matmul for every layer at once: (batch, layers, positions, hidden).
    order = torch.tensor([needed.index(layer) for layer in wanted], device=states.device)
    chosen = states.index_select(1, order)
    logits = model.project_on_vocab(chosen).float()
    result = _as_output(logits, return_logits, isinstance(idx, int))
    if not return_inv_logits:
        return result
    return result, _as_output(_inverse_logits(model, chosen).float(), return_logits, isinstance(idx, int))


def _as_output(logits: torch.Tensor, return_logits: bool, single_position: bool) -> torch.Tensor:
    result = (logits if return_logits else logits.softmax(dim=-1)).cpu()
    return result[:, :, 0] if single_position else result


def _inverse_logits(model: StandardizedTransformer, hidden: torch.Tensor) -> torch.Tensor:
    """nnterp 1.x's inverse logits: ``lm_head(-ln_final(h))``, through the rest of the
    unembedding chain (projection, logit post-processing) as `project_on_vocab` does."""
    from nnterp.unembedding import postprocess_logits

    state = model.collapse_streams(hidden)
    normed = model.ln_final(state) if model.paths["ln_final"] is not None else state
    negated = -normed
    projection = model.unembedding_projection_module()
    if projection is not None:
        negated = projection(negated)
    return postprocess_logits(model.lm_head(negated), model.spec, model._module.config)
