"""State-space, recurrent and hybrid models: no attention, or attention in only some layers.

``layers``, ``ln_final``, ``lm_head`` and the layer accessors work. Each layer's token mixer
(Mamba, gated DeltaNet, short convolution, RG-LRU, mLSTM, softmax attention) is found per
layer from ``mixers``, so ``mixers_output`` is what that layer's mixer adds to the residual
stream and ``attentions_output`` exists on the softmax-attention layers only. What a layer
lacks is ``None`` in the spec, so nnterp raises ``UnavailableComponentError`` on access.

Tiny hybrids get one layer of each kind; they run without a cache (``use_cache=False``),
which some of these models otherwise size from their attention layers.
"""

from __future__ import annotations

from nnterp.spec import DEFAULT_ATTENTION_PROBABILITIES, ArchitectureSpec, Contribution, Mixer

#: State-space mixer sizes that agree with the tiny hidden size (expand 2 x 64 = 8 x 16).
MAMBA_TINY = {"use_cache": False, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 16, "mamba_expand": 2}

#: A recurrent layer, then a softmax-attention one (the ``layer_types`` convention).
HYBRID_LAYERS = ["linear_attention", "full_attention"]

MAMBA = ArchitectureSpec(
    name="mamba",
    model_classes=("MambaForCausalLM", "FalconMambaForCausalLM"),
    layers="backbone.layers",
    self_attn=None,
    mlp=None,
    ln_final="backbone.norm_f",
    embed_tokens="backbone.embeddings",
    attention_probabilities=None,
    mixers=(Mixer("mixer", "mamba"),),
)

MAMBA2 = MAMBA.with_classes("Mamba2ForCausalLM", name="mamba2", tiny_config={"num_heads": 8, "head_dim": 16})

#: Nemotron-H: every layer is one ``mixer`` after a norm, and its class says what it is:
#: Mamba-2, softmax attention, an MLP or a mixture of experts. A spec names one MLP path for
#: all layers, so the MLP and MoE layers are listed as mixers of kind ``"mlp"``/``"moe"``:
#: their update is ``mixers_output`` there, and ``mlps_output`` is unavailable.
NEMOTRON_H = MAMBA.with_classes(
    "NemotronHForCausalLM",
    name="nemotron_h",
    layers="model.layers",
    self_attn="mixer",
    ln_final="model.norm_f",
    embed_tokens="model.embeddings",
    attention_probabilities=DEFAULT_ATTENTION_PROBABILITIES,
    rotary_embedding=None,
    mixers=(
        Mixer("mixer", "attention", module_class="Attention"),
        Mixer("mixer", "mamba", module_class="Mamba"),
        Mixer("mixer", "moe", module_class="MoE", is_mlp=True),
        Mixer("mixer", "mlp", module_class="MLP", is_mlp=True),
    ),
)

#: RWKV: time mixing (``attention``) and channel mixing (``feed_forward``), each added to the
#: stream, except that block 0 first normalises its input (``pre_ln``). Its recurrent state
#: ignores the attention mask, so batches are padded on the right.
RWKV = MAMBA.with_classes(
    "RwkvForCausalLM",
    name="rwkv",
    layers="rwkv.blocks",
    mlp="feed_forward",
    ln_final="rwkv.ln_out",
    lm_head="head",
    embed_tokens="rwkv.embeddings",
    mixers=(Mixer("attention", "rwkv_time_mix"),),
    non_additive=(
        "RWKV block 0 normalises its input (pre_ln) before its residual branches, so "
        "layers_input[0] is not the stream they add to; later blocks add attention (time mixing) "
        "and feed_forward (channel mixing) to an unchanged stream"
    ),
    padding_side="right",
    tiny_config={"attention_hidden_size": 64},
)

_SOFTMAX = Mixer("self_attn", "attention")

#: Llama-named hybrids: softmax ``self_attn`` layers and gated-DeltaNet ``linear_attn`` layers.
LLAMA_HYBRID = MAMBA.with_classes(
    "LaraMiniForCausalLM",
    name="llama_hybrid",
    layers="model.layers",
    self_attn="self_attn",
    mlp="mlp",
    ln_final="model.norm",
    embed_tokens="model.embed_tokens",
    attention_probabilities=DEFAULT_ATTENTION_PROBABILITIES,
    mixers=(_SOFTMAX, Mixer("linear_attn", "gated_deltanet")),
    tiny_config={
        **MAMBA_TINY,
        "layer_types": HYBRID_LAYERS,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
    },
)

