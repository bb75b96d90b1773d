"""Path patching: the effect of a sender on chosen receivers, with every other head frozen.

Activation patching measures a component's *total* effect. Path patching (Wang et al. 2022,
"Interpretability in the Wild", the IOI circuit) measures only the part that flows along one
path: from a *sender* (an attention head, or any site such as an MLP's contribution) to
*receivers* (the queries, keys or values of later heads, the residual stream at a later layer,
or the logits). Two runs of the *base* prompts:

1. the sender is patched with its value from the *source* run, every other attention head's
   output (``heads_output``) is frozen to its base value, and the receivers' inputs are
   recorded (MLPs are recomputed, so the path may go through them; ``freeze_mlps=True`` also
   freezes every MLP contribution, leaving only direct paths);
2. the base prompts run again, normally, with only the receivers patched with the values
   recorded in step 1; the metric of this run is the result.

Direction: ``direction="noising"`` (the default, as in the IOI paper) runs the *clean* prompts
and carries the sender's *corrupted* value along the path (clean run, corrupted sender): the
metric falls from its clean value by how much the clean behaviour needs that path.
``direction="denoising"`` runs the *corrupted* prompts and carries the sender's *clean* value
along the path, the direction of `nnterp.interventions.patching.activation_patching`: the
metric rises from its corrupted value by how much the path alone restores.

Nodes name a site, a layer and optionally a head: a `Node`, a ``(layer, head)`` pair (a head's
output, ``heads_output``), or a string ``"site.layer"`` / ``"site.layer.head"``
(``"queries.3.1"``, ``"mlps_output.2"``, ``"layers_input.4"``). Heads are the site's own: key
and value nodes of a grouped-query model name key/value heads (shared by a group of query
heads). Receivers patch every position (where the sender had no effect their recorded value is
the base value); the sender is patched at ``positions`` (default all).

Example:
    >>> from nnterp.interventions.path_patching import path_patching, path_patching_heads
    >>> effect = path_patching(model, clean, corrupted, metric, sender=(0, 3),
    ...                        receivers=["queries.2.1", "keys.2.0"])         # a 0-dim tensor
    >>> grid = path_patching_heads(model, clean, corrupted, metric, receivers="logits")
    >>> grid.shape                                                          # (layers, heads)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nnsight
import torch
from nnterp.cache import (
    LAYER_SITES,
    Site,
    cache_activations,
    canonical_site_name,
    read_site,
    write_site,
)
from nnterp.errors import InvalidInputError
from nnterp.inputs import index_list, normalize_index, prompt_list
from nnterp.interventions.metrics import Metric, require_scalar
from nnterp.interventions.patching import (
    PatchGeometry,
    aligned_length,
    patch_geometry,
    patch_layers,
)
from nnterp.sites import SITES
from nnterp.tracing import free_stopped_forward, single_forward_options, remote_aware
from nnterp.progress import progress_bar

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

DIRECTIONS = ("noising", "denoising")
#: The site frozen head by head in step 1: each head's output before the output projection.
FROZEN_HEADS = "heads_output"
#: Frozen too with ``freeze_mlps=True``.
FROZEN_MLPS = "mlps_output"
#: Whole-model output sites a receiver may be (the logits).
LAST_SITES = tuple(site.name for site in SITES if site.kind == "output")


@dataclass(frozen=True)
class Node:
    """One sender or receiver: a site, a layer, and optionally one of the site's heads.

    Example:
        >>> Node("queries", 2, 1), Node("mlps_output", 0), Node("logits")
    """

    site: str
    layer: int | None = None
    head: int | None = None

    def __str__(self) -> str:
        parts = [self.site] + [
            str(part) for part in (self.layer, self.head) if part is not None
        ]
        return ".".join(parts)


NodeLike = Node | str | tuple[int, int]


def as_node(model: StandardizedTransformer, value: Any, role: str) -> Node:
    """``value`` (a `Node`, ``(layer, head)`` or ``"site.layer[.head]"``) as a checked `Node`
    with non-negative indices.

    Raises:
        InvalidInputError: an unknown or unpatchable site, a head on a site without heads,
            or a value of another type.
        LayerIndexError: a layer or head out of range.
        UnavailableComponentError: the layer lacks the site.
    """
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        value = Node(FROZEN_HEADS, value[0], value[1])
    elif isinstance(value, str):
        parts = value.split(".")
        try:
            numbers = [int(part) for part in parts[1:]]
        except ValueError:
            raise InvalidInputError(
                f"{role} {value!r}: write 'site.layer' or 'site.layer.head' with integers"
            ) from None
        if len(numbers) > 2:
            raise InvalidInputError(
                f"{role} {value!r}: write 'site.layer' or 'site.layer.head'"
            )
        value = Node(parts[0], *numbers)
    if not isinstance(value, Node):
        raise InvalidInputError(
            f"{role} must be a Node, a (layer, head) pair or a string like 'queries.3.1', got {value!r}"
        )
    site = canonical_site_name(value.site)
    if site in LAST_SITES:
        if value.layer is not None or value.head is not None:
            raise InvalidInputError(
                f"{role} {value}: {site} has no layers or heads; write {site!r}."
            )
        return Node(site)
    geometry = patch_geometry(model, site)
    if value.layer is None:
        raise InvalidInputError(f"{role} {value}: give the layer, e.g. '{site}.0'.")
    layer = patch_layers(
        model, site, normalize_index(value.layer, model.num_layers, f"{role} layer")
    )[0]
    head = value.head
    if head is not None:
        if geometry.num_heads is None:
            raise InvalidInputError(
                f"{role} {value}: {site} has no heads; drop the head index."
            )
        head = normalize_index(head, geometry.num_heads, f"{role} head")
    return Node(site, layer, head)


def _nodes(model: StandardizedTransformer, value: Any, role: str) -> list[Node]:
    single = isinstance(value, (Node, str)) or (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    )
    items = [value] if single else list(value)
    if not items:
        raise InvalidInputError(f"{role} is empty: name at least one node.")
    return [as_node(model, item, role) for item in items]


def _site(model: StandardizedTransformer, name: str, layer: int | None) -> Site:
    return Site.parse(name if layer is None else f"{name}.{layer}", model.num_layers)[0]


def _rank(name: str) -> int:
    return LAYER_SITES.index(name)


@dataclass
class _Plan:
    """Everything the two runs need, shared by every sender group of one call."""

    model: StandardizedTransformer
    base: list[str]
    source_values: dict[Site, torch.Tensor]
    frozen_values: dict[Site, torch.Tensor]
    receivers: dict[Site, list[int | None]]
    geometries: dict[str, PatchGeometry]
    positions: list[int] | None
    metric: Metric

    def cells(
        self, name: str, head: int | None, positions: list[int] | None
    ) -> tuple[Any, ...]:
        rows: Any = slice(None) if positions is None else torch.tensor(positions)
        return self.geometries[name].cell(rows, head)


def _exempt_heads(plan: _Plan, node: Node) -> list[int]:
    """Query heads of ``node``'s layer left unfrozen because the sender feeds them (a sender on
    a head's queries, keys, values or pattern); a whole-layer sender exempts every head."""
    heads = plan.geometries[FROZEN_HEADS].num_heads or 0
    if node.head is None:
        return list(range(heads))
    own = plan.geometries[node.site].num_heads or heads
    group = heads // own
    return list(range(node.head * group, (node.head + 1) * group))


