"""Encoder models with a causal-LM head (BERT, RoBERTa, ...), run as decoders.

Their configs need ``is_decoder=True`` for a causal mask. A layer's ``attention`` block
includes its output projection, residual add and (post-norm) LayerNorm; the feed-forward is
split between ``intermediate`` (whose input is ``mlps_input``) and ``output`` (which adds the
residual), so there is no MLP module. The probabilities are computed by ``attention.self``.

Most of these blocks are post-norm (``LayerNorm(x + sublayer(x))``): no sublayer output is an
additive contribution. Megatron-BERT, XLM-RoBERTa-XL and RoBERTa-PreLayerNorm are pre-norm:
their ``attention.output`` and ``output`` modules add the residual they are given to their
``dense`` projection's output (dropout between is the identity in eval mode), so the ``dense``
outputs are what ``attentions_output`` and ``mlps_output`` read.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, Contribution

#: Decoder mode, no cross-attention; embedding width equal to the hidden size.
ENCODER_TINY = {"is_decoder": True, "add_cross_attention": False, "embedding_size": 64}
#: Embeddings narrower than the hidden size, so the tiny model has an embedding projection.
NARROW_EMBEDDINGS = {**ENCODER_TINY, "embedding_size": 32}

#: The feed-forward: ``intermediate`` receives its input; ``output.dense`` computes what it adds.
FEED_FORWARD = Contribution(output="output.dense", input="intermediate")

#: A pre-norm attention block: ``attention.output.dense`` computes what the attention adds.
PRE_NORM_ATTENTION = Contribution(output="attention.output.dense")

#: BERT naming: ``bert.encoder.layer[i].attention``; the head ``cls.predictions`` is a
#: dense/activation/LayerNorm ``transform`` then the ``decoder`` projection.
BERT_LIKE = ArchitectureSpec(
    name="bert_like",
    model_classes=("BertLMHeadModel",),
    layers="bert.encoder.layer",
    self_attn="attention",
    mlp=None,
    ln_final="cls.predictions.transform",
    lm_head="cls.predictions.decoder",
    embed_tokens="bert.embeddings.word_embeddings",
    attention_probabilities=("self.self", "attention_interface", "nn.functional.dropout"),
    mlp_contribution=FEED_FORWARD,
    post_norm=True,
    # A checkpoint saved as an encoder (the config's default) attends in both directions.
    bidirectional=("is_decoder", False),
    tiny_config=ENCODER_TINY,
    # Per-head sites: the projections live in ``attention.self``, the output projection is
    # ``attention.output.dense``.
    q_proj="self.query",
    k_proj="self.key",
    v_proj="self.value",
    o_proj="output.dense",
    rotary_embedding=None,
    # The feed-forward's down projection: ``output.dense`` receives ``intermediate``'s activations.
    down_proj="output.dense",
)


def under(prefix: str, spec: ArchitectureSpec, *model_classes: str, **changes: object) -> ArchitectureSpec:
    """``spec`` for ``model_classes`` whose encoder sits under ``prefix`` (e.g. ``"ernie"``)."""
    return spec.with_classes(
        *model_classes,
        layers=f"{prefix}.encoder.layer",
        embed_tokens=f"{prefix}.embeddings.word_embeddings",
        **changes,
    )


#: Self-attention written out (softmax, then the ``dropout`` submodule).
BIG_BIRD = BERT_LIKE.with_classes(
    "BigBirdForCausalLM",
    name="big_bird",
    attention_probabilities=("self.self", "self.dropout"),
    tiny_config={**ENCODER_TINY, "attention_type": "original_full"},
)

ERNIE = under("ernie", BERT_LIKE, "ErnieForCausalLM", name="ernie")
ROC_BERT = under("roc_bert", BERT_LIKE, "RoCBertForCausalLM", name="roc_bert")
#: RoFormer: ``embeddings_project`` maps embeddings narrower than the stream into it.
ROFORMER = under(
    "roformer",
    BIG_BIRD,
    "RoFormerForCausalLM",
    name="roformer",
    embedding_projection="roformer.embeddings_project",
    tiny_config=NARROW_EMBEDDINGS,
)

#: Megatron-BERT: pre-norm layers (``attention.ln``, ``ln``) and a final ``bert.encoder.ln``;
#: ``attention.output`` receives the residual as ``residual``. The whole head is ``cls``.
MEGATRON_BERT = BIG_BIRD.with_classes(
    "MegatronBertForCausalLM",
    name="megatron_bert",
    ln_final="bert.encoder.ln",
    lm_head="cls.predictions",
    attention_contribution=PRE_NORM_ATTENTION,
    post_norm=False,
    tiny_config=ENCODER_TINY,
)

#: RemBERT: ``encoder.embedding_hidden_mapping_in`` maps the embeddings into the stream; the
#: head's layers (dense to ``output_embedding_size``, LayerNorm, decoder) are not grouped in a
#: transform module.
REMBERT = under(
    "rembert",
    BIG_BIRD,
    "RemBertForCausalLM",
    name="rembert",
    ln_final=None,
    lm_head="cls.predictions",
    embedding_projection="rembert.encoder.embedding_hidden_mapping_in",
    tiny_config={**ENCODER_TINY, "input_embedding_size": 32, "output_embedding_size": 48},
)

#: ELECTRA: ``embeddings_project`` maps embeddings narrower than the stream into it; the
#: generator head is ``generator_predictions`` (dense/activation/LayerNorm), ``generator_lm_head``.
ELECTRA = under(
    "electra",
    BERT_LIKE,
    "ElectraForCausalLM",
    name="electra",
    ln_final="generator_predictions",
    lm_head="generator_lm_head",
    embedding_projection="electra.embeddings_project",
    tiny_config=NARROW_EMBEDDINGS,
)

#: RoBERTa naming: ``roberta.encoder.layer``; the head ``lm_head`` (dense, LayerNorm, decoder).
ROBERTA_LIKE = under(
    "roberta",
    BERT_LIKE,
    "RobertaForCausalLM",
    "CamembertForCausalLM",
    "XLMRobertaForCausalLM",
    name="roberta_like",
    ln_final=None,
    lm_head="lm_head",
    tiny_config=ENCODER_TINY,
    position_ids_from_mask=False,
)

DATA2VEC_TEXT = under("data2vec_text", ROBERTA_LIKE, "Data2VecTextForCausalLM", name="data2vec_text")

BERT_GENERATION = ROBERTA_LIKE.with_classes(
    "BertGenerationDecoder",
    name="bert_generation",
    position_ids_from_mask=True,
    layers="bert.encoder.layer",
    embed_tokens="bert.embeddings.word_embeddings",
)

#: X-MOD: language adapters; the tiny model runs in its default language. Post-norm also with
#: ``pre_norm=True``: the adapter re-normalises the stream after the feed-forward's residual add
#: (``adapter_reuse_layer_norm``, ``ln_before_adapter``, both on by default).
XMOD = ROBERTA_LIKE.with_classes(
    "XmodForCausalLM", name="xmod", tiny_config={**ENCODER_TINY, "default_language": "en_XX"}
)

#: Pre-norm RoBERTa variants: a final LayerNorm after the encoder. RoBERTa-PreLayerNorm
#: normalises inside ``intermediate``, so ``mlps_input`` is the residual stream itself.
XLM_ROBERTA_XL = ROBERTA_LIKE.with_classes(
    "XLMRobertaXLForCausalLM",
    name="xlm_roberta_xl",
    ln_final="roberta.encoder.LayerNorm",
    attention_contribution=PRE_NORM_ATTENTION,
    post_norm=False,
    attention_norm="attention.self_attn_layer_norm",
    mlp_norm="LayerNorm",
)
ROBERTA_PRELAYERNORM = under(
    "roberta_prelayernorm",
    ROBERTA_LIKE,
    "RobertaPreLayerNormForCausalLM",
    name="roberta_prelayernorm",
    ln_final="roberta_prelayernorm.LayerNorm",
    attention_contribution=PRE_NORM_ATTENTION,
    post_norm=False,
    attention_norm="attention.LayerNorm",
    mlp_norm="intermediate.LayerNorm",
)

SPECS = (
    BERT_LIKE, BIG_BIRD, ERNIE, ROC_BERT, ROFORMER, MEGATRON_BERT, REMBERT, ELECTRA, ROBERTA_LIKE,
    DATA2VEC_TEXT, BERT_GENERATION, XMOD, XLM_ROBERTA_XL, ROBERTA_PRELAYERNORM,
)