#: Qwen3-Next and Qwen3.5: ``q_proj`` computes each head's query and its output gate side by
#: side (``[q_h | gate_h]``), which the per-head sites cannot split, so they read none of the
#: projections (``queries_rotated``, ``keys_rotated`` and ``heads_output`` still work).
QWEN3_NEXT = LLAMA_HYBRID.with_classes(
    "Qwen3NextForCausalLM",
    "Qwen3_5ForCausalLM",
    "Qwen3_5MoeForCausalLM",
    name="qwen3_next",
    q_proj=None,
    k_proj=None,
    v_proj=None,
)

#: OLMo hybrid: its attention layers are OLMo-2 blocks (a norm after each sublayer, before the
#: add); its DeltaNet layers are pre-norm, and their ``post_attention_layernorm`` is the MLP's
#: pre-norm. The MLP's contribution is read at ``post_feedforward_layernorm`` on attention
#: layers and at ``mlp`` on DeltaNet layers; a spec has one MLP contribution site for all layers.
OLMO_HYBRID = LLAMA_HYBRID.with_classes(
    "OlmoHybridForCausalLM",
    name="olmo_hybrid",
    # Attention layers normalise both sublayer outputs again before the add; DeltaNet layers do not.
    mixers=(
        Mixer(
            "self_attn",
            "attention",
            Contribution(output="post_attention_layernorm"),
            mlp=Contribution(output="post_feedforward_layernorm"),
        ),
        Mixer("linear_attn", "gated_deltanet"),
    ),
    # post_attention_layernorm is a post-norm on attention layers and the MLP's pre-norm on
    # DeltaNet layers: one spec path cannot say both.
    mlp_norm=(),
)

#: Hybrids whose linear and softmax attentions are both ``self_attn``; the class tells them apart.
LINEAR_ATTENTION = LLAMA_HYBRID.with_classes(
    "KimiLinearForCausalLM",
    "BailingHybridForCausalLM",
    name="linear_attention",
    mixers=(
        Mixer("self_attn", "linear_attention", module_class="DeltaAttention"),
        _SOFTMAX,
    ),
    # Multi-head latent attention: no separate key/value projections, rotary on part of each head.
    q_proj=None,
    k_proj=None,
    v_proj=None,
    rotary_embedding=None,
    tiny_config={
        **LLAMA_HYBRID.tiny_config,
        "num_key_value_heads": 4,
        "kv_lora_rank": 32,
        "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 16,
        "v_head_dim": 16,
    },
)

#: Mamba + attention hybrids with a ``feed_forward`` in every layer; Jamba's attention has no
#: position embedding.
JAMBA = LLAMA_HYBRID.with_classes(
    "JambaForCausalLM",
    name="jamba",
    mlp="feed_forward",
    ln_final="model.final_layernorm",
    rotary_embedding=None,
    mixers=(_SOFTMAX, Mixer("mamba", "mamba")),
    tiny_config={
        **MAMBA_TINY,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
    },
)

BAMBA = JAMBA.with_classes(
    "BambaForCausalLM",
    name="bamba",
    rotary_embedding="apply_rotary_pos_emb",
    tiny_config={**MAMBA_TINY, "attn_layer_indices": [1]},
)

#: Zamba: Mamba layers, and hybrid layers where a shared attention block (with its own MLP)
#: reads the stream and the embeddings, and its projected output is added to the *input of
#: the Mamba mixer*, not to the stream. A layer's whole update is its Mamba mixer's output, so
#: that is ``mixers_output``; the attention block adds nothing to the stream itself. Its
#: softmax attention runs before the mixer (``side_attention``): attention_probabilities and
#: attention_scores read it on the hybrid layers.
ZAMBA = JAMBA.with_classes(
    "ZambaForCausalLM",
    "Zamba2ForCausalLM",
    name="zamba",
    self_attn=None,
    mlp=None,
    mixers=(Mixer("mamba", "mamba"), Mixer("mamba_decoder.mamba", "mamba")),
    side_attention=("shared_transf.self_attn", "shared_transformer.self_attn"),
    side_attention_reason=(
        "the shared block's output (attention, its MLP, then linear) is added to the Mamba mixer's "
        "input, not to the stream, so it is no additive contribution (mixers_output[i] is the whole update)"
    ),
    tiny_config={
        "use_cache": False,
        "attention_hidden_size": 128,
        "head_dim": 32,
        "mamba_headdim": 16,
        "layers_block_type": ["mamba", "hybrid"],
        "hybrid_layer_ids": [1],
    },
)

_GRANITE_BRANCH = Contribution(scale="residual_multiplier")

