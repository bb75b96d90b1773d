"""Looped transformers: a forward re-runs some of its blocks.

Their standard ``layers`` are the forward's *block calls* (`nnterp.unrolled`): Dory's
``n_input_layers`` prelude blocks, then ``n_recurrent_loops`` passes over its
``n_recurrent_layers`` recurrent blocks, then its ``n_output_layers`` coda blocks. The spec's
``unrolled`` (`nnterp.spec.Unrolled`) says how the forward walks the block list. HRM-text runs
two stacks on two interleaved states: ``H_cycles`` passes, each ``L_cycles`` passes over the
low-level stack then one over the high-level stack; its ``layers[j]`` are those block calls.
"""

from __future__ import annotations

from nnterp.spec import ArchitectureSpec, Loop, Segment, Unrolled

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

#: HRM-text's block calls: per high-level cycle, ``L_cycles`` passes over the L stack (blocks
#: ``0 .. num_layers_per_stack - 1``, the spec's ``layers``) then one over the H stack (the
#: blocks after them); the H stack's final norm, at its last call, feeds ``lm_head``.
HRM_TEXT_UNROLLED = Unrolled(
    segments=(
        Loop(
            body=(
                Loop(body=(Segment(start=0, length="num_layers_per_stack"),), repeats="L_cycles"),
                Segment(start="num_layers_per_stack", length="num_layers_per_stack"),
            ),
            repeats="H_cycles",
        ),
    ),
    stacks=("model.H_module.layers",),
    ln_final_call=("H_cycles", -1),
)

#: HRM-text (hierarchical reasoning model): pre-norm blocks on two states, z_L (from a learned
#: init) and z_H (from the embeddings); each stack call reads the sum of both states and ends
#: with the stack's own final norm, so a stack's first block call does not read the previous
#: call's output.
HRM_TEXT = ArchitectureSpec(
    name="hrm_text",
    model_classes=("HrmTextForCausalLM",),
    layers="model.L_module.layers",
    ln_final="model.H_module.final_norm",
    unrolled=HRM_TEXT_UNROLLED,
    # num_hidden_layers counts the stacks' passes: num_layers_per_stack * H_cycles * (L_cycles + 1).
    tiny_config={"num_layers_per_stack": 1, "H_cycles": 2, "L_cycles": 2, "L_bp_cycles": [1], "num_hidden_layers": 6},
)

SPECS: tuple[ArchitectureSpec, ...] = (DORY, HRM_TEXT)
