"""GPT-style and other pre-Llama decoder naming (``transformer.h``, ``gpt_neox.layers``,
OPT/XGLM/BART decoders).

Older attention modules compute probabilities in their own code rather than through the
attention interface, so several variants name the operation (or the dropout submodule)
whose output multiplies the values.
"""

from __future__ import annotations

from nnterp.architectures import GPT2
from nnterp.spec import DEFAULT_ATTENTION_PROBABILITIES, MODULE_OUTPUT, ArchitectureSpec, Contribution

# The GPT-2 lineage starts from core's GPT-2 spec, so its shared paths (``transformer.h[i].attn``
# / ``.mlp``, ``transformer.ln_f``, ``transformer.wte``, no rotary call) are written once. Each
# family restates only what differs, its per-head projections included: a fused q/k/v layout is
# declared only where it does not depend on the config.

#: GPT-2 naming. GPTBigCode's fused ``c_attn`` splits differently with ``multi_query`` on or off,
#: so no fused projection is declared; ``c_proj``'s input still gives ``heads_output``.
GPT_LIKE = GPT2.with_classes("GPTBigCodeForCausalLM", name="gpt_like", qkv_proj=None)

#: Separate ``q_proj``/``k_proj``/``v_proj`` and ``out_proj``; rotary on part of each head
#: (``rotary_dim`` must fit the tiny head size, 16) through GPT-J's own one-tensor rotary
#: function, which ``queries_rotated`` cannot read. CodeGen has ``out_proj`` only: its fused
#: ``qkv_proj`` is split in ``mp_num`` blocks, not declared. Before transformers 5.24 their
#: attention computed its probabilities in its own ``_attn`` (then ``attn_dropout``), not
#: through the attention interface.
GPTJ = GPT_LIKE.with_classes(
    "GPTJForCausalLM",
    "CodeGenForCausalLM",
    name="gptj",
    tiny_config={"rotary_dim": 8},
    attention_probabilities=(DEFAULT_ATTENTION_PROBABILITIES, ("self._attn", "self.attn_dropout")),
    q_proj="q_proj",
    k_proj="k_proj",
    v_proj="v_proj",
    o_proj="out_proj",
    # Attention and MLP both read ln_1's output of the block's input.
    parallel_blocks=True,
)

#: GPT-Neo wraps its attention (``attn.attention``) and applies ``attn_dropout`` in ``_attn``.
GPT_NEO = GPT_LIKE.with_classes(
    "GPTNeoForCausalLM",
    name="gpt_neo",
    attention_probabilities=("self.attention", "self._attn", "self.attn_dropout"),
    q_proj="attention.q_proj",
    k_proj="attention.k_proj",
    v_proj="attention.v_proj",
    o_proj="attention.out_proj",
)

#: GPT-1: GPT-2's fused ``c_attn`` and ``c_proj``, no final norm; post-norm blocks.
OPENAI_GPT = GPT2.with_classes(
    "OpenAIGPTLMHeadModel",
    name="openai_gpt",
    ln_final=None,
    embed_tokens="transformer.tokens_embed",
    attention_probabilities=("self._attn", "self.attn_dropout"),
    post_norm=True,
)

#: A sublayer that adds the residual (its second argument) to its own output.
_IN_MODULE_RESIDUAL = Contribution(residual_argument=("residual", 1))

#: BLOOM: ``self_attention``, ``word_embeddings``; ALiBi probabilities go through
#: ``attention_dropout``; ``query_key_value`` holds each head's q, k, v side by side. Both
#: sublayers add the residual themselves; with ``apply_residual_connection_post_layernorm``
#: that residual is the normed stream.
BLOOM = GPT_LIKE.with_classes(
    "BloomForCausalLM",
    name="bloom",
    self_attn="self_attention",
    embed_tokens="transformer.word_embeddings",
    attention_probabilities=("self.attention_dropout",),
    qkv_proj="query_key_value",
    qkv_layout="interleaved_heads",
    o_proj="dense",
    attention_contribution=_IN_MODULE_RESIDUAL,
    mlp_contribution=_IN_MODULE_RESIDUAL,
    post_norm=("apply_residual_connection_post_layernorm", True),
)