#: Granite hybrid: branches scaled by ``residual_multiplier``; with experts, the MLP update is
#: a MoE (``block_sparse_moe``) and a ``shared_mlp`` run in parallel and summed.
GRANITE_HYBRID = LLAMA_HYBRID.with_classes(
    "GraniteMoeHybridForCausalLM",
    name="granite_hybrid",
    mlp="shared_mlp",
    # Granite 4 hybrids use no position embedding (position_embedding_type "nope").
    rotary_embedding=None,
    mixers=(
        Mixer("self_attn", "attention", _GRANITE_BRANCH),
        Mixer("mamba", "mamba", _GRANITE_BRANCH),
    ),
    mlp_contribution=Contribution(
        scale="residual_multiplier",
        unavailable=(
            "Granite-hybrid's MLP update is block_sparse_moe(x) + shared_mlp(x) (with experts), a sum of "
            "two modules that no single contribution site holds"
        ),
    ),
    logits_postprocess=(("divide", "logits_scaling"),),
    tiny_config={
        **MAMBA_TINY,
        "layer_types": HYBRID_LAYERS,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "residual_multiplier": 0.5,
    },
)

#: LFM2: short convolutions (``conv``) and attention; ``feed_forward``; the final norm is ``embedding_norm``.
LFM2 = LLAMA_HYBRID.with_classes(
    "Lfm2ForCausalLM",
    name="lfm2",
    mlp="feed_forward",
    ln_final="model.embedding_norm",
    o_proj="out_proj",
    mixers=(_SOFTMAX, Mixer("conv", "short_conv")),
    tiny_config={"use_cache": False, "layer_types": ["conv", "full_attention"]},
)

#: LFM3: LFM2 with a norm after each sublayer, before the add (an ``Identity`` without
#: ``use_sandwich_norm``), so contributions are read there.
_POST_OPERATOR = Contribution(output="post_operator_norm")
LFM3 = LFM2.with_classes(
    "Lfm3ForCausalLM",
    name="lfm3",
    o_proj="o_proj",
    mixers=(Mixer("self_attn", "attention", _POST_OPERATOR), Mixer("conv", "short_conv", _POST_OPERATOR)),
    mlp_contribution=Contribution(output="post_ffn_norm"),
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

#: xLSTM: an mLSTM cell (``mlstm_layer``) and a ``ffn`` per block; soft-capped logits. Its
#: recurrent state ignores the attention mask, so batches are padded on the right.
XLSTM = MAMBA.with_classes(
    "xLSTMForCausalLM",
    name="xlstm",
    layers="backbone.blocks",
    mlp="ffn",
    ln_final="backbone.out_norm",
    mixers=(Mixer("mlstm_layer", "mlstm"),),
    logits_postprocess=(("softcap", "output_logit_soft_cap"),),
    padding_side="right",
    tiny_config={"embedding_dim": 64, "num_blocks": 2, "chunk_size": 4, "use_cache": False},
)

#: Griffin: a ``temporal_block`` that is an RG-LRU recurrence or local attention, then ``mlp_block``.
RECURRENT_GEMMA = LLAMA_HYBRID.with_classes(
    "RecurrentGemmaForCausalLM",
    name="recurrent_gemma",
    self_attn="temporal_block",
    mlp="mlp_block",
    ln_final="model.final_norm",
    mixers=(
        Mixer("temporal_block", "attention", module_class="Attention"),
        Mixer("temporal_block", "rg_lru"),
    ),
    logits_postprocess=(("softcap", "logits_soft_cap"),),
    tiny_config={"use_cache": False, "block_types": ["recurrent", "attention"]},
)

#: Falcon-H1: attention and Mamba in parallel in every layer, each output scaled
#: (``attn_out_multiplier``, ``ssm_out_multiplier``) and summed before the add.
FALCON_H1 = BAMBA.with_classes(
    "FalconH1ForCausalLM",
    name="falcon_h1",
    mixers=(
        Mixer(
            "self_attn",
            "attention",
            Contribution(
                scale="attn_out_multiplier",
                unavailable=(
                    "Falcon-H1 layers add attention * attn_out_multiplier + mamba * ssm_out_multiplier: "
                    "two parallel mixers, and a layer has one mixer contribution site"
                ),
            ),
        ),
    ),
    logits_postprocess=(("multiply", "lm_head_multiplier"),),
    tiny_config={**MAMBA_TINY, "mamba_d_ssm": 128, "lm_head_multiplier": 0.5},
)

SPECS = (
    MAMBA, MAMBA2, NEMOTRON_H, RWKV, LLAMA_HYBRID, QWEN3_NEXT, OLMO_HYBRID, LINEAR_ATTENTION, JAMBA, BAMBA, ZAMBA,
    GRANITE_HYBRID, LFM2, LFM3, LFM2_MOE, XLSTM, RECURRENT_GEMMA, FALCON_H1,
)
