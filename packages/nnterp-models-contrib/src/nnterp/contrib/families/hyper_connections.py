"""Hyper-connection models: the residual is several parallel streams (batch, seq, streams, hidden),
or (batch, seq, streams * hidden) flattened (Qwen4-Exp, the spec's ``streams_packing``).

Each block reads a learned mix of the streams into its attention and its MLP (the collapse,
``pre``), writes each sublayer's output back into every stream with a learned weight
(``post``), and mixes the streams (``comb``, DeepSeek-V4) or keeps them (HunYuan-V4). A head
module (``hc_head``) collapses the streams into the one state the final norm reads.

nnterp exposes the streams as ``streams_input``/``streams_output`` (the spec's
``residual_streams``); the sublayers' inputs and raw outputs are the standard ones
(``attentions_input``, ``mlps_input``, ``model.attentions[i].output``), and the logit lens and
`project_on_vocab` read streams through ``hc_head`` (``streams_head``). The single-stream sites
are unavailable, with the reason, since no single (batch, seq, hidden) stream runs between blocks.
Qwen4-Exp's streams are read as (batch, seq, streams, hidden) views of its flattened tensor, and
its final norm, ``hyper_connection_mixer``, is also the collapse the lens applies.
"""

from __future__ import annotations

from nnterp.contrib.families.llama_like import LLAMA_MOE, MLA_TINY, MOE_TINY
from nnterp.spec import DEFAULT_ATTENTION_PROBABILITIES, ArchitectureSpec, Mixer


def _single_stream_reason(update: str) -> str:
    return (
        "hyper-connections: the residual between blocks is hc_mult parallel streams, (batch, seq, streams, "
        f"hidden), not one stream: each sublayer reads a learned mix of them and the block writes {update} "
        "(read streams_input/streams_output, and the sublayers' inputs and raw outputs)"
    )


def _unavailable(reason: str) -> dict[str, str]:
    return {site: reason for site in ("layers_input", "layers_output", "layers_mid")}


_DEEPSEEK_V4 = _single_stream_reason("post * output + comb^T @ streams (the streams mixed by a learned matrix)")
_HY_V4 = _single_stream_reason("streams + post * output (each stream its own weight of the output)")

#: DeepSeek-V4: mHC streams mixed by a Sinkhorn-normalised matrix in every sublayer.
DEEPSEEK_V4 = LLAMA_MOE.with_classes(
    "DeepseekV4ForCausalLM",
    name="deepseek_v4",
    residual_streams="hc_mult",
    streams_head="model.hc_head",
    attention_sinks=True,
    non_additive=_DEEPSEEK_V4,
    unavailable_sites=_unavailable(_DEEPSEEK_V4),
    tiny_config={**MOE_TINY, "hc_mult": 2},
)

#: HunYuan-V4: hyper-connection streams, each given its own weight of a sublayer's output.
HY_V4 = DEEPSEEK_V4.with_classes(
    "HYV4ForCausalLM",
    name="hy_v4",
    non_additive=_HY_V4,
    unavailable_sites=_unavailable(_HY_V4),
    tiny_config={**MLA_TINY, "hc_mult": 2},
)

_QWEN4_EXP = (
    "gated hyper-connections: the residual between blocks is hc_count parallel streams, held flattened as "
    "(batch, seq, hc_count * hidden), not one stream: each sublayer reads a gated mix of them "
    "(attn_hyper_connection / mlp_hyper_connection) and the block adds its output to every stream times a "
    "learned per-token weight, inline (no module returns that injection); the layers in ple_layer_ids also "
    "add a hashed n-gram embedding (ple) to every stream first (read streams_input/streams_output, and the "
    "sublayers' inputs and raw outputs)"
)

#: Qwen4-Exp: hybrid gated-DeltaNet / indexed-attention layers (as Qwen3-Next) whose residual
#: is ``hc_count`` streams flattened along the last dimension. The final norm is the
#: ``hyper_connection_mixer``: it normalises the streams and collapses them into the one state
#: ``lm_head`` reads, so it is ``ln_final`` and no separate ``streams_head`` runs before it.
QWEN4_EXP = ArchitectureSpec(
    name="qwen4_exp",
    model_classes=("Qwen4ExpForCausalLM",),
    ln_final="model.hyper_connection_mixer",
    attention_probabilities=DEFAULT_ATTENTION_PROBABILITIES,
    mixers=(Mixer("self_attn", "attention"), Mixer("linear_attn", "gated_deltanet")),
    # q_proj computes each head's query and its output gate side by side ([q_h | gate_h]).
    q_proj=None,
    k_proj=None,
    v_proj=None,
    residual_streams="hc_count",
    streams_packing="flattened",
    non_additive=_QWEN4_EXP,
    unavailable_sites={
        **_unavailable(_QWEN4_EXP),
        **{
            f"{site}_norm_scale": (
                f"the {sublayer} reads {module}'s gated mix of the hc_count streams, each normalised (hc_norm) "
                "and weighted per feature: no per-token scale of one stream gives its input"
            )
            for site, sublayer, module in (
                ("attentions", "token mixer", "attn_hyper_connection"),
                ("mlps", "MLP", "mlp_hyper_connection"),
            )
        },
        "ln_final_scale": (
            "the final norm (hyper_connection_mixer) normalises each of the hc_count streams and then "
            "collapses them with learned gates, so its output is no scale times one input stream"
        ),
    },
    tiny_config={
        **MOE_TINY,
        "layer_types": ["linear_attention", "indexed_attention"],
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "head_dim": 16,
        "hc_count": 4,
        "hc_lowrank": 16,
        # Layer 1 (one-indexed: the DeltaNet layer 0) adds the n-gram embedding; small n-gram tables.
        "ple_layer_ids": [1],
        # Derived from ple_layer_ids when the config is built; the tiny values are set after.
        "number_of_conv_states": 3,
        "heads_per_ngram": 2,
        "ngram_vocab_size_base": 1000,
        "make_ngram_vocab_size_divisible_by": 8,
        "eos_token_id": 2,
        "indexer_n_heads": 2,
        "indexer_kv_heads": 1,
        "indexer_head_dim": 16,
        "indexer_budget": 4,
        "indexer_compress_ratio": 2,
    },
)

SPECS: tuple[ArchitectureSpec, ...] = (DEEPSEEK_V4, HY_V4, QWEN4_EXP)
