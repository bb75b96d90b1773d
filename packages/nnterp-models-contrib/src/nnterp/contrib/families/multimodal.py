"""Multimodal models used as text-only causal LMs: the text decoder is ``model.language_model``."""

from __future__ import annotations

from nnterp.architectures import GEMMA3
from nnterp.contrib.families.llama_like import LLAMA_LIKE

LANGUAGE_MODEL = LLAMA_LIKE.with_classes(
    "GotOcr2ForConditionalGeneration",
    "MossTranscribeDiarizeForConditionalGeneration",
    name="language_model",
    layers="model.language_model.layers",
    ln_final="model.language_model.norm",
    embed_tokens="model.language_model.embed_tokens",
)

GEMMA3_MULTIMODAL = LANGUAGE_MODEL.with_classes(
    "Gemma3ForConditionalGeneration",
    name="gemma3_multimodal",
    vision_layers="model.vision_tower.encoder.layers",
    logits_postprocess=GEMMA3.logits_postprocess,
    attention_contribution=GEMMA3.attention_contribution,
    mlp_contribution=GEMMA3.mlp_contribution,
)

#: Fuyu's language model is Persimmon (final norm ``final_layernorm``).
FUYU = LANGUAGE_MODEL.with_classes(
    "FuyuForCausalLM", name="fuyu", ln_final="model.language_model.final_layernorm", o_proj="dense"
)

SPECS = (LANGUAGE_MODEL, GEMMA3_MULTIMODAL, FUYU)
