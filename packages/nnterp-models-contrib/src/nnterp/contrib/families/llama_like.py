"""Llama-style naming: ``model.layers[i].self_attn / .mlp``, ``model.norm``, ``lm_head``.

Most transformers 5 decoders are written from Llama's template, so they share the paths and
the attention-interface pattern: one base spec covers them, and each variant changes only
what differs (the MLP's name, the final norm's name, logit post-processing, tiny-config
fixes). Core itself registers Llama, Mistral, Qwen2/3 and Gemma 1-3 with the same paths.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, Contribution, Mixer

#: Small expert counts and sizes for tiny mixture-of-experts models (names vary by family;
#: a key a config does not use is ignored by it).
MOE_TINY = {
    "num_experts": 4,
    "num_local_experts": 4,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
    "n_group": 1,
    "topk_group": 1,
}

#: Sliding-window layers with their own head counts (Inkling), kept equal to the tiny model's.
SWA_TINY = {"swa_num_attention_heads": 4, "swa_num_key_value_heads": 2, "swa_head_dim": 16}

#: Multi-head latent attention (DeepSeek-V2 style): low-rank query/key-value projections and
#: a rotary part of each head; keys are per head, so no grouped key-value heads.
MLA_TINY = {
    **MOE_TINY,
    "num_key_value_heads": 4,
    "q_lora_rank": 32,
    "kv_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "qk_head_dim": 16,
    "v_head_dim": 16,
    "head_dim": 8,
    "first_k_dense_replace": 1,
    "index_head_dim": 16,
    "index_n_heads": 2,
    "index_topk": 4,
}

#: Dense decoders with Llama's naming.
LLAMA_LIKE = ArchitectureSpec(
    name="llama_like",
    model_classes=(
        "ApertusForCausalLM",
        "Apertus1p5TextForCausalLM",
        "ArceeForCausalLM",
        "BitNetForCausalLM",
        "CwmForCausalLM",
        "DiffLlamaForCausalLM",
        "DogeForCausalLM",
        "Emu3ForCausalLM",
        "Ernie4_5ForCausalLM",
        "GlmForCausalLM",
        "HeliumForCausalLM",
        "HunYuanDenseV1ForCausalLM",
        "Jais2ForCausalLM",
        "MellumForCausalLM",
        "MinistralForCausalLM",
        "Ministral3ForCausalLM",
        "MoshiForCausalLM",
        "NemotronForCausalLM",
        "OlmoForCausalLM",
        "Phi3ForCausalLM",
        "Phi4MultimodalForCausalLM",
        "SeedOssForCausalLM",
        "SmolLM3ForCausalLM",
        "Starcoder2ForCausalLM",
    ),
)

#: StableLM: with ``use_parallel_residual`` the attention and the MLP both read the block's input.
STABLELM = LLAMA_LIKE.with_classes(
    "StableLmForCausalLM", name="stablelm", parallel_blocks=(("use_parallel_residual", True),)
)

#: Mixture-of-experts decoders with Llama's naming (``mlp`` is the MoE block).
LLAMA_MOE = LLAMA_LIKE.with_classes(
    "AriaTextForCausalLM",
    "Dots1ForCausalLM",
    "Ernie4_5_MoeForCausalLM",
    "ExaoneMoeForCausalLM",
    "Glm4MoeForCausalLM",
    "HunYuanMoEV1ForCausalLM",
    "HYV3ForCausalLM",
    "MiniMaxM2ForCausalLM",
    "MiniMaxM3VLForCausalLM",
    "MixtralForCausalLM",
    "OlmoeForCausalLM",
    "PhimoeForCausalLM",
    "Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM",
    "SolarOpenForCausalLM",
    "ZayaForCausalLM",
    name="llama_moe",
    tiny_config=MOE_TINY,
)

#: "Sandwich" blocks: each sublayer's output is normalised again before the residual add, so
#: its contribution is the post-sublayer norm's output. OLMo-2/3, EXAONE-4 and FlexOlmo name the
#: norms like Gemma-2 and have no pre-sublayer norms.
SANDWICH = LLAMA_LIKE.with_classes(
    "Olmo2ForCausalLM",
    "Olmo3ForCausalLM",
    "Exaone4ForCausalLM",
    name="sandwich",
    attention_contribution=Contribution(output="post_attention_layernorm"),
    mlp_contribution=Contribution(output="post_feedforward_layernorm"),
    # No pre-norms: the sublayers read the stream itself (post_attention_layernorm is a post-norm).
    attention_norm=None,
    mlp_norm=None,
)
SANDWICH_MOE = SANDWICH.with_classes("FlexOlmoForCausalLM", name="sandwich_moe", tiny_config=MOE_TINY)

#: GLM-4 and Kolibri: ``post_self_attn_layernorm`` and ``post_mlp_layernorm`` after the sublayers
#: (``post_attention_layernorm`` is the MLP's pre-norm there).
GLM4 = LLAMA_LIKE.with_classes(
    "Glm4ForCausalLM",
    name="glm4",
    attention_contribution=Contribution(output="post_self_attn_layernorm"),
    mlp_contribution=Contribution(output="post_mlp_layernorm"),
)
GLM4_MOE_SANDWICH = GLM4.with_classes("Kolibri1ForCausalLM", name="kolibri", tiny_config=MOE_TINY)

#: AFMoE: ``post_attention_layernorm`` and ``post_mlp_layernorm`` after the sublayers.
AFMOE = LLAMA_MOE.with_classes(
    "AfmoeForCausalLM",
    name="afmoe",
    attention_contribution=Contribution(output="post_attention_layernorm"),
    mlp_contribution=Contribution(output="post_mlp_layernorm"),
)

#: HyperCLOVA X: sandwich norms (``post_norm1``/``post_norm2``), and each branch scaled by the
#: layer's ``residual_multiplier`` before the add.
HYPERCLOVAX = LLAMA_LIKE.with_classes(
    "HyperCLOVAXForCausalLM",
    name="hyperclovax",
    attention_contribution=Contribution(output="post_norm1", scale="residual_multiplier"),
    mlp_contribution=Contribution(output="post_norm2", scale="residual_multiplier"),
    tiny_config={"residual_multiplier": 0.5},
)

#: MiniMax: the residual is the *normalised* input scaled by ``attn_alpha_factor`` and the
#: attention output is normalised with it, so nothing is added to an unchanged stream.
MINIMAX = LLAMA_MOE.with_classes(
    "MiniMaxForCausalLM",
    name="minimax",
    # Lightning (linear) and softmax attention layers are both ``self_attn``.
    mixers=(
        Mixer("self_attn", "attention", module_class="MiniMaxAttention"),
        Mixer("self_attn", "lightning_attention"),
    ),
    non_additive=(
        "MiniMax blocks rescale a normalised residual (residual * alpha + sublayer * beta, then a norm), "
        "so no sublayer output is added to an unchanged residual stream"
    ),
)

#: Learned attention sinks: the probabilities over the real keys sum to less than 1.
SINKS_MOE = LLAMA_MOE.with_classes("GptOssForCausalLM", "FlintForCausalLM", name="sinks_moe", attention_sinks=True)

#: Per-layer head counts, stored separately from ``num_attention_heads``: kept equal in the
#: tiny model so that every layer has the configured heads.
PER_LAYER_HEADS_MOE = LLAMA_MOE.with_classes(
    "LagunaForCausalLM",
    name="per_layer_heads_moe",
    tiny_config={**MOE_TINY, "num_attention_heads_per_layer": [4, 4]},
)

#: Inkling: sliding-window layers with their own heads; the final hidden state is divided
#: by a muP width multiplier before the head.
INKLING = LLAMA_MOE.with_classes(
    "InklingForCausalLM",
    name="inkling",
    logits_postprocess=(("divide", "logits_mup_width_multiplier"),),
    tiny_config={**MOE_TINY, **SWA_TINY},
    # A short convolution follows each sublayer; its output is what the block adds.
    attention_contribution=Contribution(output="attn_sconv"),
    mlp_contribution=Contribution(output="mlp_sconv"),
)

#: Multi-head latent attention decoders (DeepSeek-V2/V3 and their descendants).
MLA = LLAMA_LIKE.with_classes(
    "AXK1ForCausalLM",
    "AXK2ForCausalLM",
    "DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM",
    "Glm4MoeLiteForCausalLM",
    "YoutuForCausalLM",
    name="mla",
    tiny_config=MLA_TINY,
)

#: Mllama's text model: Llama blocks, and at config.cross_attention_layers tanh-gated
#: cross-attention blocks that attend to the vision tower's states; text-only inputs (no
#: cross_attention_states) skip those blocks.
MLLAMA = LLAMA_LIKE.with_classes(
    "MllamaForCausalLM",
    name="mllama",
    conditional_layers={"MllamaCrossAttentionDecoderLayer": "cross_attention_states"},
)

#: DeepSeek sparse attention (DeepSeek-V3.2, GLM-MoE-DSA). Each layer's indexer scores every
#: key with a ReLU per indexer head, sums the heads with learned weights and keeps the top
#: ``index_topk`` keys. Keys whose ReLU is 0 on every head tie at exactly 0, and ``torch.topk``
#: breaks ties by position, which left padding shifts: with the 2 indexer heads of MLA_TINY the
#: plain HF model itself keeps different keys for a prompt in a padded batch than alone
#: (measured: 2 of 5 seeds). 16 indexer heads make such exact ties vanishingly rare, as in the
#: real models (32, 64); ``index_topk`` stays below the prompt lengths so the sparse selection
#: is exercised.
DSA = MLA.with_classes(
    "DeepseekV32ForCausalLM",
    "GlmMoeDsaForCausalLM",
    name="dsa",
    tiny_config={**MLA_TINY, "index_n_heads": 16},
)

#: MiMo-V2-Flash: sliding-window layers have learned attention sinks (a per-head logit
#: concatenated to the scores, dropped after the softmax) and twice the key/value heads of the
#: full-attention layers; query/key heads are ``head_dim`` wide, value heads ``v_head_dim``.
MIMO_V2_FLASH = LLAMA_MOE.with_classes(
    "MiMoV2FlashForCausalLM",
    name="mimo_v2_flash",
    attention_sinks=True,
    qk_head_dim_keys=("head_dim",),
    # v_head_dim kept different from head_dim (16), as in the real model (192 and 128).
    tiny_config={**MOE_TINY, "v_head_dim": 8},
)

#: MiniCPM3 divides the final hidden state by ``logits_scaling`` before the head.
#: Each branch is scaled by the layer's ``residual_scale`` (scale_depth / sqrt(layers)) before the add.
MINICPM3 = MLA.with_classes(
    "MiniCPM3ForCausalLM",
    name="minicpm3",
    logits_postprocess=(("divide", "logits_scaling"),),
    attention_contribution=Contribution(scale="residual_scale"),
    mlp_contribution=Contribution(scale="residual_scale"),
)

#: Final logits multiplied by ``config.logit_scale`` (Cohere).
COHERE = LLAMA_LIKE.with_classes(
    "CohereForCausalLM",
    "Cohere2ForCausalLM",
    name="cohere",
    logits_postprocess=(("multiply", "logit_scale"),),
    # Attention and MLP both read input_layernorm's output of the block's input.
    parallel_blocks=True,
)
COHERE_MOE = COHERE.with_classes("Cohere2MoeForCausalLM", name="cohere_moe", tiny_config=MOE_TINY)

#: Granite: final logits divided by ``config.logits_scaling``, each branch scaled by the layer's
#: ``residual_multiplier`` before the residual add (set off 1 in the tiny model so it shows).
_GRANITE_BRANCH = Contribution(scale="residual_multiplier")
_GRANITE_TINY = {"residual_multiplier": 0.5}
GRANITE = LLAMA_LIKE.with_classes(
    "GraniteForCausalLM",
    name="granite",
    logits_postprocess=(("divide", "logits_scaling"),),
    attention_contribution=_GRANITE_BRANCH,
    mlp_contribution=_GRANITE_BRANCH,
    tiny_config=_GRANITE_TINY,
)

#: Granite with sliding windows: the eager attention calls ``F.dropout``.
GRANITE_SWA = GRANITE.with_classes(
    "GraniteSWAForCausalLM", name="granite_swa", attention_probabilities=("attention_interface", "F.dropout")
)

#: Granite MoE: the MoE block is ``block_sparse_moe``.
GRANITE_MOE = GRANITE.with_classes(
    "GraniteMoeForCausalLM",
    "GraniteMoeSharedForCausalLM",
    name="granite_moe",
    mlp="block_sparse_moe",
    tiny_config={**MOE_TINY, **_GRANITE_TINY},
)

GRANITE_MOE_SWA = GRANITE_MOE.with_classes(
    "GraniteMoeSWAForCausalLM", name="granite_moe_swa", attention_probabilities=GRANITE_SWA.attention_probabilities
)

#: Gemma-style final-logit soft-capping.
SOFTCAPPED = LLAMA_LIKE.with_classes(
    "VaultGemmaForCausalLM",
    name="softcapped",
    logits_postprocess=(("softcap", "final_logit_softcapping"),),
)

#: NanoChat also applies its final norm to the embeddings, before the layers.
NANOCHAT = SOFTCAPPED.with_classes(
    "NanoChatForCausalLM",
    name="nanochat",
    unavailable_sites={
        "ln_final_scale": (
            "the final norm (model.norm) is also applied to the embeddings before the layers, and its "
            "input is read at its first call"
        ),
    },
)

#: Beam: soft-capped logits; depth-scaled residual adds shrink the stream at every add.
BEAM = SOFTCAPPED.with_classes(
    "BeamForCausalLM",
    name="beam",
    non_additive=(
        "Beam's depth-scaled residual add multiplies the residual stream by sqrt((k-1)/k) at the k-th "
        "add, so the block's update is not a sum of sublayer contributions to an unchanged stream"
    ),
)

#: Inkling 2: soft-capped logits over an unpadded head, learned (input-dependent) attention
#: sinks. Its final hidden state mixes the residual streams of earlier blocks, so a lens of the
#: last layer output is not the model's logits.
INKLING2 = SOFTCAPPED.with_classes(
    "Inkling2ForCausalLM",
    "Inkling2LoopForCausalLM",
    name="inkling2",
    attention_sinks=True,
    tiny_config={**MOE_TINY, "unpadded_vocab_size": 512, **SWA_TINY},
    non_additive=(
        "Inkling 2 blocks read a learned attention over earlier blocks' states instead of one residual "
        "stream, and restart the residual at block boundaries: no sum of sublayer outputs gives the stream"
    ),
)

#: The MLP (or MoE) block is named ``feed_forward``.
#: Llama-4's mixture-of-experts layers return their tokens flattened, (batch * seq, hidden).
FEED_FORWARD = LLAMA_LIKE.with_classes(
    "Llama4ForCausalLM",
    name="feed_forward",
    mlp="feed_forward",
    tiny_config=MOE_TINY,
    mlp_contribution=Contribution(tokens_flattened=True),
)

#: The final norm is ``model.final_layernorm``.
FINAL_LAYERNORM = LLAMA_LIKE.with_classes(
    "PhiForCausalLM",
    "PersimmonForCausalLM",
    name="final_layernorm",
    ln_final="model.final_layernorm",
    o_proj="dense",
)

#: Phi-1/2: the attention and the MLP both read input_layernorm's output.
PHI = FINAL_LAYERNORM.with_classes("PhiForCausalLM", name="phi", parallel_blocks=True)
PERSIMMON = FINAL_LAYERNORM.with_classes("PersimmonForCausalLM", name="persimmon")

#: JetMoE: the (mixture-of-heads) attention is ``self_attention``.
JETMOE = LLAMA_LIKE.with_classes("JetMoeForCausalLM", name="jetmoe", self_attn="self_attention", tiny_config=MOE_TINY)

SPECS = (
    LLAMA_LIKE, LLAMA_MOE, SANDWICH, SANDWICH_MOE, GLM4, GLM4_MOE_SANDWICH, AFMOE, HYPERCLOVAX, MINIMAX, BEAM, SINKS_MOE, PER_LAYER_HEADS_MOE, INKLING, MLA, DSA, MIMO_V2_FLASH, MLLAMA, MINICPM3, COHERE, COHERE_MOE, GRANITE, GRANITE_SWA,
    GRANITE_MOE, GRANITE_MOE_SWA, SOFTCAPPED, NANOCHAT, INKLING2, FEED_FORWARD, PHI, PERSIMMON, JETMOE,
    STABLELM,
)
