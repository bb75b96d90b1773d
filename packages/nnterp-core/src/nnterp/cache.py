"""Collect standardized activations in one call: tensors, named by site, nothing more than asked.

A *site* names an accessor and a layer: ``"layers_output.5"``, ``"attentions_output.3"``,
``"heads_output.2"``, ``"attention_probabilities.0"``; whole-model sites have no layer:
``"token_embeddings"``, ``"logits"``. A per-layer name without a layer (``"mlps_output"``)
means every layer. NNsight's raw module outputs (often tuples) never reach the caller: every
value is the accessor's tensor.

Only the requested sites are kept, sliced to the requested positions, moved to the requested
device and dtype inside the forward, and the forward stops after the last site needed.

Example:
    >>> from nnterp.cache import cache_activations
    >>> cache = cache_activations(model, ["The cat sat", "A dog ran"],
    ...                           ["layers_output.1", "attentions_output", "heads_output.0"],
    ...                           positions=-1)
    >>> cache["layers_output.1"].shape                  # (batch, hidden)
    >>> cache.stack("attentions_output").shape          # (layers, batch, hidden)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.inputs import check_prompts
from nnterp.positions import absolute_positions, as_position_list, traced_attention_mask
from nnterp.sites import FIRST_SITES, LAST_SITES, LAYER_SITES, site_info
from nnterp.tracing import free_stopped_forward, single_forward_options

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

# Site names and their forward order come from the site table.
#: Positions: ``None`` (all), one position, or several.
Positions = int | Sequence[int] | None


@dataclass(frozen=True, order=True)
class Site:
    """One activation: an accessor name and a layer (``None`` for whole-model accessors).

    Sites sort in forward order.

    Example:
        >>> Site.parse("layers_output.-1", num_layers=12)
        Site(order=(11, 12), name='layers_output', layer=11)
    """

    order: tuple[int, int]
    name: str
    layer: int | None

    @property
    def key(self) -> str:
        """The canonical name, e.g. ``"layers_output.5"`` or ``"logits"``."""
        return self.name if self.layer is None else f"{self.name}.{self.layer}"

    @classmethod
    def parse(cls, text: str, num_layers: int) -> list[Site]:
        """The sites named by ``text`` (several for a per-layer name without a layer).

        Raises:
            InvalidInputError: unknown accessor name, or a layer on a whole-model accessor.
            LayerIndexError: a layer out of range.
        """
        if not isinstance(text, str):
            raise InvalidInputError(f"a site must be a string like 'layers_output.3', got {text!r}")
        name, _, layer_text = text.partition(".")
        if name in FIRST_SITES + LAST_SITES:
            if layer_text:
                raise InvalidInputError(f"site {text!r}: {name} has no layers; write {name!r}.")
            return [cls((-1 if name in FIRST_SITES else num_layers, 0), name, None)]
        if name not in LAYER_SITES:
            known = ", ".join(FIRST_SITES + LAYER_SITES + LAST_SITES)
            raise InvalidInputError(f"unknown site {text!r}: the accessor must be one of {known}.")
        rank = LAYER_SITES.index(name)
        if not layer_text:
            return [cls((layer, rank), name, layer) for layer in range(num_layers)]
        try:
            layer = int(layer_text)
        except ValueError:
            raise InvalidInputError(f"site {text!r}: the layer after the dot must be an integer.") from None
        if not -num_layers <= layer < num_layers:
            raise LayerIndexError(
                f"site {text!r}: layer {layer} is out of range for {num_layers} layers "
                f"(use 0..{num_layers - 1} or negative indices)."
            )
        layer %= num_layers
        return [cls((layer, rank), name, layer)]


def parse_sites(model: StandardizedTransformer, sites: str | Iterable[str]) -> list[Site]:
    """``sites`` as distinct `Site` objects in forward order.

    Example:
        >>> [s.key for s in parse_sites(model, ["logits", "mlps_output.0", "layers_input.0"])]
        ['layers_input.0', 'mlps_output.0', 'logits']
    """
    texts = [sites] if isinstance(sites, str) else list(sites)
    if not texts:
        raise InvalidInputError("no sites given: name at least one, e.g. 'layers_output.0'.")
    parsed: set[Site] = set()
    for text in texts:
        parsed.update(Site.parse(text, model.num_layers))
    return sorted(parsed)


def read_site(model: StandardizedTransformer, site: Site) -> torch.Tensor:
    """The value of ``site`` inside a trace (the accessor's tensor)."""
    accessor = getattr(model, site.name)
    return accessor if site.layer is None else accessor[site.layer]


def write_site(model: StandardizedTransformer, site: Site, value: torch.Tensor) -> None:
    """Replace the value of ``site`` inside a trace."""
    if site.layer is None:
        setattr(model, site.name, value)
    else:
        getattr(model, site.name)[site.layer] = value


def position_dim(site: Site) -> int:
    """The dimension of ``site``'s tensor that indexes token positions (queries for
    attention probabilities), from the site table."""
    return site_info(site.name).position_dim


def position_columns(attention_mask: torch.Tensor, positions: Positions) -> torch.Tensor | None:
    """Columns of the padded batch holding ``positions`` of each prompt: (batch, n), or None.

    A position ``p >= 0`` counts from a prompt's first real token, ``p < 0`` from its last one
    (left padding; see `nnterp.positions`), so a batch gives each prompt the same rows as
    running it alone.

    Raises:
        TokenPositionError: a position outside some prompt's tokens.

    Example:
        >>> position_columns(torch.tensor([[1, 1, 1], [0, 1, 1]]), [0, -1])
        tensor([[0, 2],
                [1, 2]])
    """
    if positions is None:
        return None
    wanted = torch.tensor(as_position_list(positions, "positions"))
    return absolute_positions(attention_mask, wanted.expand(attention_mask.shape[0], -1), "positions")


def select_positions(
    value: torch.Tensor, columns: torch.Tensor | None, dim: int, squeeze: bool
) -> torch.Tensor:
    """``value`` restricted to ``columns`` (batch, n) along ``dim``; drop that dim if ``squeeze``."""
    if columns is None:
        return value
    index = columns.to(value.device)
    shape = [index.shape[0]] + [1] * (dim - 1) + [index.shape[1]] + [1] * (value.dim() - dim - 1)
    index = index.view(shape).expand(*value.shape[:dim], index.shape[1], *value.shape[dim + 1 :])
    picked = value.gather(dim, index)
    return picked.squeeze(dim) if squeeze else picked


#: The attention mask of the running trace (ones when the input carries none).
trace_attention_mask = traced_attention_mask


class ActivationCache(dict[str, torch.Tensor]):
    """Activations by site name (``"layers_output.3"``); a ``dict[str, torch.Tensor]``.

    Looking up ``"layers_output.-1"`` finds ``"layers_output.{last}"``.

    Example:
        >>> cache["layers_output.-1"].shape
        >>> cache.stack("layers_output").shape     # (layers, batch, ...)
    """

    def __init__(self, num_layers: int, values: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(values or {})
        self.num_layers = num_layers

    def __missing__(self, key: str) -> torch.Tensor:
        name, _, layer = key.partition(".")
        try:
            canonical = f"{name}.{int(layer) % self.num_layers}"
        except ValueError:
            canonical = key
        if canonical != key and canonical in self:
            return dict.__getitem__(self, canonical)
        raise KeyError(f"{key!r} was not cached; cached sites: {', '.join(self)}")

    def stack(self, name: str) -> torch.Tensor:
        """Every cached layer of accessor ``name``, stacked: (layers cached, ...), by layer."""
        layers = sorted(int(key.partition(".")[2]) for key in self if key.partition(".")[0] == name)
        if not layers:
            raise KeyError(f"no {name!r} site was cached; cached sites: {', '.join(self)}")
        return torch.stack([self[f"{name}.{layer}"] for layer in layers])


@torch.no_grad()
def cache_activations(
    model: StandardizedTransformer,
    prompts: Any,
    sites: str | Iterable[str],
    *,
    positions: Positions = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    **trace_kwargs: Any,
) -> ActivationCache:
    """Run ``prompts`` once and return the activations at ``sites`` as tensors.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch), or anything ``model.trace`` takes.
        sites: site names (see the module docstring), e.g. ``["layers_output.5",
            "attentions_output"]``; any order.
        positions: ``None`` keeps every position; an int keeps one and drops the position
            dimension; a list keeps those (dimension of that length). Counted per prompt,
            whatever the padding: ``-1`` is each prompt's last token, ``0`` its first.
            For ``attention_probabilities`` they select query positions.
        device: where to put each tensor (``None``: leave it where the model computed it).
        dtype: cast to this dtype (``None``: keep the model's).
        **trace_kwargs: passed to ``model.trace``.

    Returns:
        `ActivationCache` mapping each site's canonical name to a tensor, detached: shapes
        are the accessors' ((batch, seq, hidden), (batch, seq, heads, head_dim),
        (batch, heads, q, k), (batch, seq, vocab)) with the position dimension sliced.

    Raises:
        InvalidInputError, LayerIndexError: unknown site, or layer out of range.
        TokenPositionError: a position outside some prompt's tokens.

    Example:
        >>> cache = cache_activations(model, "The capital of France is",
        ...                           ["layers_output", "logits"], positions=[-2, -1],
        ...                           dtype=torch.float16)
        >>> cache["layers_output.0"].shape          # (1, 2, hidden)
    """
    wanted = parse_sites(model, sites)
    if isinstance(prompts, (str, list, tuple)):
        check_prompts(model, prompts)
    squeeze = isinstance(positions, int)
    stop_early = wanted[-1].name not in LAST_SITES
    saved: list[torch.Tensor] = []
    options = {**single_forward_options(model), **trace_kwargs} if stop_early else trace_kwargs
    with model.trace(prompts, **options) as tracer:
        columns = position_columns(trace_attention_mask(model), positions)
        for site in wanted:
            value = select_positions(read_site(model, site), columns, position_dim(site), squeeze)
            value = value.detach().to(device=device or value.device, dtype=dtype or value.dtype)
            saved.append(nnsight.save(value))
        if stop_early:
            tracer.stop()
    if stop_early:
        free_stopped_forward()
    return ActivationCache(model.num_layers, {site.key: value for site, value in zip(wanted, saved)})
