"""Collect standardized activations in one call: tensors, named by site, nothing more than asked.

A *site* names an accessor and a layer: ``"layers_output.5"``, ``"attentions_output.3"``,
``"heads_output.2"``, ``"attention_probabilities.0"``; whole-model sites have no layer:
``"token_embeddings"``, ``"logits"``. A per-layer name without a layer (``"mlps_output"``)
means every layer. NNsight's raw module outputs (often tuples) never reach the caller: every
value is the accessor's tensor.

Sites can also be chosen by a filter: a glob (``"layers_*"``, ``"*_output.3"``) or a callable
``(name) -> bool`` over the canonical names of every site the model offers (`model.support()`).

Only the requested sites are kept, sliced to the requested positions, moved to the requested
device and dtype inside the forward, and the forward stops after the last site needed.

A cache is looked up by name (``cache["layers_output.3"]``), by site and layer
(``cache["layers_output", 3]``, negative layers count from the end) or by the
TransformerLens name of the same value (``cache["resid_post", 3]``, ``cache["z", 0]``).

Example:
    >>> from nnterp.cache import cache_activations
    >>> cache = cache_activations(model, ["The cat sat", "A dog ran"],
    ...                           ["layers_output.1", "attentions_output", "heads_output.0"],
    ...                           positions=-1)
    >>> cache["layers_output.1"].shape                  # (batch, hidden)
    >>> cache["layers_output", -1].shape                # the same tensor
    >>> cache.stack("attentions_output").shape          # (layers, batch, hidden)
    >>> every_output = cache_activations(model, "Hi", "*_output.1")   # a glob
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nnsight
import torch

from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.inputs import check_prompts, normalize_index
from nnterp.positions import absolute_positions, as_position_list, traced_attention_mask
from nnterp.sites import FIRST_SITES, LAST_SITES, LAYER_SITES, SITES, site_info
from nnterp.tracing import free_stopped_forward, single_forward_options, remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

# Site names and their forward order come from the site table.
#: Positions: ``None`` (all), one position, several, or one list per prompt.
Positions = int | Sequence[int] | Sequence[Sequence[int]] | None
#: Which sites to cache: a name or glob, several, or a filter ``(name) -> bool``.
SiteSelection = str | Iterable[str | Callable[[str], bool]] | Callable[[str], bool]

#: TransformerLens hook names (``blocks.L.hook_<name>`` without the prefix) of the standard
#: sites that hold the same value; each maps to candidate site names, the first one in the
#: site table wins.
TRANSFORMER_LENS_NAMES: dict[str, tuple[str, ...]] = {
    "embed": ("token_embeddings",),
    "resid_pre": ("layers_input",),
    "q": ("queries",),
    "k": ("keys",),
    "v": ("values",),
    "rot_q": ("queries_rotated",),
    "rot_k": ("keys_rotated",),
    "attn_scores": ("attention_scores",),
    "pattern": ("attention_probabilities",),
    "z": ("heads_output",),
    "result": ("heads_result",),
    "attn_out": ("attentions_output",),
    "resid_mid": ("resid_mid", "layers_mid"),
    "post": ("mlps_hidden",),
    "mlp_out": ("mlps_output",),
    "resid_post": ("layers_output",),
    "scale": ("ln_final_scale",),
}


class SiteKeyError(InvalidInputError, KeyError):
    """A cache key that names no standard site (an `InvalidInputError` and a ``KeyError``)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def canonical_site_name(name: str) -> str:
    """The standard site ``name`` means: itself, or the site of a TransformerLens hook name.

    Raises:
        SiteKeyError: neither a standard site nor a known TransformerLens name.

    Example:
        >>> canonical_site_name("resid_post"), canonical_site_name("mlps_output")
        ('layers_output', 'mlps_output')
    """
    known = {site.name for site in SITES}
    if name in known:
        return name
    for candidate in TRANSFORMER_LENS_NAMES.get(name, ()):
        if candidate in known:
            return candidate
    aliases = ", ".join(alias for alias in TRANSFORMER_LENS_NAMES if canonical_or_none(alias, known))
    raise SiteKeyError(
        f"unknown site {name!r}: use a standard site ({', '.join(sorted(known))}) or a "
        f"TransformerLens name ({aliases})."
    )


