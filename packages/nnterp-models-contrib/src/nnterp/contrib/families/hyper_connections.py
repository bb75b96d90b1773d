"""Hyper-connection models: the residual is several parallel streams (batch, seq, streams, hidden).

Each block reads a learned mix of the streams into its attention and its MLP (the collapse,
``pre``), writes each sublayer's output back into every stream with a learned weight
(``post``), and mixes the streams (``comb``, DeepSeek-V4) or keeps them (HunYuan-V4). A head
module (``hc_head``) collapses the streams into the one state the final norm reads.

nnterp exposes the streams as ``streams_input``/``streams_output`` (the spec's
``residual_streams``); the sublayers' inputs and raw outputs are the standard ones
(``attentions_input``, ``mlps_input``, ``model.attentions[i].output``), and the logit lens and
`project_on_vocab` read streams through ``hc_head`` (``streams_head``). The single-stream sites
are unavailable, with the reason, since no single (batch, seq, hidden) stream runs between blocks.
"""

from __future__ import annotations

from nnterp.contrib.families.llama_like import LLAMA_MOE, MLA_TINY, MOE_TINY
from nnterp.spec import ArchitectureSpec


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

SPECS: tuple[ArchitectureSpec, ...] = (DEEPSEEK_V4, HY_V4)
