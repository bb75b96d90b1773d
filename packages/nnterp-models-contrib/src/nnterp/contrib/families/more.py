"""Causal LMs whose layout matches no other family, and why each is not standardized yet.

The standard tree is one stack of blocks, each module called once per forward, reading and
writing one (batch, seq, hidden) stream from the embeddings to ``lm_head``. ``NOT_STANDARDIZED``
gives, per model type, what in the model's wiring that tree cannot describe, or which part of
nnterp's renaming stops it. ``PENDING_SPECS`` are specs whose paths and meanings are right
(tests/contrib/test_more_families.py checks them against plain HF hooks) but that renaming
cannot apply yet; they join ``SPECS`` once it can.
"""

from __future__ import annotations

from nnterp.contrib.families.encoders import BIG_BIRD
from nnterp.spec import ArchitectureSpec

#: GIT run on text alone (no ``pixel_values``, so no image tokens precede the text): a post-norm
#: BERT encoder under ``git`` with a causal mask; the unembedding is the root module ``output``.
GIT = BIG_BIRD.with_classes(
    "GitForCausalLM",
    name="git",
    layers="git.encoder.layer",
    embed_tokens="git.embeddings.word_embeddings",
    ln_final=None,
    lm_head="output",
    tiny_config={},
)

#: ModernBERT decoder: pre-norm blocks (``attn_norm`` is an ``Identity`` in layer 0) with
#: ``attn`` and ``mlp``; after ``model.final_norm`` the logits are ``decoder(lm_head(x))``,
#: where the native ``lm_head`` is a dense/activation/LayerNorm prediction head: it is the
#: unembedding projection, and ``decoder`` the unembedding. The standard ``model.lm_head`` is
#: ``decoder``; the native head moves to ``model.E_lm_head`` (`nnterp.renaming.split_aliases`).
MODERNBERT_DECODER = ArchitectureSpec(
    name="modernbert_decoder",
    model_classes=("ModernBertDecoderForCausalLM",),
    self_attn="attn",
    ln_final="model.final_norm",
    lm_head="decoder",
    embed_tokens="model.embeddings.tok_embeddings",
    unembedding_projection="lm_head",
    o_proj="Wo",
    down_proj="Wo",
    attention_norm="attn_norm",
    mlp_norm="mlp_norm",
)

PENDING_SPECS: tuple[ArchitectureSpec, ...] = ()

SPECS: tuple[ArchitectureSpec, ...] = (GIT, MODERNBERT_DECODER)


#: Why each of these causal-LM types has no spec (shown by the status registry and the docs).
NOT_STANDARDIZED: dict[str, str] = {
    "blt": (
        "byte latent transformer: an entropy patcher model, a byte-level local encoder, a patch-level global "
        "transformer and a byte-level local decoder (with cross-attention added between its layers); no single "
        "stack of blocks carries one stream from the embeddings to lm_head"
    ),
    "prophetnet": (
        "each decoder layer carries the main stream and config.ngram predicting streams concatenated along "
        "the sequence, (batch, (1 + ngram) * seq, hidden), and the logits are lm_head of the first predicting "
        "stream; a layout selecting that stream reproduces the hooked sites, the logits and the logit lens, but "
        "the model's own forward makes the logits at every position depend on how many positions the input has, "
        "padding included: ProphetNetNgramSelfAttention.get_predict_relative_pos_embeddings gathers the predicting "
        "streams' relative-position bias from rows ordered (batch, seq, ngram, heads) with buckets ordered "
        "(ngram, batch, heads, seq) and views the result as (batch, ngram, heads, seq, key), so for seq > 1 a "
        "query's bias is projected from the hidden state of another position (later ones included), stream and "
        "head, chosen by seq; the logits at a position then change with the input's length and, slightly, with "
        "later tokens, and a padded batch (either side) cannot give a prompt the logits it gets alone (left "
        "padding also shifts its absolute positions: the decoder passes no attention mask to its position "
        "embedding and the model takes no position_ids)"
    ),
}