def canonical_or_none(name: str, known: set[str]) -> str | None:
    """The standard site of TransformerLens name ``name`` among ``known``, or ``None``."""
    return next((candidate for candidate in TRANSFORMER_LENS_NAMES.get(name, ()) if candidate in known), None)


def site_key(key: Any, num_layers: int) -> str:
    """The canonical cache key of ``key``: ``"layers_output.3"``, ``("layers_output", 3)``,
    ``("resid_post", -1)``, ``"logits"`` or ``("logits", None)``.

    Raises:
        SiteKeyError: an unknown site name, a per-layer site without a layer, a layer on a
            whole-model site, or a key of another type.
        LayerIndexError: a layer out of range.

    Example:
        >>> site_key(("resid_post", -1), num_layers=12)
        'layers_output.11'
    """
    if isinstance(key, tuple) and len(key) in (1, 2):
        name, layer = key[0], key[1] if len(key) == 2 else None
    elif isinstance(key, str):
        name, dot, text = key.partition(".")
        layer = text if dot else None
    else:
        raise SiteKeyError(
            f"a cache key is a site name ('layers_output.3') or a (site, layer) pair, got {key!r}"
        )
    if not isinstance(name, str):
        raise SiteKeyError(f"a cache key's site must be a name like 'layers_output', got {name!r}")
    info = site_info(canonical_site_name(name))
    if not info.per_layer:
        if layer is not None:
            raise SiteKeyError(f"{info.name} has no layers: look it up as {info.name!r}.")
        return info.name
    if layer is None:
        raise SiteKeyError(
            f"{info.name} has one value per layer: give the layer ({info.name!r}, 3), or "
            f"stack every cached layer with cache.stack({info.name!r})."
        )
    if isinstance(layer, str):
        try:
            layer = int(layer)
        except ValueError:
            raise SiteKeyError(f"site {key!r}: the layer after the dot must be an integer.") from None
    return f"{info.name}.{normalize_index(layer, num_layers, f'{info.name} layer')}"


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
            order = (-1, FIRST_SITES.index(name)) if name in FIRST_SITES else (num_layers, LAST_SITES.index(name))
            return [cls(order, name, None)]
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


def available_sites(model: StandardizedTransformer) -> list[Site]:
    """Every site ``model`` offers (each layer of per-layer sites), in forward order: the
    sites `model.support()` reports available.

    Example:
        >>> [site.key for site in available_sites(model)][:3]
        ['token_embeddings', 'layers_input.0', 'mixers_input.0']
    """
    report = model.support()
    chosen: list[Site] = []
    for info in SITES:
        reason = report.get(info.name)
        if not info.per_layer:
            if reason is None:
                chosen.extend(Site.parse(info.name, model.num_layers))
            continue
        for site in Site.parse(info.name, model.num_layers):
            why = reason.get(site.layer) if isinstance(reason, dict) else reason
            if why is None:
                chosen.append(site)
    return sorted(chosen)


def _is_glob(text: str) -> bool:
    return any(char in text for char in "*?[")


