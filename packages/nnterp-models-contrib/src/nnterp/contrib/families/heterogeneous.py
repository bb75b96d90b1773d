"""Families whose configs vary per layer (transformers' heterogeneous configs, per-layer lists).

Gemma 4 (text, multimodal, unified) keeps the Gemma-3 sandwich naming, but its full-attention
layers have their own ``head_dim`` (``per_layer_config``), and every block multiplies the whole
residual stream by a learned ``layer_scalar`` after its adds (and, on E2B/E4B, adds a third
per-layer-embedding branch after the MLP). dots3_note's sliding layers have their own head
counts and ranks. DBRX and Cohere Compass are here because their default configs do not build
(an attention sub-config without ``rope_theta``, RoPE parameters missing for the layer type).
The tiny configs of heterogeneous families are built by the config class itself
(`nnterp.testing.tiny`), so the per-layer overrides follow the tiny layer count.
``NOT_STANDARDIZED`` says why the Gemma-4 assistants and Gemma 3n have no spec.
"""

from __future__ import annotations

from nnterp.architectures import GEMMA3
from nnterp.contrib.families.llama_like import COHERE, MLA, MLA_TINY
from nnterp.spec import ArchitectureSpec

#: Why a Gemma-4 block is not a sum of sublayer contributions to one unchanged stream.
GEMMA4_NON_ADDITIVE = (
    "Gemma 4 blocks multiply the whole residual stream (input plus the attention, MLP and "
    "per-layer-embedding branches) by a learned per-layer scalar (layer_scalar) after the adds, and "
    "E2B/E4B add a third per-layer-input branch after the MLP: the layer's update is not a sum of "
    "sublayer contributions to an unchanged stream"
)

#: Small per-layer-embedding tables; full-attention layers twice as wide per head as sliding ones,
#: so the tiny model is heterogeneous like the real ones (256 vs 512).
GEMMA4_TEXT_TINY = {
    "vocab_size_per_layer_input": 512,
    "hidden_size_per_layer_input": 8,
    "global_head_dim": 32,
}

#: Why Gemma 4's per-head keys and values are unavailable.
GEMMA4_KV_UNAVAILABLE = {
    site: (
        "Gemma 4's full-attention layers may have their own key/value head count "
        "(num_global_key_value_heads) and reuse their keys as values (attention_k_eq_v: no v_proj), "
        "as the 26B/31B checkpoints do; nnterp's per-head layout (nnterp.heads.attention_layout) has "
        "one key/value head count for the whole model, so it would split those layers' keys wrongly"
    )
    for site in ("keys", "values")
}

GEMMA4_TEXT = GEMMA3.with_classes(
    "Gemma4ForCausalLM",
    name="gemma4_text",
    non_additive=GEMMA4_NON_ADDITIVE,
    tiny_config=GEMMA4_TEXT_TINY,
    # Its attention rotates queries and keys in two calls of one tensor each
    # (apply_rotary_pos_emb(x, cos, sin)), not one call returning (queries, keys).
    rotary_embedding=None,
    unavailable_sites=GEMMA4_KV_UNAVAILABLE,
)

_TEXT = "model.language_model"

#: Gemma 4 with its vision (and audio) towers, used as a text causal LM.
GEMMA4_MULTIMODAL = GEMMA4_TEXT.with_classes(
    "Gemma4ForConditionalGeneration",
    name="gemma4_multimodal",
    layers=f"{_TEXT}.layers",
    ln_final=f"{_TEXT}.norm",
    embed_tokens=f"{_TEXT}.embed_tokens",
    vision_layers="model.vision_tower.encoder.layers",
    tiny_config={f"text_config.{key}": value for key, value in GEMMA4_TEXT_TINY.items()},
)

#: Gemma 4 "unified": the same blocks (layer_scalar included) without per-layer embeddings.
GEMMA4_UNIFIED_TEXT = GEMMA4_TEXT.with_classes(
    "Gemma4UnifiedForCausalLM",
    name="gemma4_unified_text",
    tiny_config={"global_head_dim": GEMMA4_TEXT_TINY["global_head_dim"]},
)

#: Unified Gemma 4 embeds image patches and audio frames straight into the text stream (no
#: vision-tower blocks to expose).
GEMMA4_UNIFIED = GEMMA4_MULTIMODAL.with_classes(
    "Gemma4UnifiedForConditionalGeneration",
    name="gemma4_unified",
    vision_layers=None,
    tiny_config={
        "text_config.global_head_dim": GEMMA4_TEXT_TINY["global_head_dim"],
        "vision_config.mm_embed_dim": 64,
        "vision_config.mm_posemb_size": 64,
        "vision_config.output_proj_dims": 64,
        "audio_config.audio_embed_dim": 64,
    },
)

