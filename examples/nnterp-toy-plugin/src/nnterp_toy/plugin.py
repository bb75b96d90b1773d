"""The nnterp plugin: one architecture spec and one intervention."""

from __future__ import annotations

import torch
from nnterp.hookspecs import hookimpl
from nnterp.spec import ArchitectureSpec

TOY_SPEC = ArchitectureSpec(
    name="toy",
    model_classes=("ToyForCausalLM",),
    layers="trunk.blocks",
    self_attn="mixer",
    mlp="feedforward",
    ln_final="trunk.final_rms",
    lm_head="readout",
    embed_tokens="trunk.token_table",
    # The mixer computes its probabilities with a plain softmax call.
    attention_probabilities=("torch.softmax",),
    num_heads_keys=("heads",),
    hidden_size_keys=("width",),
    vocab_size_keys=("vocab",),
    num_layers_keys=("depth",),
)


def residual_norms(model, prompts):
    """L2 norm of the residual stream at the last token after every layer: (batch, layers)."""
    norms = []
    with torch.no_grad(), model.trace(prompts):
        for layer in range(model.num_layers):
            norms.append(model.layers_output[layer][:, -1].norm(dim=-1).save())
    return torch.stack(norms, dim=1)


def render_norms(model, prompts, result, top_k=5):
    """One line per prompt with its per-layer norms."""
    prompts = [prompts] if isinstance(prompts, str) else prompts
    return "\n".join(
        f"{prompt!r}: " + " ".join(f"L{i}={value:.2f}" for i, value in enumerate(row.tolist()))
        for prompt, row in zip(prompts, result)
    )


@hookimpl
def register_architectures(register):
    register(TOY_SPEC)


@hookimpl
def register_interventions(register):
    register("residual_norms", residual_norms, description="Per-layer residual-stream norm at the last token",
             render=render_norms)
