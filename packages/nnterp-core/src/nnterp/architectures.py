"""Core's own architecture plugin: GPT-2 and the Llama family.

Every other architecture comes from ``nnterp-models-contrib`` or a third-party plugin, through
the same hook.
"""

from __future__ import annotations

from typing import Callable

from nnterp.hookspecs import hookimpl
from nnterp.spec import ArchitectureSpec, Contribution

#: Llama-style naming: ``model.layers[i].self_attn / .mlp``, ``model.norm``, ``lm_head``.
LLAMA = ArchitectureSpec(name="llama", model_classes=("LlamaForCausalLM",))

MISTRAL = LLAMA.with_classes("MistralForCausalLM", name="mistral")
QWEN2 = LLAMA.with_classes("Qwen2ForCausalLM", name="qwen2")
QWEN3 = LLAMA.with_classes("Qwen3ForCausalLM", name="qwen3")
GEMMA = LLAMA.with_classes("GemmaForCausalLM", name="gemma")
#: Gemma-2/3 "sandwich" blocks: each sublayer's output is normalised again before it is added,
#: so the contributions are the post-sublayer norms' outputs.
GEMMA2 = LLAMA.with_classes(
    "Gemma2ForCausalLM",
    name="gemma2",
    logits_postprocess=(("softcap", "final_logit_softcapping"),),
    attention_contribution=Contribution(output="post_attention_layernorm"),
    mlp_contribution=Contribution(output="post_feedforward_layernorm"),
)
GEMMA3 = GEMMA2.with_classes("Gemma3ForCausalLM", name="gemma3")

GPT2 = ArchitectureSpec(
    name="gpt2",
    model_classes=("GPT2LMHeadModel",),
    layers="transformer.h",
    self_attn="attn",
    mlp="mlp",
    ln_final="transformer.ln_f",
    embed_tokens="transformer.wte",
    q_proj=None,
    k_proj=None,
    v_proj=None,
    qkv_proj="c_attn",
    qkv_layout="blocks",
    o_proj="c_proj",
    rotary_embedding=None,
)

CORE_SPECS = (GPT2, LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA, GEMMA2, GEMMA3)


@hookimpl
def register_architectures(register: Callable[[ArchitectureSpec], None]) -> None:
    """Register GPT-2 and the Llama family."""
    for spec in CORE_SPECS:
        register(spec)
