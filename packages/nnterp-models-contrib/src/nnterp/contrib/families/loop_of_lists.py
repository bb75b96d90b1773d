"""Causal LMs whose forward loops over parallel module lists instead of calling block modules,
standardized through the spec's `nnterp.spec.VirtualBlocks` (see `nnterp.virtual_blocks`).

- XLM runs, for each layer ``i``, ``attentions[i]``, ``layer_norm1[i]``, ``ffns[i]`` and
  ``layer_norm2[i]``, four lists of ``transformer``; nnterp groups them into ``layers[i]``.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, VirtualBlocks

#: XLM (``XLMWithLMHeadModel``): post-norm blocks, ``x = layer_norm1(x + attention(x))`` then
#: ``x = layer_norm2(x + ffn(x))``, so no sublayer output is an additive contribution; the
#: stream entering layer 0 is ``layer_norm_emb``'s output (then dropout, the identity in eval
#: mode, and the padding mask), and the one leaving layer ``i`` is ``layer_norm2[i]``'s output,
#: which the forward multiplies by the padding mask in place. The head is a single projection
#: after the last block (no final norm). Positions are absolute and learned, counted from
#: position 0 of the row. The causal (CLM) checkpoints' mask is the causal triangle alone, so
#: keys at left padding would be attended: nnterp pads on the right. A bidirectional (MLM)
#: checkpoint masks padding keys, which right padding keeps equally right.
XLM = ArchitectureSpec(
    name="xlm",
    model_classes=("XLMWithLMHeadModel",),
    layers="transformer.nnterp_blocks",
    virtual_blocks=VirtualBlocks(
        parts=(
            ("self_attn", "transformer.attentions"),
            ("layer_norm1", "transformer.layer_norm1"),
            ("mlp", "transformer.ffns"),
            ("layer_norm2", "transformer.layer_norm2"),
        ),
        output="layer_norm2",
        stream_source="transformer.layer_norm_emb",
    ),
    ln_final=None,
    lm_head="pred_layer.proj",
    embed_tokens="transformer.embeddings",
    # The attention writes its softmax and dropout out; the dropout's output multiplies the values.
    attention_probabilities=("nn.functional.dropout",),
    post_norm=True,
    q_proj="q_lin",
    k_proj="k_lin",
    v_proj="v_lin",
    o_proj="out_lin",
    rotary_embedding=None,
    attention_norm=None,
    mlp_norm=None,
    down_proj="lin2",
    padding_side="right",
    tiny_config={"causal": True},
)

SPECS: tuple[ArchitectureSpec, ...] = (XLM,)
