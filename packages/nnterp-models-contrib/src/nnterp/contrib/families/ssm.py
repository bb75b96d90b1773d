"""State-space, recurrent and hybrid models: no attention, or attention in only some layers.

``layers``, ``ln_final``, ``lm_head`` and the layer accessors work; what a layer lacks (or
what differs between layers) is ``None`` in the spec, so nnterp raises
``UnavailableComponentError`` on access. Tiny hybrids may get only recurrent layers: they run
without a cache (``use_cache=False``), which these models otherwise size from their
attention layers.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec

#: State-space mixer sizes that agree with the tiny hidden size (expand 2 x 64 = 8 x 16).
MAMBA_TINY = {"use_cache": False, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_expand": 2}

MAMBA = ArchitectureSpec(
    name="mamba",
    model_classes=("MambaForCausalLM", "FalconMambaForCausalLM"),
    layers="backbone.layers",
    self_attn=None,
    mlp=None,
    ln_final="backbone.norm_f",
    embed_tokens="backbone.embeddings",
    attention_probabilities=None,
)

MAMBA2 = MAMBA.with_classes("Mamba2ForCausalLM", name="mamba2", tiny_config={"num_heads": 8, "head_dim": 16})

NEMOTRON_H = MAMBA.with_classes(
    "NemotronHForCausalLM",
    name="nemotron_h",
    layers="model.layers",
    ln_final="model.norm_f",
    embed_tokens="model.embeddings",
)

RWKV = MAMBA.with_classes(
    "RwkvForCausalLM",
    name="rwkv",
    layers="rwkv.blocks",
    mlp="feed_forward",
    ln_final="rwkv.ln_out",
    lm_head="head",
    embed_tokens="rwkv.embeddings",
    tiny_config={"attention_hidden_size": 64},
)

#: Llama-named hybrids whose recurrent layers have no ``self_attn`` (gated delta nets).
LLAMA_HYBRID = MAMBA.with_classes(
    "Qwen3NextForCausalLM",
    "Qwen3_5ForCausalLM",
    "Qwen3_5MoeForCausalLM",
    "OlmoHybridForCausalLM",
    "LaraMiniForCausalLM",
    name="llama_hybrid",
    layers="model.layers",
    mlp="mlp",
    ln_final="model.norm",
    embed_tokens="model.embed_tokens",
    tiny_config={**MAMBA_TINY, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
)

#: Hybrids whose linear and softmax attentions are both ``self_attn``: only the softmax
#: layers have probabilities, so none are exposed.
LINEAR_ATTENTION = LLAMA_HYBRID.with_classes(
    "KimiLinearForCausalLM", "BailingHybridForCausalLM", name="linear_attention", self_attn="self_attn"
)

#: Mamba + attention hybrids with a ``feed_forward`` in every layer.
JAMBA = LLAMA_HYBRID.with_classes(
    "JambaForCausalLM",
    "BambaForCausalLM",
    name="jamba",
    mlp="feed_forward",
    ln_final="model.final_layernorm",
    tiny_config={**MAMBA_TINY, "num_experts": 4, "num_experts_per_tok": 2},
)

#: Zamba: Mamba layers (no MLP) and a shared attention block every few layers.
ZAMBA = JAMBA.with_classes(
    "ZambaForCausalLM",
    "Zamba2ForCausalLM",
    name="zamba",
    mlp=None,
    tiny_config={"use_cache": False, "attention_hidden_size": 128, "head_dim": 32, "mamba_headdim": 16},
)

#: Granite hybrid: a MoE and a shared MLP in parallel (neither alone is the MLP output).
GRANITE_HYBRID = LLAMA_HYBRID.with_classes(
    "GraniteMoeHybridForCausalLM",
    name="granite_hybrid",
    mlp=None,
    logits_postprocess=(("divide", "logits_scaling"),),
    tiny_config={**MAMBA_TINY, "num_local_experts": 4, "num_experts_per_tok": 2},
)

#: LFM2: short convolutions and attention; ``feed_forward``; the final norm is ``embedding_norm``.
LFM2 = LLAMA_HYBRID.with_classes(
    "Lfm2ForCausalLM",
    "Lfm3ForCausalLM",
    name="lfm2",
    mlp="feed_forward",
    ln_final="model.embedding_norm",
    tiny_config={"use_cache": False},
)

LFM2_MOE = LFM2.with_classes(
    "Lfm2MoeForCausalLM",
    name="lfm2_moe",
    tiny_config={
        "use_cache": False,
        "layer_types": ["conv", "full_attention"],
        "num_dense_layers": 1,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
    },
)

#: xLSTM: mLSTM cells and a ``ffn`` per block; soft-capped logits.
XLSTM = MAMBA.with_classes(
    "xLSTMForCausalLM",
    name="xlstm",
    layers="backbone.blocks",
    mlp="ffn",
    ln_final="backbone.out_norm",
    logits_postprocess=(("softcap", "output_logit_soft_cap"),),
    tiny_config={"embedding_dim": 64, "num_blocks": 2, "chunk_size": 4, "use_cache": False},
)

#: Griffin: recurrent or local-attention ``temporal_block``, then ``mlp_block``.
RECURRENT_GEMMA = LLAMA_HYBRID.with_classes(
    "RecurrentGemmaForCausalLM",
    name="recurrent_gemma",
    mlp="mlp_block",
    ln_final="model.final_norm",
    logits_postprocess=(("softcap", "logits_soft_cap"),),
    tiny_config={"use_cache": False},
)

#: Falcon-H1: attention and Mamba in parallel in every layer, so ``self_attn`` is exposed.
FALCON_H1 = JAMBA.with_classes(
    "FalconH1ForCausalLM",
    name="falcon_h1",
    self_attn="self_attn",
    attention_probabilities=("attention_interface", "nn.functional.dropout"),
    tiny_config={**MAMBA_TINY, "mamba_d_ssm": 128},
)

SPECS = (
    MAMBA, MAMBA2, NEMOTRON_H, RWKV, LLAMA_HYBRID, LINEAR_ATTENTION, JAMBA, ZAMBA, GRANITE_HYBRID,
    LFM2, LFM2_MOE, XLSTM, RECURRENT_GEMMA, FALCON_H1,
)
