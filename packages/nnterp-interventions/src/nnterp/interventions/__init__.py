"""Interventions on a StandardizedTransformer: lenses, patchscopes, steering, patching, attribution.

Example:
    >>> from nnterp.interventions import logit_lens, patchscope_lens, repeat_prompt, steer
    >>> probs = logit_lens(model, ["The capital of France is"])          # (1, layers, vocab)
    >>> decoded = patchscope_lens(model, ["The capital of France is"], repeat_prompt())
    >>> grid = activation_patching(model, clean, corrupted, metric)     # (layers, positions)
    >>> blocks = every_block_patching(model, clean, corrupted, metric)  # residual/attention/MLP grids
    >>> effect = path_patching(model, clean, corrupted, metric, sender=(0, 3), receivers="queries.2.1")
    >>> stack = accumulated_resid(model, "The capital of France is", positions=-1)
"""

from __future__ import annotations

from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.decomposition import (
    FrozenNorm,
    LogitAttribution,
    ResidualDecomposition,
    decompose_residual,
    freeze_final_norm,
    logit_attribution,
)
from nnterp.interventions.generation import GenerationResult, generate_with, steer_generate
from nnterp.interventions.gradients import GradientResult, compute_gradients
from nnterp.interventions.sae_analysis import (
    FeatureAttribution,
    cache_features,
    feature_attribution_patching,
    feature_logit_attribution,
    feature_patching,
)
from nnterp.interventions.saes import (
    SparseAutoencoder,
    ablate_features,
    load_sae,
    sae_features,
    sae_site,
    save_sae,
    splice_sae,
    steer_features,
)
from nnterp.interventions.lens import logit_lens
from nnterp.interventions.metrics import evaluate_metric, logit_difference, token_logit
from nnterp.interventions.patching import (
    activation_patching,
    attention_pattern_patching,
    head_patching,
    run_with_patches,
)
from nnterp.interventions.patchscope import (
    patch_object_attn_lens,
    patchscope_generate,
    patchscope_lens,
)
from nnterp.interventions.path_patching import Node, path_patching, path_patching_heads
from nnterp.interventions.stacks import accumulated_resid, apply_ln_to_stack
from nnterp.interventions.steering import steer
from nnterp.interventions.sweeps import BlockPatching, every_block_patching
from nnterp.interventions.target_prompts import (
    TargetPrompt,
    TargetPromptBatch,
    it_repeat_prompt,
    repeat_prompt,
    repeat_prompt_chat,
)

__all__ = [
    "BlockPatching",
    "FeatureAttribution",
    "FrozenNorm",
    "GenerationResult",
    "GradientResult",
    "LogitAttribution",
    "Node",
    "ResidualDecomposition",
    "SparseAutoencoder",
    "TargetPrompt",
    "TargetPromptBatch",
    "accumulated_resid",
    "ablate_features",
    "activation_patching",
    "apply_ln_to_stack",
    "attention_pattern_patching",
    "attribution_patching",
    "cache_features",
    "compute_gradients",
    "decompose_residual",
    "evaluate_metric",
    "feature_attribution_patching",
    "feature_logit_attribution",
    "feature_patching",
    "every_block_patching",
    "freeze_final_norm",
    "generate_with",
    "head_patching",
    "it_repeat_prompt",
    "logit_attribution",
    "logit_difference",
    "load_sae",
    "logit_lens",
    "patch_object_attn_lens",
    "patchscope_generate",
    "patchscope_lens",
    "path_patching",
    "path_patching_heads",
    "repeat_prompt",
    "repeat_prompt_chat",
    "run_with_patches",
    "sae_features",
    "sae_site",
    "save_sae",
    "splice_sae",
    "steer",
    "steer_features",
    "steer_generate",
    "token_logit",
]
