"""Plugin registering the circuit analyses (patching, attribution, DLA) as named interventions.

Each is runnable as ``nnterp run NAME --model M --prompt ...``. The patching analyses take
an even number of prompts: the first half clean, the second half corrupted, paired in order;
the metric is the logit difference between the clean and corrupted runs' top next tokens.
``direct_logit_attribution`` attributes each prompt's top next-token logit.

Example:
    $ nnterp run activation_patching --model gpt2 \\
        --prompt "The capital of France is" --prompt "The capital of Italy is"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nnsight
import torch
from nnterp.errors import InvalidInputError
from nnterp.hookspecs import hookimpl
from nnterp.inputs import prompt_list
from nnterp.interventions.commands import render_head_grid, render_position_grid

if TYPE_CHECKING:
    from nnterp.interventions.decomposition import LogitAttribution
    from nnterp.interventions.metrics import Metric
    from nnterp.standardized_transformer import StandardizedTransformer


@torch.no_grad()
def _top_tokens(model: StandardizedTransformer, prompts: list[str]) -> torch.Tensor:
    with model.trace(prompts):
        top = nnsight.save(model.next_token_probs.argmax(dim=-1))
    return top.cpu()


def clean_corrupted_pairs(model: StandardizedTransformer, prompts: str | list[str]) -> tuple[list[str], list[str], Metric]:
    """Split ``prompts`` into clean and corrupted halves, with the default metric: the logit
    difference between each clean prompt's top next token and its corrupted partner's.

    Example:
        >>> clean, corrupted, metric = clean_corrupted_pairs(model, ["A is", "B is"])
    """
    from nnterp.interventions.metrics import logit_difference

    texts = prompt_list(prompts)
    if len(texts) < 2 or len(texts) % 2:
        raise InvalidInputError(
            f"patching takes clean prompts then as many corrupted prompts; got {len(texts)} prompts"
        )
    half = len(texts) // 2
    clean, corrupted = texts[:half], texts[half:]
    metric = logit_difference(_top_tokens(model, clean), _top_tokens(model, corrupted))
    return clean, corrupted, metric


def run_activation_patching(model: StandardizedTransformer, prompts: str | list[str]) -> torch.Tensor:
    """CLI form of `activation_patching` on the residual stream: (layers, positions)."""
    from nnterp.interventions.patching import activation_patching

    clean, corrupted, metric = clean_corrupted_pairs(model, prompts)
    return activation_patching(model, clean, corrupted, metric)


def run_head_patching(model: StandardizedTransformer, prompts: str | list[str]) -> torch.Tensor:
    """CLI form of `head_patching`: (layers, heads)."""
    from nnterp.interventions.patching import head_patching

    clean, corrupted, metric = clean_corrupted_pairs(model, prompts)
    return head_patching(model, clean, corrupted, metric)


def run_attribution_patching(model: StandardizedTransformer, prompts: str | list[str]) -> torch.Tensor:
    """CLI form of `attribution_patching` on the residual stream: (layers, positions)."""
    from nnterp.interventions.attribution import attribution_patching

    clean, corrupted, metric = clean_corrupted_pairs(model, prompts)
    return attribution_patching(model, clean, corrupted, metric)


def run_logit_attribution(model: StandardizedTransformer, prompts: str | list[str]) -> LogitAttribution:
    """CLI form of `logit_attribution` of each prompt's top next token."""
    from nnterp.interventions.decomposition import logit_attribution

    texts = prompt_list(prompts)
    return logit_attribution(model, texts, _top_tokens(model, texts))


def render_attribution(
    model: StandardizedTransformer, prompts: str | list[str], result: LogitAttribution, top_k: int = 5
) -> str:
    """Per prompt, the ``top_k`` components adding most to the attributed logit."""
    lines = []
    for row, prompt in enumerate(prompt_list(prompts)):
        lines.append(f"{prompt!r}: logit {float(result.total[row]):.3f}")
        values = result.contributions[row]
        for index in values.abs().argsort(descending=True)[:top_k].tolist():
            lines.append(f"  {result.labels[index]:>10}: {float(values[index]):+.3f}")
    return "\n".join(lines)


ANALYSES: list[tuple[str, Callable[..., Any], str, Callable[..., str]]] = [
    (
        "activation_patching",
        run_activation_patching,
        "patch each (layer, position) of the clean residual stream into the corrupted run; logit-difference grid",
        render_position_grid,
    ),
    (
        "head_patching",
        run_head_patching,
        "patch each attention head's clean output into the corrupted run; (layers, heads) logit-difference grid",
        render_head_grid,
    ),
    (
        "attribution_patching",
        run_attribution_patching,
        "gradient x activation-difference estimate of activation_patching, from one backward pass",
        render_position_grid,
    ),
    (
        "direct_logit_attribution",
        run_logit_attribution,
        "each layer's attention and MLP contribution to the top next-token logit (final norm frozen)",
        render_attribution,
    ),
]


@hookimpl
def register_interventions(register: Callable[..., None]) -> None:
    """Register the patching, attribution and direct-logit-attribution analyses."""
    for name, function, description, render in ANALYSES:
        register(name, function, description=description, render=render)
