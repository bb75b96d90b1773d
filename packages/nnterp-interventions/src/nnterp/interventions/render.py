"""Plain-text summaries of intervention results, for the ``nnterp run`` command."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from nnterp.inputs import prompt_list

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def render_lens(
    model: StandardizedTransformer, prompts: str | list[str], result: torch.Tensor, top_k: int = 5
) -> str:
    """Per prompt and layer, the ``top_k`` tokens of a (batch, layers, vocab) probability tensor.

    Example:
        >>> prompts = ["The capital of France is"]
        >>> print(render_lens(model, prompts, logit_lens(model, prompts), top_k=3))
        'The capital of France is'
          layer  0: ' the' 0.041 | ' a' 0.032 | ...
    """
    lines = []
    k = min(top_k, result.shape[-1])
    width = len(str(result.shape[1] - 1))
    for prompt, rows in zip(prompt_list(prompts), result):
        lines.append(repr(prompt))
        probs, ids = rows.topk(k, dim=-1)
        for layer, (layer_probs, layer_ids) in enumerate(zip(probs, ids)):
            cells = " | ".join(
                f"{model.tokenizer.decode([int(token)])!r} {float(p):.3f}"
                for p, token in zip(layer_probs, layer_ids)
            )
            lines.append(f"  layer {layer:>{width}}: {cells}")
    return "\n".join(lines)


def render_generations(
    model: StandardizedTransformer,
    prompts: str | list[str],
    result: dict[int, torch.Tensor],
    top_k: int = 5,
) -> str:
    """Per prompt and layer, the decoded text of ``{layer: (batch, new_tokens)}`` generations.

    ``top_k`` is accepted for the CLI's uniform call and unused.
    """
    lines = []
    for row, prompt in enumerate(prompt_list(prompts)):
        lines.append(repr(prompt))
        for layer, ids in result.items():
            text = model.tokenizer.decode(ids[row], skip_special_tokens=True)
            lines.append(f"  layer {layer}: {text!r}")
    return "\n".join(lines)
