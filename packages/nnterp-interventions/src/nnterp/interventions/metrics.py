"""Scalar metrics of a model's logits, for gradients, patching and attribution.

A metric is any callable ``metric(logits) -> scalar tensor`` taking the (batch, seq, vocab)
logits of a run; it must stay differentiable (plain torch operations) for gradients.

Example:
    >>> paris, london = model.tokenizer(" Paris")["input_ids"][-1], model.tokenizer(" London")["input_ids"][-1]
    >>> metric = logit_difference(paris, london)           # mean over the batch, last position
    >>> baseline = evaluate_metric(model, "The capital of France is", metric)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import nnsight
import torch
from nnterp import positions as nnterp_positions
from nnterp.errors import InvalidInputError
from nnterp.inputs import token_ids
from nnterp.positions import absolute_positions, as_position_list
from nnterp.tracing import remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: ``metric(logits)``: (batch, seq, vocab) logits -> a scalar tensor.
Metric = Callable[[torch.Tensor], torch.Tensor]

#: One token id for every prompt, or one per prompt.
TokenIds = int | Sequence[int] | torch.Tensor


def _per_row(tokens: TokenIds, batch: int, vocab_size: int, name: str) -> torch.Tensor:
    ids = token_ids(tokens, vocab_size, name)
    if ids.numel() == 1:
        return ids.expand(batch)
    if ids.numel() != batch:
        raise InvalidInputError(
            f"{name} has {ids.numel()} token ids for a batch of {batch} prompts: give one id, or one per prompt."
        )
    return ids


def _position(position: int) -> int:
    positions = as_position_list(position, "position")
    if len(positions) != 1:
        raise InvalidInputError(f"position must be one token position (an int, -1 for the last), got {position!r}")
    return positions[0]


def _columns(logits: torch.Tensor, position: int, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Per row, the column of ``position`` counted within the row's real tokens."""
    if logits.dim() != 3:
        raise InvalidInputError(
            f"the metric needs (batch, seq, vocab) logits, got shape {tuple(logits.shape)}."
        )
    batch, seq = logits.shape[0], logits.shape[1]
    # Through the module: remote traces ship this function by value, not its thread-local.
    needs_mask = "position" if position >= 0 else None
    mask = attention_mask if attention_mask is not None else nnterp_positions.running_attention_mask(batch, needs_mask)
    if mask is None:
        mask = torch.ones(batch, seq, dtype=torch.long)
    if tuple(mask.shape) != (batch, seq):
        raise InvalidInputError(
            f"attention_mask has shape {tuple(mask.shape)} but the logits are {batch} rows of "
            f"{seq} positions: pass the mask of the batch these logits come from."
        )
    relative = torch.full((batch, 1), position)
    return absolute_positions(mask, relative, "position")[:, 0].to(logits.device)


def token_logit(tokens: TokenIds, position: int = -1) -> Metric:
    """The mean over the batch of the logit of ``tokens`` at ``position``.

    Args:
        tokens: one token id, or one per prompt.
        position: the token, counted within each prompt as everywhere in nnterp
            (`nnterp.positions`): ``-1`` is each prompt's last token, ``0`` its first real
            token, whatever the left padding.

    Returns:
        ``metric(logits, attention_mask=None)``: inside an nnterp trace the batch's mask is
        found by itself; on logits kept from a padded batch, pass its ``attention_mask``
        (without one every column counts as a token).

    Raises (when the metric runs):
        TokenIdError: a token id outside the logits' vocabulary.
        TokenPositionError: ``position`` outside a prompt's tokens.

    Example:
        >>> metric = token_logit(model.tokenizer(" Paris")["input_ids"][-1])
        >>> with model.trace(["The capital of France is", "Paris is in"]):
        ...     value = metric(model.logits).save()          # a 0-dim tensor
    """
    as_position_list(position, "position")
    token_ids(tokens, None, "tokens")

    def metric(logits: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        ids = _per_row(tokens, logits.shape[0], logits.shape[-1], "tokens").to(logits.device)
        columns = _columns(logits, _position(position), attention_mask)
        return logits[rows, columns, ids].mean()

    return metric


def logit_difference(correct: TokenIds, incorrect: TokenIds, position: int = -1) -> Metric:
    """The mean over the batch of ``logit[correct] - logit[incorrect]`` at ``position``.

    The classic metric of activation patching: high when the model prefers the clean
    answer. Token ids may differ per prompt.

    Args:
        correct: the clean answer's token id, or one per prompt.
        incorrect: the corrupted answer's token id, or one per prompt.
        position: the token, counted within each prompt (``-1``: its last token, ``0``: its
            first real token, whatever the left padding), as in `token_logit`.

    Returns:
        ``metric(logits, attention_mask=None)``, as `token_logit`'s.

    Raises (when the metric runs):
        TokenIdError: a token id outside the logits' vocabulary.
        TokenPositionError: ``position`` outside a prompt's tokens.

    Example:
        >>> metric = logit_difference([paris_id, rome_id], [london_id, madrid_id])
        >>> with model.trace(["The capital of France is", "The capital of Italy is"]):
        ...     value = metric(model.logits).save()
    """
    as_position_list(position, "position")
    token_ids(correct, None, "correct")
    token_ids(incorrect, None, "incorrect")

    def metric(logits: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        good = _per_row(correct, logits.shape[0], logits.shape[-1], "correct").to(logits.device)
        bad = _per_row(incorrect, logits.shape[0], logits.shape[-1], "incorrect").to(logits.device)
        columns = _columns(logits, _position(position), attention_mask)
        return (logits[rows, columns, good] - logits[rows, columns, bad]).mean()

    return metric


def require_scalar(value: Any, where: str) -> torch.Tensor:
    """``value`` if it is a one-element tensor, else an `InvalidInputError` naming ``where``."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InvalidInputError(
            f"{where}: the metric must return a scalar tensor, got {shape}; reduce it, e.g. with .mean()."
        )
    return value.reshape(())


@torch.no_grad()
@remote_aware
def evaluate_metric(
    model: StandardizedTransformer, prompts: Any, metric: Metric, remote: bool | str | None = None
) -> torch.Tensor:
    """``metric`` of the model's logits on ``prompts``: a 0-dim float32 CPU tensor.

    ``remote``: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``); default:
    the model's own setting.

    Example:
        >>> clean = evaluate_metric(model, clean_prompts, metric)
        >>> corrupted = evaluate_metric(model, corrupted_prompts, metric)
    """
    with model.trace(prompts):
        value = nnsight.save(require_scalar(metric(model.logits), "evaluate_metric"))
    return value.detach().float().cpu()