def _step_one(
    plan: _Plan, groups: list[list[Node]]
) -> tuple[list[dict[Site, torch.Tensor]], list[float] | None]:
    """Run the base prompts once per sender group (batched), sender patched from the source
    run and other heads frozen; the receivers' values of each copy (or, for the logits, the
    metric of each copy)."""
    model, size, copies = plan.model, len(plan.base), len(groups)
    senders: dict[Site, list[tuple[int, Node]]] = {}
    for copy, group in enumerate(groups):
        for node in group:
            senders.setdefault(_site(model, node.site, node.layer), []).append(
                (copy, node)
            )
    heads_rank = _rank(FROZEN_HEADS)
    exempt: dict[int, list[tuple[int, list[int]]]] = {}
    for copy, group in enumerate(groups):
        for node in group:
            if (
                node.site in LAYER_SITES
                and _rank(node.site) < heads_rank
                and plan.geometries[node.site].num_heads
            ):
                assert node.layer is not None
                exempt.setdefault(node.layer, []).append(
                    (copy, _exempt_heads(plan, node))
                )
    to_logits = any(site.name in LAST_SITES for site in plan.receivers)
    touched = sorted(set(senders) | set(plan.frozen_values) | set(plan.receivers))
    touched = [site for site in touched if site.name not in LAST_SITES]
    if not to_logits:
        # Nothing after the last receiver matters: the forward stops there.
        last = max(plan.receivers)
        touched = [site for site in touched if site <= last]
    heads_axis = plan.geometries[FROZEN_HEADS].head_axis
    assert heads_axis is not None
    recorded: dict[Site, Any] = {}
    metrics: list[Any] = []
    options = single_forward_options(model) if not to_logits else {}
    with model.trace(plan.base * copies, **options) as tracer:
        for site in touched:
            current = read_site(model, site)
            value = None
            if site in plan.frozen_values:
                frozen = plan.frozen_values[site].to(
                    device=current.device, dtype=current.dtype
                )
                value = frozen.repeat(copies, *[1] * (frozen.dim() - 1))
                for copy, heads in (
                    exempt.get(-1 if site.layer is None else site.layer, [])
                    if site.name == FROZEN_HEADS
                    else []
                ):
                    rows = slice(copy * size, (copy + 1) * size)
                    index = (slice(None),) * heads_axis + (heads,)
                    value[rows][index] = current[rows][index]
            if site in senders:
                value = current.clone() if value is None else value
                source = plan.source_values[site].to(
                    device=current.device, dtype=current.dtype
                )
                for copy, node in senders[site]:
                    index = plan.cells(site.name, node.head, plan.positions)
                    value[copy * size : (copy + 1) * size][index] = source[index]
            if value is not None:
                write_site(model, site, value)
            if site in plan.receivers:
                recorded[site] = nnsight.save(current.clone())
        if to_logits:
            logits = model.logits
            for copy in range(copies):
                block = logits[copy * size : (copy + 1) * size]
                metrics.append(
                    nnsight.save(require_scalar(plan.metric(block), "path_patching"))
                )
        else:
            tracer.stop()
    if not to_logits:
        free_stopped_forward()
        per_copy = [
            {
                site: value[copy * size : (copy + 1) * size].detach()
                for site, value in recorded.items()
            }
            for copy in range(copies)
        ]
        return per_copy, None
    return [], [float(value) for value in metrics]


