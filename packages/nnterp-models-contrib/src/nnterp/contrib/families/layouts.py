"""Causal LMs whose token-indexed tensors are not (batch, seq, ...) with one position per input
token, standardized through the spec's `nnterp.spec.StreamLayout` (see `nnterp.stream_layout`):
every site reads and writes the standard view, so their meanings are those of every other model.

- CPM-Ant prepends ``config.prompt_length`` learned prompt positions to each row inside its
  forward; the sites start after them. Its attention probabilities over the input tokens sum
  to at most 1 (the rest goes to the prompt positions, as to learned sinks).
- XLNet runs sequence-first, (seq, batch, hidden); the sites are (batch, seq, hidden).
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, StreamLayout

#: CPM-Ant: pre-norm blocks whose two sub-blocks (``self_att``, ``ffn``) add their sublayer's
#: output to the stream inside themselves; the attention and the feed-forward inside them are
#: the standard ``self_attn`` and ``mlp``, whose outputs are the contributions. Positions are a
#: relative bias, and the model masks padding by each row's count of non-zero ids (left padding
#: with pad id 0, as its tokenizer pads), so it takes no position ids. In a cached generation
#: step it re-embeds every token and keeps the new ones after the embedding: token_embeddings
#: there holds every token of the sequence (a write to an earlier one changes nothing).
CPMANT = ArchitectureSpec(
    name="cpmant",
    model_classes=("CpmAntForCausalLM",),
    layers="cpmant.encoder.layers",
    self_attn="self_att.self_attention",
    mlp="ffn.ffn",
    ln_final="cpmant.encoder.output_layernorm",
    embed_tokens="cpmant.input_embedding",
    q_proj="project_q",
    k_proj="project_k",
    v_proj="project_v",
    o_proj="attention_out",
    rotary_embedding=None,
    # The softmax (a submodule) gives NaN rows for padding queries, which mask no key; the
    # masked_fill after it zeroes them, and its output is what multiplies the values.
    attention_probabilities=("torch.masked_fill[1]",),
    attention_sinks=True,
    attention_norm="self_att.layernorm_before_attention",
    mlp_norm="ffn.layernorm_before_ffn",
    down_proj="w_out",
    position_ids_from_mask=False,
    stream_layout=StreamLayout(prefix_positions="prompt_length"),
    unavailable_sites={
        "attention_scores": (
            "the softmax also normalises over the config.prompt_length prepended prompt positions, which "
            "the standard (batch, heads, query, key) view leaves out, so the visible scores' softmax is not "
            "attention_probabilities"
        ),
    },
    # Its default init_std is 1.0 for every weight, which saturates a random model's softmax.
    tiny_config={"init_std": 0.02, "prompt_length": 4},
)

#: XLNet (``XLNetLMHeadModel``): post-norm blocks (``rel_attn`` and ``ff`` each end with
#: ``layer_norm(sublayer(x) + x)``), so no sublayer output is an additive contribution. Without
#: a permutation mask every token attends to every non-padding token, later ones included:
#: the logits at a position see the whole prompt (the model's own semantics). Its projections
#: are parameters used in einsums, not modules, so the per-head sites are not readable; its
#: relative attention computes the probabilities (batch, heads, query, key) in ``rel_attn_core``.
#: Generation runs XLNet's two-stream mode (``generate`` appends a masked query token with a
#: permutation mask and target mapping), where the logits come from the query stream of the
#: appended token, which no standard site holds: ``model.generate`` is refused with that reason.
XLNET = ArchitectureSpec(
    name="xlnet",
    model_classes=("XLNetLMHeadModel",),
    layers="transformer.layer",
    self_attn="rel_attn",
    mlp="ff",
    ln_final=None,
    lm_head="lm_loss",
    embed_tokens="transformer.word_embedding",
    attention_probabilities=("self.rel_attn_core[-1]", "nn.functional.softmax"),
    post_norm=True,
    q_proj=None,
    k_proj=None,
    v_proj=None,
    o_proj=None,
    rotary_embedding=None,
    attention_norm=None,
    mlp_norm=None,
    down_proj="layer_2",
    position_ids_from_mask=False,
    stream_layout=StreamLayout(sequence_first=True),
    generation_unavailable=(
        "XLNet generates in its two-stream mode (an appended query token under a permutation mask and "
        "target mapping), whose logits come from the query stream, which no standard site holds"
    ),
)

SPECS: tuple[ArchitectureSpec, ...] = (CPMANT, XLNET)