#: Falcon (rotary): the softmax output multiplies the values directly. Its fused
#: ``query_key_value`` layout follows ``new_decoder_architecture``/``multi_query``: not declared.
#: Parallel layers add the attention output into the MLP's output in place.
FALCON = BLOOM.with_classes(
    "FalconForCausalLM",
    name="falcon",
    attention_probabilities=("F.softmax",),
    qkv_proj=None,
    qkv_layout="blocks",
    attention_contribution=MODULE_OUTPUT,
    mlp_contribution=Contribution(mutated_after_return=True),
    post_norm=False,
    # Sequential only with neither the new decoder architecture nor parallel attention.
    parallel_blocks=(("new_decoder_architecture", True), ("parallel_attn", True)),
)

#: MPT: ``Wqkv`` is ``[q | k | v]`` like GPT-2's ``c_attn``; ``ffn`` adds the residual itself.
MPT = GPT_LIKE.with_classes(
    "MptForCausalLM",
    name="mpt",
    layers="transformer.blocks",
    mlp="ffn",
    ln_final="transformer.norm_f",
    attention_probabilities=("nn.functional.dropout",),
    qkv_proj="Wqkv",
    o_proj="out_proj",
    mlp_contribution=_IN_MODULE_RESIDUAL,
)

#: CTRL's ``ffn`` is ``Sequential(Linear, ReLU, Linear)``: the down projection is its item ``2``.
CTRL = GPT_LIKE.with_classes(
    "CTRLLMHeadModel",
    name="ctrl",
    self_attn="multi_head_attention",
    mlp="ffn",
    ln_final="transformer.layernorm",
    embed_tokens="transformer.w",
    q_proj="Wq",
    k_proj="Wk",
    v_proj="Wv",
    o_proj="dense",
    down_proj="2",
)

GPT_NEOX = ArchitectureSpec(
    name="gpt_neox",
    model_classes=("GPTNeoXForCausalLM",),
    layers="gpt_neox.layers",
    self_attn="attention",
    ln_final="gpt_neox.final_layer_norm",
    embed_tokens="gpt_neox.embed_in",
    q_proj=None,
    k_proj=None,
    v_proj=None,
    qkv_proj="query_key_value",
    qkv_layout="interleaved_heads",
    o_proj="dense",
    parallel_blocks=(("use_parallel_residual", True),),
)

GPT_NEOX_JAPANESE = GPT_NEOX.with_classes(
    "GPTNeoXJapaneseForCausalLM",
    name="gpt_neox_japanese",
    layers="gpt_neox_japanese.layers",
    ln_final="gpt_neox_japanese.final_layer_norm",
    lm_head="embed_out",
    embed_tokens="gpt_neox_japanese.embed_in",
    attention_probabilities=("self._attn", "self.attention_dropout"),
)

#: fairseq-style decoder layers: ``self_attn`` then ``fc1``/``fc2`` with no MLP module. OPT-350m
#: normalises after the residual adds (``do_layer_norm_before=False``); embeddings narrower
#: than the stream (``word_embed_proj_dim``, 32 in the tiny model) go through
#: ``project_in``/``project_out``; with post-norm blocks there is no final norm.
OPT = ArchitectureSpec(
    name="opt",
    model_classes=("OPTForCausalLM",),
    layers="model.decoder.layers",
    mlp=None,
    ln_final="model.decoder.final_layer_norm",
    embed_tokens="model.decoder.embed_tokens",
    tiny_config={"word_embed_proj_dim": 32},
    o_proj="out_proj",
    # The feed-forward runs on the flattened tokens, (batch * seq, hidden).
    mlp_contribution=Contribution(output="fc2", input="fc1", tokens_flattened=True),
    post_norm=("do_layer_norm_before", False),
    optional_parts=("ln_final",),
    embedding_projection="model.decoder.project_in",
    unembedding_projection="model.decoder.project_out",
)

