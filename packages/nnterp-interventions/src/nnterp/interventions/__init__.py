"""Interventions on a StandardizedTransformer: lenses, patchscopes, steering, patching, attribution.

Example:
    >>> from nnterp.interventions import logit_lens, patchscope_lens, repeat_prompt, steer
    >>> probs = logit_lens(model, ["The capital of France is"])          # (1, layers, vocab)
    >>> decoded = patchscope_lens(model, ["The capital of France is"], repeat_prompt())
    >>> grid = activation_patching(model, clean, corrupted, metric)     # (layers, positions)
"""

from __future__ import annotations

from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.decomposition import (
    LogitAttribution,
    ResidualDecomposition,
    decompose_residual,
    logit_attribution,
)
from nnterp.interventions.gradients import GradientResult, compute_gradients
from nnterp.interventions.lens import logit_lens
from nnterp.interventions.metrics import evaluate_metric, logit_difference, token_logit
from nnterp.interventions.patching import activation_patching, head_patching, run_with_patches
from nnterp.interventions.patchscope import patch_object_attn_lens, patchscope_generate, patchscope_lens
from nnterp.interventions.steering import steer
from nnterp.interventions.target_prompts import (
    TargetPrompt,
    TargetPromptBatch,
    it_repeat_prompt,
    repeat_prompt,
    repeat_prompt_chat,
)

__all__ = [
    "GradientResult",
    "LogitAttribution",
    "ResidualDecomposition",
    "TargetPrompt",
    "TargetPromptBatch",
    "activation_patching",
    "attribution_patching",
    "compute_gradients",
    "decompose_residual",
    "evaluate_metric",
    "head_patching",
    "it_repeat_prompt",
    "logit_attribution",
    "logit_difference",
    "logit_lens",
    "patch_object_attn_lens",
    "patchscope_generate",
    "patchscope_lens",
    "repeat_prompt",
    "repeat_prompt_chat",
    "run_with_patches",
    "steer",
    "token_logit",
]
