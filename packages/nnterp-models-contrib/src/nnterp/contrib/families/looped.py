"""Looped transformers: a forward re-runs some of its blocks.

Their standard ``layers`` are the forward's *block calls* (`nnterp.unrolled`): Dory's
``n_input_layers`` prelude blocks, then ``n_recurrent_loops`` passes over its
``n_recurrent_layers`` recurrent blocks, then its ``n_output_layers`` coda blocks. The spec's
``unrolled`` (`nnterp.spec.Unrolled`) says how the forward walks the block list.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, Segment, Unrolled

#: Dory's block calls: prelude, the recurrent range once per loop, coda. The final norm's last
#: call (after one before the loops and one per loop) feeds ``lm_head``.
DORY_UNROLLED = Unrolled(
    segments=(
        Segment(start=0, length="n_input_layers"),
        Segment(start="n_input_layers", length="n_recurrent_layers", repeats="n_recurrent_loops"),
        Segment(start=("num_hidden_layers", "-n_output_layers"), length="n_output_layers"),
    ),
    ln_final_call=("n_recurrent_loops", 1),
)

#: Dory (nGPT-style, on the unit sphere): each sublayer output is L2-normalised and the block
#: moves its L2-normalised input towards it at a learned per-channel rate, so nothing is added
#: to an unchanged stream; each loop restarts from norm(stream) + norm(prelude output), so a
#: loop's first block call does not read the previous call's output; ``model.norm`` (an L2
#: norm) runs once before the loops, once per loop and once before ``lm_head``.
DORY = ArchitectureSpec(
    name="dory",
    model_classes=("DoryForCausalLM",),
    non_additive=(
        "Dory blocks interpolate their L2-normalised input towards each L2-normalised sublayer output "
        "(h + rate * (norm(sublayer) - h)), so no sublayer output is added to an unchanged residual stream"
    ),
    unrolled=DORY_UNROLLED,
    tiny_config={
        "num_hidden_layers": 4,
        "n_input_layers": 1,
        "n_recurrent_layers": 2,
        "n_recurrent_loops": 2,
        "n_output_layers": 1,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        "sliding_window": 8,
    },
)

SPECS: tuple[ArchitectureSpec, ...] = (DORY,)
