"""Interventions on a StandardizedTransformer: logit lens, patchscopes, steering.

Example:
    >>> from nnterp.interventions import logit_lens, patchscope_lens, repeat_prompt, steer
    >>> probs = logit_lens(model, ["The capital of France is"])          # (1, layers, vocab)
    >>> decoded = patchscope_lens(model, ["The capital of France is"], repeat_prompt())
"""

from __future__ import annotations

from nnterp.interventions.lens import logit_lens
from nnterp.interventions.patchscope import patchscope_generate, patchscope_lens
from nnterp.interventions.steering import steer
from nnterp.interventions.target_prompts import (
    TargetPrompt,
    TargetPromptBatch,
    repeat_prompt,
    repeat_prompt_chat,
)

__all__ = [
    "TargetPrompt",
    "TargetPromptBatch",
    "logit_lens",
    "patchscope_generate",
    "patchscope_lens",
    "repeat_prompt",
    "repeat_prompt_chat",
    "steer",
]