def _step_two(plan: _Plan, recorded: list[dict[Site, torch.Tensor]]) -> list[float]:
    """Run the base prompts once per copy (batched) with only the receivers patched; the metric."""
    model, size, copies = plan.model, len(plan.base), len(recorded)
    values: list[Any] = []
    with model.trace(plan.base * copies):
        for site in sorted(plan.receivers):
            current = read_site(model, site)
            value = current.clone()
            for copy, seen in enumerate(recorded):
                block = seen[site].to(device=current.device, dtype=current.dtype)
                for head in plan.receivers[site]:
                    index = plan.cells(site.name, head, None)
                    value[copy * size : (copy + 1) * size][index] = block[index]
            write_site(model, site, value)
        logits = model.logits
        for copy in range(copies):
            values.append(
                nnsight.save(
                    require_scalar(
                        plan.metric(logits[copy * size : (copy + 1) * size]),
                        "path_patching",
                    )
                )
            )
    return [float(value) for value in values]


def _plan(
    model: StandardizedTransformer,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    sender_groups: list[list[Node]],
    receivers: Any,
    positions: int | Sequence[int] | None,
    direction: str,
    freeze_mlps: bool,
) -> _Plan:
    if direction not in DIRECTIONS:
        raise InvalidInputError(
            f"direction must be 'noising' (clean run, corrupted sender) or 'denoising' (corrupted "
            f"run, clean sender), got {direction!r}"
        )
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    base, source = (
        (clean_list, corrupted_list)
        if direction == "noising"
        else (corrupted_list, clean_list)
    )
    receiver_nodes = _nodes(model, receivers, "receiver")
    frozen_names = [FROZEN_HEADS] + ([FROZEN_MLPS] if freeze_mlps else [])
    if (
        any(node.site in LAST_SITES for node in receiver_nodes)
        and len(receiver_nodes) > 1
    ):
        raise InvalidInputError(
            "the logits are a receiver on their own: give receivers='logits' alone."
        )
    heads_rank = _rank(FROZEN_HEADS)
    for node in receiver_nodes:
        if node.site in frozen_names or (
            node.site in LAYER_SITES
            and patch_geometry(model, node.site).num_heads
            and _rank(node.site) > heads_rank
        ):
            raise InvalidInputError(
                f"receiver {node}: {node.site} is frozen in the first run, so it carries no path; "
                "receive at a head's inputs (queries, keys, values, ...), the residual stream or the logits."
            )
    sender_sites = {
        _site(model, node.site, node.layer) for group in sender_groups for node in group
    }
    receiver_sites: dict[Site, list[int | None]] = {}
    for node in receiver_nodes:
        site = _site(model, node.site, node.layer)
        if site in sender_sites:
            raise InvalidInputError(
                f"receiver {node} is at a sender's site: receive at a later site."
            )
        heads = receiver_sites.setdefault(site, [])
        if node.head is None:
            heads[:] = [None]
        elif None not in heads and node.head not in heads:
            heads.append(node.head)
    frozen_sites = [
        _site(model, name, layer)
        for name in frozen_names
        for layer in patch_layers(model, name, None)
    ]
    base_cache = cache_activations(model, base, [site.key for site in frozen_sites])
    source_cache = cache_activations(
        model, source, sorted({site.key for site in sender_sites})
    )
    names = (
        {node.site for group in sender_groups for node in group}
        | {node.site for node in receiver_nodes if node.site not in LAST_SITES}
        | {FROZEN_HEADS}
    )
    return _Plan(
        model=model,
        base=base,
        source_values={site: source_cache[site.key] for site in sender_sites},
        frozen_values={site: base_cache[site.key] for site in frozen_sites},
        receivers=receiver_sites,
        geometries={name: patch_geometry(model, name) for name in names},
        positions=index_list(positions, length, "positions"),
        metric=metric,
    )


