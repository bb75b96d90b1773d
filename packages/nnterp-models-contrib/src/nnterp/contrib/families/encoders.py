"""Encoder models with a causal-LM head (BERT, RoBERTa, ...), run as decoders.

Their configs need ``is_decoder=True`` for a causal mask. A layer's ``attention`` block
includes its output projection, residual and LayerNorm; the feed-forward is split between
``intermediate`` and ``output`` (which adds the residual), so there is no MLP module. The
probabilities are computed by ``attention.self``.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec

#: Decoder mode, no cross-attention; embedding width equal to the hidden size.
ENCODER_TINY = {"is_decoder": True, "add_cross_attention": False, "embedding_size": 64}

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
    tiny_config=ENCODER_TINY,
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
ROFORMER = under("roformer", BIG_BIRD, "RoFormerForCausalLM", name="roformer", tiny_config=ENCODER_TINY)

#: Megatron-BERT: pre-norm layers and a final ``bert.encoder.ln``; the whole head is ``cls``.
MEGATRON_BERT = BIG_BIRD.with_classes(
    "MegatronBertForCausalLM",
    name="megatron_bert",
    ln_final="bert.encoder.ln",
    lm_head="cls.predictions",
    tiny_config=ENCODER_TINY,
)

#: RemBERT: the head's layers are not grouped in a transform module.
REMBERT = under(
    "rembert",
    BIG_BIRD,
    "RemBertForCausalLM",
    name="rembert",
    ln_final=None,
    lm_head="cls.predictions",
    tiny_config={**ENCODER_TINY, "input_embedding_size": 64, "output_embedding_size": 64},
)

#: ELECTRA's generator head: ``generator_predictions`` (dense/activation/LayerNorm), ``generator_lm_head``.
ELECTRA = under(
    "electra",
    BERT_LIKE,
    "ElectraForCausalLM",
    name="electra",
    ln_final="generator_predictions",
    lm_head="generator_lm_head",
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

#: X-MOD: language adapters; the tiny model runs in its default language.
XMOD = ROBERTA_LIKE.with_classes(
    "XmodForCausalLM", name="xmod", tiny_config={**ENCODER_TINY, "default_language": "en_XX"}
)

#: Pre-norm RoBERTa variants: a final LayerNorm after the encoder.
XLM_ROBERTA_XL = ROBERTA_LIKE.with_classes(
    "XLMRobertaXLForCausalLM", name="xlm_roberta_xl", ln_final="roberta.encoder.LayerNorm"
)
ROBERTA_PRELAYERNORM = under(
    "roberta_prelayernorm",
    ROBERTA_LIKE,
    "RobertaPreLayerNormForCausalLM",
    name="roberta_prelayernorm",
    ln_final="roberta_prelayernorm.LayerNorm",
)

SPECS = (
    BERT_LIKE, BIG_BIRD, ERNIE, ROC_BERT, ROFORMER, MEGATRON_BERT, REMBERT, ELECTRA, ROBERTA_LIKE,
    DATA2VEC_TEXT, BERT_GENERATION, XMOD, XLM_ROBERTA_XL, ROBERTA_PRELAYERNORM,
)