def parse_sites(model: StandardizedTransformer, sites: SiteSelection) -> list[Site]:
    """``sites`` as distinct `Site` objects in forward order.

    ``sites`` is a site name (``"layers_output.3"``; a per-layer name alone means every layer),
    a glob over canonical names (``"layers_*"``, ``"*_output.3"``), a filter
    ``(name: str) -> bool``, or a list mixing them. Globs and filters choose among the sites
    the model offers (`available_sites`); a name given in full is taken as it is.

    Raises:
        InvalidInputError: nothing given, a glob or filter that selects nothing, or a bad name.
        LayerIndexError: a layer out of range.

    Example:
        >>> [s.key for s in parse_sites(model, ["logits", "mlps_output.0", "layers_input.0"])]
        ['layers_input.0', 'mlps_output.0', 'logits']
        >>> [s.key for s in parse_sites(model, lambda name: name.endswith(".0") and "mlps" in name)]
        ['mlps_input.0', 'mlps_output.0']
    """
    items: list[Any] = [sites] if isinstance(sites, str) or callable(sites) else list(sites)
    if not items:
        raise InvalidInputError("no sites given: name at least one, e.g. 'layers_output.0'.")
    offered: list[Site] | None = None
    parsed: set[Site] = set()
    for item in items:
        if isinstance(item, str) and not _is_glob(item):
            parsed.update(Site.parse(item, model.num_layers))
            continue
        if not isinstance(item, str) and not callable(item):
            raise InvalidInputError(
                f"a site must be a name like 'layers_output.3', a glob like 'layers_*' or a "
                f"filter (name) -> bool, got {item!r}"
            )
        offered = available_sites(model) if offered is None else offered
        if isinstance(item, str):
            matches = [site for site in offered if fnmatch.fnmatchcase(site.key, item)]
        else:
            matches = [site for site in offered if item(site.key)]
        if not matches:
            what = f"the glob {item!r}" if isinstance(item, str) else "the site filter"
            raise InvalidInputError(
                f"{what} selects no site this model offers; the names look like "
                f"{', '.join(site.key for site in offered[:4])}, ..."
            )
        parsed.update(matches)
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


def is_per_prompt(positions: Positions) -> bool:
    """Whether ``positions`` gives one list of positions per prompt (a list of lists, or a
    2-D tensor), rather than positions shared by every prompt."""
    if isinstance(positions, torch.Tensor):
        return positions.dim() == 2
    if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or not positions:
        return False
    return all(
        isinstance(item, torch.Tensor) and item.dim() == 1
        or isinstance(item, Sequence) and not isinstance(item, (str, bytes))
        for item in positions
    )


def per_prompt_positions(positions: Any, batch: int, name: str = "positions") -> torch.Tensor:
    """One list of positions per prompt, as a (batch, n) long tensor of relative positions.

    Raises:
        InvalidInputError: not one list per prompt, lists of different lengths, or not ints.

    Example:
        >>> per_prompt_positions([[0, -1], [1, -1]], batch=2)
        tensor([[ 0, -1],
                [ 1, -1]])
    """
    rows = [as_position_list(row.tolist() if isinstance(row, torch.Tensor) else row, name) for row in positions]
    if len(rows) != batch:
        raise InvalidInputError(
            f"{name} has {len(rows)} lists of positions for a batch of {batch} prompts: give one list per prompt."
        )
    if len({len(row) for row in rows}) != 1:
        raise InvalidInputError(
            f"{name} gives prompts different numbers of positions ({[len(row) for row in rows]}): "
            "give every prompt the same number."
        )
    return torch.tensor(rows, dtype=torch.long)