def _run(plan: _Plan, groups: list[list[Node]]) -> list[float]:
    recorded, direct = _step_one(plan, groups)
    return direct if direct is not None else _step_two(plan, recorded)


@torch.no_grad()
@remote_aware
def path_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    sender: NodeLike | Sequence[NodeLike],
    receivers: NodeLike | Sequence[NodeLike],
    *,
    positions: int | Sequence[int] | None = None,
    direction: str = "noising",
    freeze_mlps: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """The metric after patching the path from ``sender`` to ``receivers`` (two-step algorithm
    of the module docstring).

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar`` (see `nnterp.interventions.metrics`).
        sender: one node (``(layer, head)`` for a head's output, ``"mlps_output.2"``,
            ``"queries.1.0"``, a `Node`) or a list of nodes patched together (a group of heads).
        receivers: one node or a list: heads' inputs (``"queries.3.1"``, ``"keys.3"`` for
            every key head, ``"values.3.0"``), residual sites (``"layers_input.4"``,
            ``"mlps_input.2"``, ...), or ``"logits"`` alone (the metric of step 1 itself).
        positions: positions the sender is patched at (default all).
        direction: ``"noising"`` (run clean, sender from corrupted; the IOI convention) or
            ``"denoising"`` (run corrupted, sender from clean).
        freeze_mlps: also freeze every MLP contribution in step 1 (direct paths only).
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        The metric, a 0-dim float32 CPU tensor.

    Raises:
        InvalidInputError: a bad node, direction, or receiver (a frozen site, the sender's
            own site, or the logits with other receivers).
        LayerIndexError: a layer, head or position out of range.
        UnavailableComponentError: a node's layer lacks its site.

    Example:
        >>> # How much of the clean logit difference flows from head 0.3 into 2.1's queries:
        >>> clean_metric = evaluate_metric(model, clean, metric)
        >>> drop = clean_metric - path_patching(model, clean, corrupted, metric, (0, 3), "queries.2.1")
    """
    group = _nodes(model, sender, "sender")
    plan = _plan(
        model,
        clean,
        corrupted,
        metric,
        [group],
        receivers,
        positions,
        direction,
        freeze_mlps,
    )
    return torch.tensor(_run(plan, [group])[0])


@torch.no_grad()
@remote_aware
def path_patching_heads(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    receivers: NodeLike | Sequence[NodeLike],
    *,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    direction: str = "noising",
    freeze_mlps: bool = False,
    batch_size: int = 16,
    progress: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """`path_patching` from every head (each as the sender on its own) to ``receivers``.

    Args:
        model, clean, corrupted, metric, receivers, positions, direction, freeze_mlps: as
            `path_patching`.
        layers: sender layers (default every attention layer).
        heads: sender heads (default all).
        batch_size: senders per batched forward pass.
        progress: show a tqdm progress bar.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        float32 CPU tensor (len(layers), len(heads)): the metric with the path from that head
        to the receivers patched. Senders at or after the receivers reach them by no path:
        their cells equal the base run's metric.

    Example:
        >>> grid = path_patching_heads(model, clean, corrupted, metric, receivers="logits")
        >>> layer, head = divmod(int(grid.argmin()), grid.shape[1])   # the most needed path
    """
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    layer_list = patch_layers(model, FROZEN_HEADS, layers)
    count = patch_geometry(model, FROZEN_HEADS).num_heads or 0
    head_list = index_list(heads, count, "heads") or list(range(count))
    cells = [
        (row, column, [Node(FROZEN_HEADS, layer, head)])
        for row, layer in enumerate(layer_list)
        for column, head in enumerate(head_list)
    ]
    plan = _plan(
        model,
        clean,
        corrupted,
        metric,
        [group for _, _, group in cells],
        receivers,
        positions,
        direction,
        freeze_mlps,
    )
    grid = torch.empty(len(layer_list), len(head_list))
    bar = progress_bar(total=len(cells), desc="path patching", disable=not progress)
    for start in range(0, len(cells), batch_size):
        chunk = cells[start : start + batch_size]
        for (row, column, _), value in zip(
            chunk, _run(plan, [group for _, _, group in chunk])
        ):
            grid[row, column] = value
        bar.update(len(chunk))
    bar.close()
    return grid


__all__ = ["DIRECTIONS", "Node", "as_node", "path_patching", "path_patching_heads"]
