"""Activation patching: run corrupted prompts with clean activations patched in, and measure.

Clean and corrupted prompts are compared position by position, so every prompt of both
batches must have the same number of tokens. A *site* is a standardized accessor name
(`nnterp.cache`): residual-like sites (``"layers_output"``, ``"layers_input"``,
``"attentions_output"``, ``"mlps_output"``, ...) give a (layers, positions) grid, one patched
run per cell; per-head sites (``"heads_output"``, ``"queries"``, ``"keys"``, ``"values"``)
give a (layers, heads) grid, patching one head at the chosen positions (all by default).

The metric is computed on the logits of each patched run (see
`nnterp.interventions.metrics`). Patching a site's whole clean activation at every position
reproduces the clean run downstream of it: `run_with_patches` shows it.

Example:
    >>> from nnterp.interventions.patching import activation_patching
    >>> from nnterp.interventions.metrics import logit_difference
    >>> clean, corrupted = ["The capital of France is"], ["The capital of Italy is"]
    >>> metric = logit_difference(paris_id, rome_id)
    >>> grid = activation_patching(model, clean, corrupted, metric)       # (layers, seq)
    >>> heads = activation_patching(model, clean, corrupted, metric, site="heads_output")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import nnsight
import torch
from nnterp.cache import (
    LAYER_SITES,
    Site,
    cache_activations,
    parse_sites,
    read_site,
    write_site,
)
from nnterp.errors import InvalidInputError
from nnterp.heads import HEAD_SITES
from nnterp.inputs import check_prompts, index_list, layer_indices, prompt_list
from nnterp.interventions.metrics import Metric, require_scalar
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Sites patched position by position.
POSITION_SITES = tuple(
    name for name in LAYER_SITES if name not in HEAD_SITES and name != "attention_probabilities"
)


def aligned_length(model: StandardizedTransformer, clean: list[str], corrupted: list[str]) -> int:
    """The common token count of every clean and corrupted prompt.

    Raises:
        InvalidInputError: different batch sizes, or prompts of different token counts.
    """
    check_prompts(model, clean)
    check_prompts(model, corrupted)
    if len(clean) != len(corrupted):
        raise InvalidInputError(
            f"{len(clean)} clean prompts but {len(corrupted)} corrupted ones: pair each clean "
            "prompt with one corrupted prompt."
        )
    lengths = {len(model.tokenizer(text)["input_ids"]) for text in clean + corrupted}
    if len(lengths) != 1:
        raise InvalidInputError(
            f"patching compares positions, but the prompts tokenize to {sorted(lengths)} tokens: "
            "make every clean and corrupted prompt the same number of tokens (e.g. swap one "
            "word for a word of the same token count)."
        )
    return lengths.pop()


def site_kind(site: str) -> str:
    """``"position"`` or ``"head"`` for a patchable accessor name.

    Raises:
        InvalidInputError: a name that cannot be patched here.
    """
    if site in POSITION_SITES:
        return "position"
    if site in HEAD_SITES:
        return "head"
    raise InvalidInputError(
        f"cannot patch site {site!r}: use one of {', '.join(POSITION_SITES + HEAD_SITES)}"
    )


#: Per-head sites whose tensors have the key/value heads (fewer than the query heads under
#: grouped-query attention); the others have the query heads.
KV_HEAD_SITES = ("keys", "values", "keys_rotated")


def head_count(model: StandardizedTransformer, site: str) -> int:
    """Number of heads of a per-head site: the key/value heads for ``keys``, ``values`` and
    ``keys_rotated``, the query heads for ``queries``, ``queries_rotated`` and ``heads_output``.

    Example:
        >>> head_count(model, "keys_rotated"), head_count(model, "queries")   # a GQA model
        (2, 4)
    """
    layout = getattr(model, site).layout
    return layout.num_kv_heads if site in KV_HEAD_SITES else layout.num_heads


@torch.no_grad()
def run_with_patches(
    model: StandardizedTransformer,
    prompts: Any,
    patches: Mapping[str, torch.Tensor],
    metric: Metric | None = None,
) -> torch.Tensor:
    """Run ``prompts`` with the activations at some sites replaced by given tensors.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list.
        patches: ``{site: value}``, e.g. ``{"layers_output.3": clean_h3}``; each value has
            the accessor's full shape for this batch.
        metric: if given, return ``metric(logits)`` instead of the logits.

    Returns:
        The (batch, seq, vocab) logits, or the metric's 0-dim value (float32, CPU).

    Example:
        >>> clean = cache_activations(model, "The capital of France is", "layers_output.2")
        >>> logits = run_with_patches(model, "The capital of Italy is",
        ...                           {"layers_output.2": clean["layers_output.2"]})
    """
    sites: list[tuple[Site, torch.Tensor]] = []
    for key, value in patches.items():
        parsed = parse_sites(model, key)
        if len(parsed) != 1:
            raise InvalidInputError(f"patch site {key!r} names several layers: give one, e.g. '{key}.0'")
        sites.append((parsed[0], value))
    sites.sort(key=lambda item: item[0])
    with model.trace(prompts):
        for site, value in sites:
            current = read_site(model, site)
            if tuple(current.shape) != tuple(value.shape):
                raise InvalidInputError(
                    f"patch for {site.key} has shape {tuple(value.shape)} but the activation has "
                    f"shape {tuple(current.shape)}."
                )
            write_site(model, site, value.to(device=current.device, dtype=current.dtype))
        logits = model.logits
        result = nnsight.save(logits if metric is None else require_scalar(metric(logits), "run_with_patches"))
    return result.detach().float().cpu() if metric is not None else result.detach()


def _patched_metrics(
    model: StandardizedTransformer,
    corrupted: list[str],
    site: str,
    jobs: list[tuple[int, tuple[Any, ...]]],
    clean_values: Mapping[int, torch.Tensor],
    metric: Metric,
) -> list[float]:
    """One forward over ``len(jobs)`` copies of ``corrupted``; copy ``k`` gets the clean
    values at ``jobs[k] = (layer, cells)``. Returns the metric of each copy."""
    size = len(corrupted)
    layers = sorted({layer for layer, _ in jobs})
    values: list[torch.Tensor] = []
    with model.trace(corrupted * len(jobs)):
        accessor = getattr(model, site)
        for layer in layers:
            patched = accessor[layer].clone()
            clean_value = clean_values[layer].to(device=patched.device, dtype=patched.dtype)
            for copy, (job_layer, cells) in enumerate(jobs):
                if job_layer == layer:
                    block = patched[copy * size : (copy + 1) * size]
                    block[cells] = clean_value[cells]
            accessor[layer] = patched
        logits = model.logits
        for copy in range(len(jobs)):
            block_logits = logits[copy * size : (copy + 1) * size]
            values.append(nnsight.save(require_scalar(metric(block_logits), "activation_patching")))
    return [float(value) for value in values]


@torch.no_grad()
def activation_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    *,
    site: str = "layers_output",
    layers: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """Patch clean activations into the corrupted run, one cell at a time; the metric grid.

    For a residual-like ``site``: for each layer and position, the corrupted prompts run with
    that one (layer, position) activation replaced by the clean one (every prompt of the
    batch at once). For a per-head ``site``: for each layer and head, that head's clean
    values are patched at ``positions`` (default: all).

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar`` (see `nnterp.interventions.metrics`).
        site: the accessor patched (default: the residual stream after each layer).
        layers: layers to sweep (default all).
        positions: positions to sweep (residual-like sites) or to patch together (per-head
            sites); default all. Negative indices count from the end.
        heads: heads to sweep (per-head sites; default all).
        batch_size: patched runs per forward pass (the corrupted batch is repeated this many
            times, each copy patched at its own cell); lower it to save memory.
        progress: show a tqdm progress bar.

    Returns:
        float32 CPU tensor: (len(layers), len(positions)) for residual-like sites,
        (len(layers), len(heads)) for per-head sites; entry = metric after the patch.

    Example:
        >>> grid = activation_patching(model, "The capital of France is",
        ...                            "The capital of Italy is", logit_difference(paris, rome))
        >>> grid[-1, -1]     # the last layer's last position restores the clean metric
    """
    kind = site_kind(site)
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    layer_list = layer_indices(model.num_layers, layers)
    position_list = index_list(positions, length, "positions")
    clean_cache = cache_activations(model, clean_list, [f"{site}.{layer}" for layer in layer_list])
    clean_values = {layer: clean_cache[f"{site}.{layer}"] for layer in layer_list}
    if kind == "position":
        columns = position_list or list(range(length))
        grid = torch.empty(len(layer_list), len(columns))
        cells_of: list[tuple[Any, ...]] = [(slice(None), column) for column in columns]
    else:
        head_list = index_list(heads, head_count(model, site), "heads") or list(range(head_count(model, site)))
        rows: Any = slice(None) if position_list is None else torch.tensor(position_list)
        grid = torch.empty(len(layer_list), len(head_list))
        cells_of = [(slice(None), rows, head) for head in head_list]
    jobs = [(row, column, layer, cells) for row, layer in enumerate(layer_list) for column, cells in enumerate(cells_of)]
    bar = tqdm(total=len(jobs), desc=f"patching {site}", disable=not progress)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        metrics = _patched_metrics(
            model, corrupted_list, site, [(layer, cells) for _, _, layer, cells in chunk], clean_values, metric
        )
        for (row, column, _, _), value in zip(chunk, metrics):
            grid[row, column] = value
        bar.update(len(chunk))
    bar.close()
    return grid


def head_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    *,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """`activation_patching` of each attention head's output (``site="heads_output"``).

    Returns:
        float32 CPU tensor (len(layers), len(heads)): the metric with that head's clean output
        patched into the corrupted run at ``positions`` (default all).

    Example:
        >>> grid = head_patching(model, clean, corrupted, logit_difference(paris, rome))
        >>> layer, head = divmod(int(grid.argmax()), grid.shape[1])
    """
    return activation_patching(
        model,
        clean,
        corrupted,
        metric,
        site="heads_output",
        layers=layers,
        positions=positions,
        heads=heads,
        batch_size=batch_size,
        progress=progress,
    )