def position_columns(attention_mask: torch.Tensor, positions: Positions) -> torch.Tensor | None:
    """Columns of the padded batch holding ``positions`` of each prompt: (batch, n), or None.

    A position ``p >= 0`` counts from a prompt's first real token, ``p < 0`` from its last one
    (padding on either side; see `nnterp.positions`), so a batch gives each prompt the same rows as
    running it alone. ``positions`` is shared by every prompt (an int or a list), or one list
    per prompt (a list of equally long lists, or a (batch, n) tensor).

    Raises:
        TokenPositionError: a position outside some prompt's tokens.
        InvalidInputError: per-prompt lists that do not match the batch.

    Example:
        >>> position_columns(torch.tensor([[1, 1, 1], [0, 1, 1]]), [0, -1])
        tensor([[0, 2],
                [1, 2]])
        >>> position_columns(torch.tensor([[1, 1, 1], [0, 1, 1]]), [[2], [0]])
        tensor([[2],
                [1]])
    """
    if positions is None:
        return None
    batch = attention_mask.shape[0]
    if is_per_prompt(positions):
        return absolute_positions(attention_mask, per_prompt_positions(positions, batch), "positions")
    wanted = torch.tensor(as_position_list(positions, "positions"))  # type: ignore[arg-type]
    return absolute_positions(attention_mask, wanted.expand(batch, -1), "positions")


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

    Keys are canonical names; lookups also take ``(site, layer)`` pairs, negative layers and
    TransformerLens names (see `site_key`): ``cache["layers_output.-1"]``,
    ``cache["layers_output", -1]`` and ``cache["resid_post", -1]`` are one tensor.

    Example:
        >>> cache["layers_output", -1].shape
        >>> ("mlps_output", 0) in cache
        True
        >>> cache.stack("layers_output").shape     # (layers, batch, ...)
    """

    def __init__(self, num_layers: int, values: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__(values or {})
        self.num_layers = num_layers

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, str) and dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        canonical = site_key(key, self.num_layers)
        if dict.__contains__(self, canonical):
            return dict.__getitem__(self, canonical)
        raise KeyError(f"{key!r} was not cached; cached sites: {', '.join(self)}")

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and dict.__contains__(self, key):
            return True
        try:
            return dict.__contains__(self, site_key(key, self.num_layers))
        except (InvalidInputError, LayerIndexError):
            return False

    def get(self, key: Any, default: Any = None) -> Any:
        """``self[key]`` if it was cached (any key form), else ``default``."""
        try:
            return self[key]
        except (KeyError, LayerIndexError):
            return default

    def layers(self, name: str) -> list[int]:
        """The cached layers of site ``name`` (a standard or TransformerLens name), in order."""
        site = canonical_site_name(name)
        return sorted(int(key.partition(".")[2]) for key in self if key.partition(".")[0] == site)

    def stack(self, name: str, layers: int | Sequence[int] | None = None) -> torch.Tensor:
        """Cached layers of site ``name`` stacked on a new first dimension: (layers, ...).

        Args:
            name: a per-layer site (``"layers_output"``) or its TransformerLens name.
            layers: the layers to stack, in that order (default: every cached layer, by layer).

        Raises:
            KeyError: no layer (or one of ``layers``) of ``name`` was cached.
            SiteKeyError: an unknown site, or a site without layers.

        Example:
            >>> cache = cache_activations(model, "Hi", "layers_output", positions=-1)
            >>> cache.stack("resid_post").shape                # (layers, batch, hidden)
        """
        site = site_info(canonical_site_name(name))
        if not site.per_layer:
            raise SiteKeyError(f"{site.name} has no layers to stack: look it up as cache[{site.name!r}].")
        chosen = self.layers(site.name) if layers is None else [layers] if isinstance(layers, int) else list(layers)
        if not chosen:
            raise KeyError(f"no {name!r} site was cached; cached sites: {', '.join(self)}")
        return torch.stack([self[site.name, layer] for layer in chosen])


@torch.no_grad()
@remote_aware
def cache_activations(
    model: StandardizedTransformer,
    prompts: Any,
    sites: SiteSelection,
    *,
    positions: Positions = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    derived: Mapping[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] | None = None,
    remote: bool | str | None = None,
    **trace_kwargs: Any,
) -> ActivationCache:
    """Run ``prompts`` once and return the activations at ``sites`` as tensors.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch), or anything ``model.trace`` takes.
        sites: site names (see the module docstring), e.g. ``["layers_output.5",
            "attentions_output"]``, in any order; or a glob over site names (``"layers_*"``,
            ``"*_output.3"``), or a filter ``(name: str) -> bool`` called with every site the
            model offers (``"layers_output.3"``, ``"logits"``, ...); see `parse_sites`.
        positions: ``None`` keeps every position; an int keeps one and drops the position
            dimension; a list keeps those (dimension of that length); one list per prompt
            (``[[0, -1], [2, -1]]``, equal lengths) keeps each prompt's own. Counted per
            prompt, whatever the padding: ``-1`` is each prompt's last token, ``0`` its first.
            For ``attention_probabilities`` they select query positions.
        device: where to put each tensor (``None``: leave it where the model computed it).
        dtype: cast to this dtype (``None``: keep the model's).
        derived: extra entries computed from one site each, ``{key: (site, function)}``:
            ``function(value)`` runs inside the forward on the site's whole value and must
            keep its batch and position dimensions (an SAE's encoder, a probe); the result is
            sliced to ``positions`` and cached under ``key``, which must not be a site name
            (``"sae:layers_output.3"``). ``sites`` may then be empty.
        **trace_kwargs: passed to ``model.trace``.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        `ActivationCache` mapping each site's canonical name to a tensor, detached: shapes
        are the accessors' ((batch, seq, hidden), (batch, seq, heads, head_dim),
        (batch, heads, q, k), (batch, seq, vocab)) with the position dimension sliced.

    Raises:
        InvalidInputError, LayerIndexError: unknown site, a glob or filter selecting
            nothing, or a layer out of range.
        TokenPositionError: a position outside some prompt's tokens.

    Example:
        >>> cache = cache_activations(model, "The capital of France is",
        ...                           ["layers_output", "logits"], positions=[-2, -1],
        ...                           dtype=torch.float16)
        >>> cache["layers_output.0"].shape          # (1, 2, hidden)
        >>> cache = cache_activations(model, "Hi", lambda name: name.startswith("mlps_"))
    """
    if not isinstance(sites, str) and not callable(sites):
        sites = list(sites)
    wanted = parse_sites(model, sites) if derived is None or sites else []
    extra = _derived_sites(model, derived)
    if isinstance(prompts, (str, list, tuple)):
        check_prompts(model, prompts)
    squeeze = isinstance(positions, int)
    reads = sorted(set(wanted) | {site for site, _, _ in extra})
    stop_early = reads[-1].name not in LAST_SITES
    saved: dict[str, torch.Tensor] = {}
    options = {**single_forward_options(model), **trace_kwargs} if stop_early else trace_kwargs
    with model.trace(prompts, **options) as tracer:
        columns = position_columns(trace_attention_mask(model), positions)
        for site in reads:
            value = read_site(model, site)
            outputs = [(site.key, value)] if site in wanted else []
            outputs += [(key, function(value)) for derived_site, key, function in extra if derived_site == site]
            for key, output in outputs:
                output = select_positions(output, columns, position_dim(site), squeeze)
                output = output.detach().to(device=device or output.device, dtype=dtype or output.dtype)
                saved[key] = nnsight.save(output)
        if stop_early:
            tracer.stop()
    if stop_early:
        free_stopped_forward()
    order = [site.key for site in wanted] + [key for _, key, _ in extra]
    return ActivationCache(model.num_layers, {key: saved[key] for key in order})


def _derived_sites(
    model: StandardizedTransformer,
    derived: Mapping[str, tuple[str, Callable[[torch.Tensor], torch.Tensor]]] | None,
) -> list[tuple[Site, str, Callable[[torch.Tensor], torch.Tensor]]]:
    """``derived`` as (site, key, function) triples, checked."""
    if derived is None:
        return []
    if not isinstance(derived, Mapping) or not derived:
        raise InvalidInputError(
            "derived must be a non-empty dict {key: (site, function)}, e.g. "
            "{'sae:layers_output.3': ('layers_output.3', sae.encode)}."
        )
    triples = []
    for key, entry in derived.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"derived keys must be non-empty strings, got {key!r}.")
        if not isinstance(entry, tuple) or len(entry) != 2 or not callable(entry[1]):
            raise InvalidInputError(
                f"derived[{key!r}] must be a (site, function) pair, got {type(entry).__name__}."
            )
        try:
            canonical_site_name(key.partition(".")[0])
        except InvalidInputError:
            pass
        else:
            raise InvalidInputError(
                f"derived key {key!r} is a site name: prefix it (e.g. 'sae:{key}') so it cannot "
                "be confused with the site's own value."
            )
        parsed = Site.parse(entry[0], model.num_layers)
        if len(parsed) != 1:
            raise InvalidInputError(f"derived[{key!r}]: site {entry[0]!r} names several layers; give one.")
        triples.append((parsed[0], key, entry[1]))
    return triples
