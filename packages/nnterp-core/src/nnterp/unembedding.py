"""The unembedding chain's last steps: what a model does to ``lm_head``'s output before it
returns logits (the spec's ``logits_postprocess``: a soft-cap, a scale, a divisor).

One place for it, so `StandardizedTransformer.project_on_vocab`, the logit lens, load-time
validation and direct logit attribution apply the same chain.

Example:
    >>> logits = postprocess_logits(model.lm_head(normed), model.spec, model._module.config)
    >>> factor, rest = linear_logit_scale(model.spec, model._module.config)   # Cohere: (logit_scale, [])
"""

from __future__ import annotations

from typing import Any

import torch

from nnterp.spec import ArchitectureSpec, config_value


def apply_logit_steps(logits: torch.Tensor, steps: list[tuple[str, str]] | tuple[tuple[str, str], ...], config: Any) -> torch.Tensor:
    """``logits`` after ``(operation, config_key)`` steps: ``"softcap"`` (``tanh(x / c) * c``),
    ``"multiply"``, ``"divide"``; a step whose config value is unset is skipped."""
    for operation, key in steps:
        value = config_value(config, (key,))
        if value is None:
            continue
        if operation == "softcap":
            logits = torch.tanh(logits / value) * value
        elif operation == "multiply":
            logits = logits * value
        else:
            logits = logits / value
    return logits


def postprocess_logits(logits: torch.Tensor, spec: ArchitectureSpec, config: Any) -> torch.Tensor:
    """``lm_head`` output after the spec's ``logits_postprocess`` steps, as the model's own
    forward applies them: (..., vocab)."""
    return apply_logit_steps(logits, spec.logits_postprocess, config)


def linear_logit_scale(spec: ArchitectureSpec, config: Any) -> tuple[float, list[tuple[str, str]]]:
    """The product of the linear post-processing steps before any soft-cap, and the steps from
    the first soft-cap on: logits are ``rest(factor * lm_head(x))``."""
    factor = 1.0
    steps = list(spec.logits_postprocess)
    while steps and steps[0][0] != "softcap":
        operation, key = steps.pop(0)
        value = config_value(config, (key,))
        if value is not None:
            factor = factor * value if operation == "multiply" else factor / value
    return factor, steps


__all__ = ["apply_logit_steps", "linear_logit_scale", "postprocess_logits"]