BIOGPT = OPT.with_classes(
    "BioGptForCausalLM",
    name="biogpt",
    layers="biogpt.layers",
    ln_final="biogpt.layer_norm",
    lm_head="output_projection",
    embed_tokens="biogpt.embed_tokens",
    tiny_config={},
    mlp_contribution=Contribution(output="fc2", input="fc1"),
    post_norm=False,
    optional_parts=(),
    embedding_projection=None,
    unembedding_projection=None,
)

#: XGLM computes its probabilities as (batch * heads, q, k) with ``bmm``; nnterp views them as
#: (batch, heads, q, k). Its scores are not readable: the first softmax call in its source is the
#: float16 branch, which never runs in float32.
XGLM = BIOGPT.with_classes(
    "XGLMForCausalLM",
    name="xglm",
    layers="model.layers",
    ln_final="model.layer_norm",
    lm_head="lm_head",
    embed_tokens="model.embed_tokens",
    attention_probabilities=("nn.functional.dropout",),
    attention_heads_merged=True,
    attention_scores=None,
)

#: The decoder half of BART-like seq2seq models, used alone as a causal LM (no encoder states,
#: so the layers skip their ``encoder_attn``). BART, BlenderbotSmall, Marian, PLBart, MVP and
#: TrOCR normalise after each residual add.
_SEQ2SEQ_TINY = {
    "decoder_layers": 2,
    "encoder_layers": 2,
    "decoder_attention_heads": 4,
    "encoder_attention_heads": 4,
    "decoder_ffn_dim": 128,
    "encoder_ffn_dim": 128,
}
BART_DECODER = OPT.with_classes(
    "BartForCausalLM",
    "BlenderbotSmallForCausalLM",
    "MarianForCausalLM",
    "PLBartForCausalLM",
    name="bart_decoder",
    ln_final=None,
    tiny_config=_SEQ2SEQ_TINY,
    post_norm=True,
    embedding_projection=None,
    unembedding_projection=None,
    # Learned or sinusoidal positions counted 0..seq-1 for every row, whatever the padding.
    position_embedding="model.decoder.embed_positions",
)

#: MVP and TrOCR compute (batch * heads, q, k) probabilities, like XGLM (viewed per head).
MVP = BART_DECODER.with_classes(
    "MvpForCausalLM", name="mvp", attention_probabilities=("nn.functional.dropout",), attention_heads_merged=True
)
TROCR = MVP.with_classes("TrOCRForCausalLM", name="trocr", lm_head="output_projection")

#: BigBird-Pegasus (pre-norm) normalizes the decoder output with ``layernorm_embedding``.
BIGBIRD_PEGASUS_DECODER = BART_DECODER.with_classes(
    "BigBirdPegasusForCausalLM",
    name="bigbird_pegasus_decoder",
    ln_final="model.decoder.layernorm_embedding",
    post_norm=False,
)

#: Pre-norm BART-like decoders: a final ``layer_norm``.
MBART_DECODER = BART_DECODER.with_classes(
    "MBartForCausalLM",
    "PegasusForCausalLM",
    "BlenderbotForCausalLM",
    name="mbart_decoder",
    ln_final="model.decoder.layer_norm",
    post_norm=False,
)

WHISPER_DECODER = MBART_DECODER.with_classes(
    "WhisperForCausalLM", name="whisper_decoder", lm_head="proj_out", position_embedding=None
)

SPECS = (
    GPT_LIKE, GPTJ, GPT_NEO, OPENAI_GPT, BLOOM, FALCON, MPT, CTRL, GPT_NEOX, GPT_NEOX_JAPANESE, OPT,
    BIOGPT, XGLM, BART_DECODER, MVP, TROCR, BIGBIRD_PEGASUS_DECODER, MBART_DECODER, WHISPER_DECODER,
)