#: Cohere Compass (North) text model: Cohere's parallel blocks and logit scale. Its default
#: config names no RoPE parameters for its layer type, so the tiny one gives them.
COHERE_COMPASS = COHERE.with_classes(
    "CohereCompassForCausalLM",
    name="cohere_compass",
    tiny_config={"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10_000.0}}},
)

#: DBRX: attention inside ``norm_attn_norm`` (which also holds both pre-norms and adds the
#: attention's residual), a fused ``Wqkv`` in q|k|v blocks, a mixture-of-experts ``ffn``. Its
#: attention reads ``attn_config.rope_theta``, which DBRX checkpoints' config files give but the
#: class default lacks, and clamps q/k/v with ``clip_qkv`` (8 in DBRX; the default ``None`` makes
#: torch's clamp raise), so the tiny config sets both (dotted keys: sub-config attributes).
DBRX = ArchitectureSpec(
    name="dbrx",
    model_classes=("DbrxForCausalLM",),
    layers="transformer.blocks",
    self_attn="norm_attn_norm.attn",
    mlp="ffn",
    ln_final="transformer.norm_f",
    embed_tokens="transformer.wte",
    q_proj=None,
    k_proj=None,
    v_proj=None,
    qkv_proj="Wqkv",
    qkv_layout="blocks",
    o_proj="out_proj",
    attention_norm="norm_attn_norm.norm_1",
    mlp_norm="norm_attn_norm.norm_2",
    num_kv_heads_keys=("attn_config.kv_n_heads",),
    tiny_config={
        "attn_config.rope_theta": 10_000.0,
        "attn_config.clip_qkv": 8.0,
        "attn_config.kv_n_heads": 2,
        "ffn_config.ffn_hidden_size": 32,
        "ffn_config.moe_num_experts": 4,
        "ffn_config.moe_top_k": 2,
    },
)

#: dots3_note (dots.3 Note preview): multi-head latent attention whose sliding-window layers have
#: their own head counts, ranks and head sizes (``per_layer_config``, from ``swa_*`` arguments),
#: between dynamic-sparse-attention ("indexed") layers; mixture-of-experts MLPs after the first.
#: The tiny model keeps one layer of each kind, with half the heads on the sliding one.
DOTS3_NOTE_TINY = {
    **MLA_TINY,
    "head_dim": 16,
    "shared_experts_intermediate_size": 32,
    "layer_types": ["indexed_attention", "sliding_attention"],
    "swa_num_attention_heads": 2,
    "swa_num_key_value_heads": 2,
    "swa_q_lora_rank": 16,
    "swa_kv_lora_rank": 16,
    "swa_head_dim": 16,
    "swa_qk_nope_head_dim": 8,
    "swa_v_head_dim": 8,
    "index_n_heads": 16,
    # The composite dots3_note config's towers (ignored by the text-only config): one dense and
    # one 4-expert vision block, adapters as wide as the tiny text model.
    "vision_config.pyramid_num_routed": [-1, 4],
    "vision_config.moe_intermediate_size": 32,
    "vision_config.adapter_in_dim": 64,
    "vision_config.adapter_out_dim": 64,
    "audio_config.adapter_input_size": 64,
    "audio_config.adapter_out_dim": 64,
    "audio_config.downsample_hidden_size": 32,
}

#: Why dots3_note's per-head sites are unavailable.
DOTS3_NOTE_HEAD_SITES_UNAVAILABLE = {
    site: (
        "dots3_note's sliding-window layers have their own number of attention heads, ranks and head "
        "sizes (num_attention_heads is set per layer in the config's per_layer_config, so it has no "
        "global value); nnterp's per-head layout (nnterp.heads.attention_layout) has one head count and "
        "head size for the whole model"
    )
    for site in ("queries", "keys", "values", "queries_rotated", "keys_rotated", "heads_output", "heads_result")
}

DOTS3_NOTE = MLA.with_classes(
    "Dots3NoteForCausalLM",
    name="dots3_note",
    tiny_config=DOTS3_NOTE_TINY,
    unavailable_sites=DOTS3_NOTE_HEAD_SITES_UNAVAILABLE,
)

SPECS: tuple[ArchitectureSpec, ...] = (
    DOTS3_NOTE,
    DBRX,
    GEMMA4_TEXT, GEMMA4_MULTIMODAL, GEMMA4_UNIFIED_TEXT, GEMMA4_UNIFIED, COHERE_COMPASS,
)

#: Why the remaining types of these families cannot be standardized (per model type).
_ASSISTANT = (
    "a speculative-decoding drafter, not a standalone causal LM: its forward ignores input_ids and needs "
    "the target Gemma 4 model's last hidden states (inputs_embeds) and its key/value states "
    "(shared_kv_states) to attend over, so it cannot run, and has no token stream of its own, on a prompt"
)
_ALTUP = (
    "Gemma 3n blocks carry altup_num_inputs (4) parallel residual streams, stacked as (streams, batch, seq, "
    "hidden): each block predicts all streams from learned mixtures of them (AltUp), computes on one, "
    "corrects the others, and adds a per-layer-embedding branch to all but the first; the final hidden state "
    "is the mean of the streams after per-stream unembedding projections, so no single (batch, seq, hidden) "
    "stream runs from the embeddings to lm_head. A streams-first streams_packing could give (batch, seq, "
    "streams, hidden) views of the streams, but that final collapse (altup_unembed_projections[i - 1] on stream i, "
    "rescaled to stream 0's RMS, then the mean) is inline code of Gemma3nTextModel.forward, not a module a "
    "spec's streams_head can name, so project_on_vocab and the logit lens could not reproduce it"
)
NOT_STANDARDIZED: dict[str, str] = {
    "gemma4_assistant": _ASSISTANT,
    "gemma4_unified_assistant": _ASSISTANT,
    "gemma3n_text": _ALTUP,
    "gemma3n": f"{_ALTUP} (its vision tower is a timm model as well: building it needs the timm package)",
}
