"""Activation patching: run corrupted prompts with clean activations patched in, and measure.

Clean and corrupted prompts are compared position by position, so every prompt of both
batches must have the same number of tokens. A *site* is a standardized accessor name
(`nnterp.cache`, `nnterp.sites`); how it is swept follows from its shape in the site table:

- sites without a head dimension (``"layers_output"``, ``"layers_input"``,
  ``"attentions_output"``, ``"mlps_output"``, ...) give a (layers, positions) grid, one
  patched run per cell;
- sites with a head dimension (``"heads_output"``, ``"queries"``, ``"keys"``, ``"values"``,
  ``"queries_rotated"``, ``"keys_rotated"``, ``"attention_probabilities"``, ...) give a
  (layers, heads) grid, patching one head at the chosen positions (all by default), or with
  ``by_position=True`` a (layers, positions, heads) grid, one head at one position per cell.
  The head axis is the site's own: key/value sites of a grouped-query model have its
  key/value heads. For ``attention_probabilities`` positions are query positions: a cell
  patches that head's attention pattern (every key) at those queries.

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
    >>> cells = activation_patching(model, clean, corrupted, metric, site="keys", by_position=True)
    >>> cells.shape                                     # (layers, seq, kv_heads)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.heads import attention_layout
from nnterp.inputs import check_prompts, index_list, layer_indices, prompt_list
from nnterp.interventions.metrics import Metric, require_scalar
from nnterp.sites import SITES, site_info
from nnterp.tracing import remote_aware
from nnterp.progress import progress_bar

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Names of the dimensions that count heads in the site table's shapes.
HEAD_DIMS = ("heads", "kv_heads")


def _patchable(name: str) -> bool:
    info = site_info(name)
    writable = getattr(info, "writable", True)
    return info.per_layer and writable and ("seq" in info.shape or "query" in info.shape)


def _has_heads(name: str) -> bool:
    return any(dim in site_info(name).shape for dim in HEAD_DIMS)


#: Sites patched position by position (no head dimension).
POSITION_SITES = tuple(name for name in LAYER_SITES if _patchable(name) and not _has_heads(name))
#: Sites patched head by head (the site table gives them a head dimension).
HEAD_PATCH_SITES = tuple(name for name in LAYER_SITES if _patchable(name) and _has_heads(name))
#: Per-head sites whose tensors have the key/value heads (fewer than the query heads under
#: grouped-query attention); the others have the query heads.
KV_HEAD_SITES = tuple(site.name for site in SITES if "kv_heads" in site.shape)


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
    """``"position"`` or ``"head"`` for a patchable accessor name (from its shape in the site
    table: a head dimension makes it ``"head"``).

    Raises:
        InvalidInputError: a name that cannot be patched here (not per layer, without
            positions, or read-only).
    """
    if site in POSITION_SITES:
        return "position"
    if site in HEAD_PATCH_SITES:
        return "head"
    raise InvalidInputError(
        f"cannot patch site {site!r}: use one of {', '.join(POSITION_SITES + HEAD_PATCH_SITES)}"
    )


def head_count(model: StandardizedTransformer, site: str) -> int:
    """Number of heads of a per-head site: the key/value heads for sites shaped with
    ``kv_heads`` (``keys``, ``values``, ``keys_rotated``), the query heads for the others
    (``queries``, ``queries_rotated``, ``heads_output``, ``attention_probabilities``).

    Example:
        >>> head_count(model, "keys_rotated"), head_count(model, "queries")   # a GQA model
        (2, 4)
    """
    layout = attention_layout(model)
    return layout.num_kv_heads if site in KV_HEAD_SITES else layout.num_heads


@dataclass(frozen=True)
class PatchGeometry:
    """How a site's tensor is cut into patch cells.

    Attributes:
        site: the site name.
        kind: ``"position"`` or ``"head"`` (see `site_kind`).
        position_axis: the dimension of token (query) positions.
        head_axis: the dimension of heads, or ``None``.
        num_heads: the size of that dimension for this model, or ``None``.
    """

    site: str
    kind: str
    position_axis: int
    head_axis: int | None
    num_heads: int | None

    def cell(self, position: Any, head: int | None) -> tuple[Any, ...]:
        """The index of one cell in a (batch, ...) tensor of the site: every prompt, the
        given position(s) (an int, a tensor, or ``slice(None)``) and head."""
        index: list[Any] = [slice(None)] * (max(self.position_axis, self.head_axis or 0) + 1)
        index[self.position_axis] = position
        if self.head_axis is not None and head is not None:
            index[self.head_axis] = head
        return tuple(index)

    def reduce(self, effect: torch.Tensor, by_position: bool) -> torch.Tensor:
        """Sum a per-element (batch, ...) tensor of the site into the grid's cells:
        (positions,) for position sites, (heads,) or (positions, heads) for head sites."""
        if self.head_axis is None:
            return effect.movedim(self.position_axis, 0).flatten(1).sum(1)
        if not by_position:
            return effect.movedim(self.head_axis, 0).flatten(1).sum(1)
        return effect.movedim((self.position_axis, self.head_axis), (0, 1)).flatten(2).sum(2)


def patch_geometry(model: StandardizedTransformer, site: str) -> PatchGeometry:
    """The `PatchGeometry` of ``site`` on ``model``, from the site table.

    Raises:
        InvalidInputError: the site cannot be patched (not per layer, or no positions).

    Example:
        >>> patch_geometry(model, "attention_probabilities")
        PatchGeometry(site='attention_probabilities', kind='head', position_axis=2, head_axis=1, num_heads=4)
    """
    kind = site_kind(site)
    info = site_info(site)
    head_axis = next((info.shape.index(dim) for dim in HEAD_DIMS if dim in info.shape), None)
    return PatchGeometry(
        site=site,
        kind=kind,
        position_axis=info.position_dim,
        head_axis=head_axis,
        num_heads=head_count(model, site) if head_axis is not None else None,
    )


def available_layers(model: StandardizedTransformer, site: str) -> dict[int, str | None]:
    """Per layer, ``None`` where ``model`` offers ``site``, else the reason it does not
    (`model.support()`).

    Example:
        >>> available_layers(model, "attentions_output")      # a hybrid
        {0: 'layer 0 is a mamba mixer, not softmax attention ...', 1: None}
    """
    reason = model.support().get(site)
    return {
        layer: reason.get(layer) if isinstance(reason, dict) else reason for layer in range(model.num_layers)
    }


def patch_layers(model: StandardizedTransformer, site: str, layers: int | Sequence[int] | None) -> list[int]:
    """The layers to patch ``site`` at: those given (each must offer the site), or by default
    every layer that offers it.

    Raises:
        LayerIndexError: a layer out of range.
        UnavailableComponentError: a given layer (or, by default, every layer) lacks the site.
    """
    reasons = available_layers(model, site)
    if layers is None:
        chosen = [layer for layer, why in reasons.items() if why is None]
        if not chosen:
            raise UnavailableComponentError(f"{model.spec.name} has no {site}: {reasons[0]}")
        return chosen
    chosen = layer_indices(model.num_layers, layers)
    for layer in chosen:
        if reasons[layer] is not None:
            raise UnavailableComponentError(f"{model.spec.name} has no {site} at layer {layer}: {reasons[layer]}")
    return chosen


@torch.no_grad()
@remote_aware
def run_with_patches(
    model: StandardizedTransformer,
    prompts: Any,
    patches: Mapping[str, torch.Tensor],
    metric: Metric | None = None,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """Run ``prompts`` with the activations at some sites replaced by given tensors.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list.
        patches: ``{site: value}``, e.g. ``{"layers_output.3": clean_h3}``; each value has
            the accessor's full shape for this batch.
        metric: if given, return ``metric(logits)`` instead of the logits.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

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
@remote_aware
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
    by_position: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """Patch clean activations into the corrupted run, one cell at a time; the metric grid.

    For a ``site`` without heads: for each layer and position, the corrupted prompts run with
    that one (layer, position) activation replaced by the clean one (every prompt of the
    batch at once). For a per-head ``site``: for each layer and head, that head's clean
    values are patched at ``positions`` (default: all), or with ``by_position`` at each
    position on its own.

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar`` (see `nnterp.interventions.metrics`).
        site: the accessor patched (default: the residual stream after each layer); any
            per-layer site of the site table (`POSITION_SITES`, `HEAD_PATCH_SITES`).
        layers: layers to sweep (default: every layer that has the site).
        positions: positions to sweep (sites without heads, or ``by_position``) or to patch
            together (per-head sites); default all. Negative indices count from the end.
            Query positions for attention patterns.
        heads: heads to sweep (per-head sites only; default all of the site's heads).
        by_position: per-head sites: sweep positions too, giving (layers, positions, heads).
        batch_size: patched runs per forward pass (the corrupted batch is repeated this many
            times, each copy patched at its own cell); lower it to save memory.
        progress: show a tqdm progress bar.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        float32 CPU tensor: (len(layers), len(positions)) for sites without heads;
        (len(layers), len(heads)) for per-head sites, or (len(layers), len(positions),
        len(heads)) with ``by_position``; entry = metric after the patch.

    Raises:
        InvalidInputError: unpatchable site, misaligned prompts, ``heads`` on a site
            without heads, or a bad ``batch_size``.
        LayerIndexError: a layer, position or head out of range.
        UnavailableComponentError: a requested layer lacks the site.

    Example:
        >>> grid = activation_patching(model, "The capital of France is",
        ...                            "The capital of Italy is", logit_difference(paris, rome))
        >>> grid[-1, -1]     # the last layer's last position restores the clean metric
        >>> cells = activation_patching(model, clean, corrupted, metric, site="heads_output",
        ...                             by_position=True)      # (layers, seq, heads)
    """
    geometry = patch_geometry(model, site)
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    if heads is not None and geometry.head_axis is None:
        raise InvalidInputError(f"heads= applies to per-head sites; {site} has no head dimension.")
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    layer_list = patch_layers(model, site, layers)
    position_list = index_list(positions, length, "positions")
    clean_cache = cache_activations(model, clean_list, [f"{site}.{layer}" for layer in layer_list])
    clean_values = {layer: clean_cache[f"{site}.{layer}"] for layer in layer_list}
    cells, cell_shape = patch_cells(geometry, length, position_list, heads, by_position)
    grid = torch.empty(len(layer_list), *cell_shape)
    jobs = [(row, where, layer, index) for row, layer in enumerate(layer_list) for where, index in cells]
    bar = progress_bar(total=len(jobs), desc=f"patching {site}", disable=not progress)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        metrics = _patched_metrics(
            model, corrupted_list, site, [(layer, index) for _, _, layer, index in chunk], clean_values, metric
        )
        for (row, where, _, _), value in zip(chunk, metrics):
            cell = (row, *where)
            grid[cell] = value
        bar.update(len(chunk))
    bar.close()
    return grid


