"""nnterp-interventions' CLI commands (entry point ``interventions-commands``): ``nnterp demo``,
and the labelled tables ``nnterp run`` prints for the patching grids."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from nnterp.hookspecs import hookimpl
from nnterp.inputs import prompt_list
from nnterp.tables import format_table

if TYPE_CHECKING:
    import torch
    from nnterp.standardized_transformer import StandardizedTransformer


@hookimpl
def register_commands(register: Callable[..., None]) -> None:
    """Register ``nnterp demo``: logit lens, target tracking and steering on a real model."""
    from nnterp.interventions import demo

    register(
        "demo",
        demo.run,
        help="tour of nnterp on SmolLM2-135M (or --model): logit lens, target tracking, steering, figures",
        add_arguments=demo.add_arguments,
    )


def _grid_table(result: torch.Tensor, columns: list[str], title: str) -> str:
    rows = [
        [str(layer), *(f"{value:+.3f}" for value in row)]
        for layer, row in enumerate(result.tolist())
    ]
    return f"{title}\n{format_table(['layer', *columns], rows, indent='  ')}"


def position_labels(
    model: StandardizedTransformer, prompt: str, width: int
) -> list[str]:
    """Column labels of a (layers, positions) grid: each position and the token there in
    ``prompt`` (tokenized as the trace does); plain positions when the counts differ.

    Example:
        >>> position_labels(model, "The capital", 2)
        ["0 'The'", "1 ' capital'"]
    """
    ids = model.tokenizer(prompt)["input_ids"]
    if len(ids) != width:
        return [str(position) for position in range(width)]
    return [
        f"{position} {model.tokenizer.decode([int(token)])!r}"
        for position, token in enumerate(ids)
    ]


def render_position_grid(
    model: StandardizedTransformer,
    prompts: str | list[str],
    result: torch.Tensor,
    top_k: int = 5,
) -> str:
    """A (layers, positions) patching grid as a table: one row per layer, one column per
    position of the clean prompts, labelled with the first clean prompt's token there
    (``top_k`` is unused).

    Example:
        >>> print(render_position_grid(model, ["A is", "B is"], activation_patching(...)))
        metric after patching each (layer, position) of the clean run into the corrupted run
          layer  0 '<s>'  1 'A'  2 ' is'
          -----  -------  -----  ------
          0      +0.012   +1.000 +0.000
    """
    texts = prompt_list(prompts)
    columns = position_labels(model, texts[0], int(result.shape[-1]))
    return _grid_table(
        result,
        columns,
        "metric after patching each (layer, position) of the clean run into the corrupted run",
    )


def render_head_grid(
    model: StandardizedTransformer,
    prompts: str | list[str],
    result: torch.Tensor,
    top_k: int = 5,
) -> str:
    """A (layers, heads) patching grid as a table: one row per layer, one column per head
    (``top_k`` is unused).

    Example:
        >>> print(render_head_grid(model, ["A is", "B is"], head_patching(...)))
        metric after patching each (layer, head) of the clean run into the corrupted run
          layer  head 0  head 1
          -----  ------  ------
          0      +0.012  +0.500
    """
    columns = [f"head {head}" for head in range(int(result.shape[-1]))]
    return _grid_table(
        result,
        columns,
        "metric after patching each (layer, head) of the clean run into the corrupted run",
    )


__all__ = [
    "position_labels",
    "register_commands",
    "render_head_grid",
    "render_position_grid",
]
