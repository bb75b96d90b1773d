"""Causal LMs without one module per block, standardized through blocks nnterp builds (the
spec's ``virtual_blocks``, see `nnterp.virtual_blocks`).

- XLM runs, for each layer ``i``, ``attentions[i]``, ``layer_norm1[i]``, ``ffns[i]`` and
  ``layer_norm2[i]``, four lists of ``transformer``; nnterp groups them into ``layers[i]``
  (`nnterp.spec.VirtualBlocks`).
- LongCat-Flash's decoder layer runs two attention/MLP sub-blocks; each is a standard layer
  (`nnterp.spec.SubBlocks`).
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, Contribution, SubBlocks, VirtualBlocks

#: XLM (``XLMWithLMHeadModel``): post-norm blocks, ``x = layer_norm1(x + attention(x))`` then
#: ``x = layer_norm2(x + ffn(x))``, so no sublayer output is an additive contribution; the
#: stream entering layer 0 is ``layer_norm_emb``'s output (then dropout, the identity in eval
#: mode, and the padding mask), and the one leaving layer ``i`` is ``layer_norm2[i]``'s output,
#: which the forward multiplies by the padding mask in place. The head is a single projection
#: after the last block (no final norm). Positions are absolute and learned, counted from
#: position 0 of the row. The causal (CLM) checkpoints' mask is the causal triangle alone, so
#: keys at left padding would be attended: nnterp pads on the right. A bidirectional (MLM)
#: checkpoint (``causal=False``, the config's default) masks padding keys, which right padding
#: keeps equally right, but every position then sees the whole prompt, later tokens included:
#: its logits are masked-LM predictions, not next-token ones (the model's own semantics), and
#: loading one warns.
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
        stream_edited_in_place=True,
    ),
    ln_final=None,
    lm_head="pred_layer.proj",
    embed_tokens="transformer.embeddings",
    # The attention writes its softmax and dropout out; the dropout's output multiplies the values.
    attention_probabilities=("nn.functional.dropout",),
    post_norm=True,
    bidirectional=("causal", False),
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

#: LongCat-Flash: each decoder layer runs two pre-norm attention/MLP sub-blocks (its attention
#: layer indices are ``2 * layer + k``, as here), so ``layers[2 * m + k]`` is sub-block ``k`` of
#: decoder layer ``m``, with its ``self_attn[k]``, ``mlps[k]`` (the standard ``mlp``) and norms
#: ``[k]``. The stream between the two is the variable the forward's 5th assignment to
#: ``hidden_states`` binds (``hidden_states = residual + hidden_states`` after ``mlps[0]``). The
#: layer's ``mlp``, a mixture of experts with zero-compute (identity) experts, is a shortcut: the
#: first sub-block calls it on the input of ``mlps[0]``, and the second adds its output to its
#: own at the end; it is that sub-block's part ``shortcut_mlp``, listed among the first's parts,
#: in the order the forward calls them.
LONGCAT_FLASH = ArchitectureSpec(
    name="longcat_flash",
    model_classes=("LongcatFlashForCausalLM",),
    layers="model.nnterp_blocks",
    virtual_blocks=SubBlocks(
        blocks="model.layers",
        parts=(
            (
                ("input_layernorm", "input_layernorm.0"),
                ("self_attn", "self_attn.0"),
                ("post_attention_layernorm", "post_attention_layernorm.0"),
                ("shortcut_mlp", "mlp"),
                ("mlp", "mlps.0"),
            ),
            (
                ("input_layernorm", "input_layernorm.1"),
                ("self_attn", "self_attn.1"),
                ("post_attention_layernorm", "post_attention_layernorm.1"),
                ("mlp", "mlps.1"),
            ),
        ),
        between=("hidden_states_4",),
        mlp_contributions=(
            None,
            Contribution(
                unavailable=(
                    "the second sub-block of a LongCat-Flash layer adds two MLP outputs: its mlps[1]'s and "
                    "the shortcut MoE's, which the first sub-block computes from its MLP input (read them "
                    "as layers[i].mlp.output and layers[i - 1].shortcut_mlp.output)"
                )
            ),
        ),
    ),
    # Its rotary function rotates only the positional slice of each latent query and key
    # (apply_rotary_pos_emb_interleave), which no (batch, heads, seq, head_dim) site holds.
    rotary_embedding=None,
    # Multi-head latent attention with as many key/value heads as query heads, and a small MoE.
    tiny_config={
        "q_lora_rank": 32, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
        "qk_head_dim": 16, "v_head_dim": 8, "head_dim": 8, "num_key_value_heads": 4,
        "n_routed_experts": 4, "moe_topk": 2, "zero_expert_num": 2, "expert_ffn_hidden_size": 32,
    },
)

SPECS: tuple[ArchitectureSpec, ...] = (XLM, LONGCAT_FLASH)
