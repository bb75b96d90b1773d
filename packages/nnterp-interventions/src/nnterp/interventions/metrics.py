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
from nnterp.errors import InvalidInputError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: ``metric(logits)``: (batch, seq, vocab) logits -> a scalar tensor.
Metric = Callable[[torch.Tensor], torch.Tensor]

#: One token id for every prompt, or one per prompt.
TokenIds = int | Sequence[int] | torch.Tensor


def _per_row(tokens: TokenIds, batch: int, name: str) -> torch.Tensor:
    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if ids.numel() == 1:
        return ids.expand(batch)
    if ids.numel() != batch:
        raise InvalidInputError(
            f"{name} has {ids.numel()} token ids for a batch of {batch} prompts: give one id, or one per prompt."
        )
    return ids


def token_logit(tokens: TokenIds, position: int = -1) -> Metric:
    """The mean over the batch of the logit of ``tokens`` at ``position``.

    Args:
        tokens: one token id, or one per prompt.
        position: the sequence position (``-1``: each prompt's last token, with left padding).

    Example:
        >>> metric = token_logit(model.tokenizer(" Paris")["input_ids"][-1])
    """

    def metric(logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        ids = _per_row(tokens, logits.shape[0], "tokens").to(logits.device)
        return logits[rows, position, ids].mean()

    return metric


def logit_difference(correct: TokenIds, incorrect: TokenIds, position: int = -1) -> Metric:
    """The mean over the batch of ``logit[correct] - logit[incorrect]`` at ``position``.

    The classic metric of activation patching: high when the model prefers the clean
    answer. Token ids may differ per prompt.

    Args:
        correct: the clean answer's token id, or one per prompt.
        incorrect: the corrupted answer's token id, or one per prompt.
        position: the sequence position (``-1``: each prompt's last token, with left padding).

    Example:
        >>> metric = logit_difference([paris_id, rome_id], [london_id, madrid_id])
        >>> with model.trace(["The capital of France is", "The capital of Italy is"]):
        ...     value = metric(model.logits).save()
    """

    def metric(logits: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        good = _per_row(correct, logits.shape[0], "correct").to(logits.device)
        bad = _per_row(incorrect, logits.shape[0], "incorrect").to(logits.device)
        return (logits[rows, position, good] - logits[rows, position, bad]).mean()

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
def evaluate_metric(model: StandardizedTransformer, prompts: Any, metric: Metric) -> torch.Tensor:
    """``metric`` of the model's logits on ``prompts``: a 0-dim float32 CPU tensor.

    Example:
        >>> clean = evaluate_metric(model, clean_prompts, metric)
        >>> corrupted = evaluate_metric(model, corrupted_prompts, metric)
    """
    with model.trace(prompts):
        value = nnsight.save(require_scalar(metric(model.logits), "evaluate_metric"))
    return value.detach().float().cpu()