def patch_cells(
    geometry: PatchGeometry,
    length: int,
    positions: list[int] | None,
    heads: int | Sequence[int] | None,
    by_position: bool,
) -> tuple[list[tuple[tuple[int, ...], tuple[Any, ...]]], tuple[int, ...]]:
    """The cells of one layer's sweep: ``[(grid index, tensor index), ...]`` and the grid's
    shape per layer ((positions,), (heads,) or (positions, heads))."""
    columns = positions or list(range(length))
    if geometry.head_axis is None:
        return [((i,), geometry.cell(column, None)) for i, column in enumerate(columns)], (len(columns),)
    assert geometry.num_heads is not None
    head_list = index_list(heads, geometry.num_heads, "heads") or list(range(geometry.num_heads))
    cells: list[tuple[tuple[int, ...], tuple[Any, ...]]]
    if by_position:
        cells = [
            ((i, j), geometry.cell(column, head))
            for i, column in enumerate(columns)
            for j, head in enumerate(head_list)
        ]
        return cells, (len(columns), len(head_list))
    rows: Any = slice(None) if positions is None else torch.tensor(positions)
    cells = [((j,), geometry.cell(rows, head)) for j, head in enumerate(head_list)]
    return cells, (len(head_list),)


@remote_aware
def head_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    *,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    by_position: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """`activation_patching` of each attention head's output (``site="heads_output"``).

    Returns:
        float32 CPU tensor (len(layers), len(heads)): the metric with that head's clean output
        patched into the corrupted run at ``positions`` (default all); with ``by_position``
        (len(layers), len(positions), len(heads)).

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
        by_position=by_position,
        batch_size=batch_size,
        progress=progress,
    )


@remote_aware
def attention_pattern_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    *,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    by_position: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """`activation_patching` of each head's attention pattern (``site="attention_probabilities"``).

    A cell replaces one head's attention probabilities (over every key) at the query
    ``positions`` (default all) with the clean run's; the corrupted values and everything else
    stay. Needs a model loaded with ``enable_attention_probs=True``.

    Returns:
        float32 CPU tensor (len(layers), len(heads)), or (len(layers), len(positions),
        len(heads)) with ``by_position`` (positions are query positions).

    Example:
        >>> grid = attention_pattern_patching(model, clean, corrupted, metric)
        >>> per_query = attention_pattern_patching(model, clean, corrupted, metric, by_position=True)
    """
    return activation_patching(
        model,
        clean,
        corrupted,
        metric,
        site="attention_probabilities",
        layers=layers,
        positions=positions,
        heads=heads,
        by_position=by_position,
        batch_size=batch_size,
        progress=progress,
    )
