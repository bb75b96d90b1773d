"""SAE features in the analysis tools: caching, patching, attribution patching and direct
logit attribution with features as components.

An SAE (`nnterp.interventions.saes`) reads one standard site; its feature activations are
one more kind of activation:

- `cache_features` caches them next to any sites, under ``"sae:<site key>"`` (or
  ``"sae:<name>"`` for SAEs given by name), sliced to positions like every site;
- `feature_patching` patches clean feature values into the corrupted run, feature by feature
  (and position by position), keeping the corrupted run's reconstruction error, so a cell
  changes the site by exactly ``(f_clean - f_corrupted)_i * W_dec[i]``;
- `feature_attribution_patching` is its first-order estimate from one backward pass;
- `feature_logit_attribution` splits the SAE's site into its features, the reconstruction
  error and the decoder bias, and gives each its direct share of a logit (difference) or of a
  direction with the final norm frozen at the real residual stream, as `logit_attribution`
  does for components. On a component site (``mlps_output.L``, ``attentions_output.L``) the
  shares add up to that component's share in `logit_attribution`; on the last layer's
  output they add up to the logit itself.

Example:
    >>> from nnterp.interventions.sae_analysis import cache_features, feature_logit_attribution
    >>> cache = cache_features(model, prompts, sae, sites="logits", positions=-1)
    >>> cache["sae:layers_output.3"].shape                    # (batch, d_sae)
    >>> dla = feature_logit_attribution(model, prompts, sae, paris_id)
    >>> dla.top(5)                                            # the five features adding most
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import nnsight
import torch
from nnterp.cache import ActivationCache, Positions, Site, SiteSelection, cache_activations, read_site, write_site
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.inputs import index_list, prompt_list
from nnterp.interventions.decomposition import (
    PositionArg,
    cache_rows,
    component_label,
    readout,
    unflatten_rows,
)
from nnterp.interventions.gradients import activations_only_autograd
from nnterp.interventions.metrics import Metric, TokenIds, require_scalar
from nnterp.interventions.patching import aligned_length
from nnterp.interventions.saes import SparseAutoencoder, sae_site, site_activations, splice_sae
from nnterp.progress import progress_bar
from nnterp.sites import site_info
from nnterp.tracing import remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Prefix of the cache keys of SAE features.
FEATURE_PREFIX = "sae:"
#: One SAE, several, or SAEs by name (``{"res3": sae}`` caches under ``"sae:res3"``).
SaeSelection = SparseAutoencoder | Sequence[SparseAutoencoder] | Mapping[str, SparseAutoencoder]


def feature_key(model: StandardizedTransformer, sae: SparseAutoencoder, site: Any = None) -> str:
    """The cache key of ``sae``'s features: ``"sae:"`` and its site key.

    Example:
        >>> feature_key(model, load_sae("/saes/blocks.3.hook_resid_post"))
        'sae:layers_output.3'
    """
    return FEATURE_PREFIX + sae_site(model, sae, site)


def _encoder(sae: SparseAutoencoder, key: str) -> Callable[[torch.Tensor], torch.Tensor]:
    def encode(value: torch.Tensor) -> torch.Tensor:
        return sae.encode(site_activations(value, sae, key).to(device=sae.device, dtype=sae.dtype))

    return encode


def _by_key(model: StandardizedTransformer, saes: SaeSelection) -> dict[str, tuple[str, SparseAutoencoder]]:
    """``{cache key: (site key, sae)}`` for a `SaeSelection`."""
    if isinstance(saes, SparseAutoencoder):
        saes = [saes]
    if isinstance(saes, Mapping):
        named = {}
        for name, sae in saes.items():
            if not isinstance(name, str) or not name:
                raise InvalidInputError(f"SAE names must be non-empty strings, got {name!r}.")
            named[FEATURE_PREFIX + name] = (sae_site(model, sae), sae)
        if not named:
            raise InvalidInputError("saes is empty: give at least one SparseAutoencoder.")
        return named
    if isinstance(saes, (str, bytes)) or not isinstance(saes, Sequence) or not saes:
        raise InvalidInputError(
            f"saes must be a SparseAutoencoder, a list of them or a dict {{name: sae}}, got {type(saes).__name__}."
        )
    by_key: dict[str, tuple[str, SparseAutoencoder]] = {}
    for sae in saes:
        site = sae_site(model, sae)
        if FEATURE_PREFIX + site in by_key:
            raise InvalidInputError(
                f"two SAEs read {site}: give them names, saes={{'a': sae_a, 'b': sae_b}}, to cache both."
            )
        by_key[FEATURE_PREFIX + site] = (site, sae)
    return by_key


def cache_features(
    model: StandardizedTransformer,
    prompts: Any,
    saes: SaeSelection,
    *,
    sites: SiteSelection = (),
    positions: Positions = None,
    device: str | torch.device | None = "cpu",
    dtype: torch.dtype | None = None,
    remote: bool | str | None = None,
    **trace_kwargs: Any,
) -> ActivationCache:
    """Run ``prompts`` once and cache the features of each SAE (and any ``sites``).

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        saes: an SAE, a list of SAEs (each cached under ``"sae:<its site key>"``) or a dict
            ``{name: sae}`` (cached under ``"sae:<name>"``; needed for two SAEs on one site).
        sites, positions, device, dtype, remote, **trace_kwargs: as `cache_activations`.

    Returns:
        An `ActivationCache`: (batch, seq, d_sae) features per SAE (the position dimension
        sliced as for every site), and the ``sites``.

    Raises:
        InvalidInputError: no SAE, two SAEs on one site without names, an SAE whose ``d_in``
            is not its site's width; as `cache_activations`.

    Example:
        >>> cache = cache_features(model, ["The cat sat"], [sae_3, sae_5], sites="layers_output.3",
        ...                        positions=[-2, -1])
        >>> cache["sae:layers_output.3"].shape                  # (1, 2, d_sae)
    """
    derived = {key: (site, _encoder(sae, site)) for key, (site, sae) in _by_key(model, saes).items()}
    return cache_activations(
        model,
        prompts,
        sites,
        positions=positions,
        device=device,
        dtype=dtype,
        derived=derived,
        remote=remote,
        **trace_kwargs,
    )


def _features(model: StandardizedTransformer, prompts: list[str], sae: SparseAutoencoder, key: str) -> torch.Tensor:
    """(batch, seq, d_sae) features of ``sae`` at site ``key``, on the SAE's device."""
    cache = cache_activations(model, prompts, (), derived={FEATURE_PREFIX + key: (key, _encoder(sae, key))}, device=None)
    return cache[FEATURE_PREFIX + key]


@dataclass(frozen=True)
class _FeatureSweep:
    """The cells of a feature sweep over aligned clean and corrupted prompts."""

    key: str
    parsed: Site
    clean: list[str]
    corrupted: list[str]
    features: list[int]
    positions: list[int]
    by_position: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.features), len(self.positions)) if self.by_position else (len(self.features),)

    def cells(self) -> list[tuple[tuple[int, ...], tuple[Any, ...]]]:
        """``[(grid index, feature tensor index), ...]`` over (batch, seq, d_sae) features."""
        if self.by_position:
            return [
                ((i, j), (slice(None), position, feature))
                for i, feature in enumerate(self.features)
                for j, position in enumerate(self.positions)
            ]
        return [((i,), (slice(None), self.positions, feature)) for i, feature in enumerate(self.features)]


def _sweep(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    sae: SparseAutoencoder,
    site: Any,
    features: int | Sequence[int] | None,
    positions: int | Sequence[int] | None,
    by_position: bool,
) -> _FeatureSweep:
    key = sae_site(model, sae, site)
    (parsed,) = Site.parse(key, model.num_layers)
    if not site_info(parsed.name).per_layer or "seq" not in site_info(parsed.name).shape:
        raise InvalidInputError(f"feature patching needs a site with a position dimension; {key} has none.")
    clean_list = prompt_list(clean, "clean")
    corrupted_list = prompt_list(corrupted, "corrupted")
    length = aligned_length(model, clean_list, corrupted_list)
    return _FeatureSweep(
        key=key,
        parsed=parsed,
        clean=clean_list,
        corrupted=corrupted_list,
        features=index_list(features, sae.d_sae, "features") or list(range(sae.d_sae)),
        positions=index_list(positions, length, "positions") or list(range(length)),
        by_position=by_position,
    )


def _patched_feature_metrics(
    model: StandardizedTransformer,
    sweep: _FeatureSweep,
    sae: SparseAutoencoder,
    cells: list[tuple[Any, ...]],
    clean_features: torch.Tensor,
    metric: Metric,
) -> list[float]:
    """One forward over ``len(cells)`` copies of the corrupted prompts; copy ``k`` has the
    clean features at ``cells[k]``, the rest of its site unchanged."""
    size = len(sweep.corrupted)
    values: list[torch.Tensor] = []
    with model.trace(sweep.corrupted * len(cells)):
        current = read_site(model, sweep.parsed)
        x = site_activations(current, sae, sweep.key).to(device=sae.device, dtype=sae.dtype)
        encoded = sae.encode(x)
        patched = encoded.clone()
        for copy, cell in enumerate(cells):
            block = patched[copy * size : (copy + 1) * size]
            block[cell] = clean_features[cell]
        # Only the patched features move the site: unpatched copies get x + 0, exactly x.
        value = x + (patched - encoded) @ sae.W_dec
        write_site(model, sweep.parsed, value.reshape(current.shape).to(device=current.device, dtype=current.dtype))
        logits = model.logits
        for copy in range(len(cells)):
            block_logits = logits[copy * size : (copy + 1) * size]
            values.append(nnsight.save(require_scalar(metric(block_logits), "feature_patching")))
    return [float(value) for value in values]


@torch.no_grad()
@remote_aware
def feature_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    sae: SparseAutoencoder,
    *,
    site: Any = None,
    features: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    by_position: bool = True,
    batch_size: int = 16,
    progress: bool = False,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """Patch clean SAE feature values into the corrupted run, one cell at a time; the metric grid.

    A cell is one feature at one position (``by_position=True``) or one feature at all
    ``positions`` together. Its run is the corrupted prompts with the SAE's site changed by
    ``(f_clean - f_corrupted)`` of the cell's features through the decoder (the corrupted
    run's reconstruction error kept), every prompt of the batch at once. A cell whose clean
    and corrupted values are equal changes nothing and is not run: it gets the corrupted
    metric.

    Args:
        model: a `StandardizedTransformer`.
        clean, corrupted: prompts of equal token counts, paired by index.
        metric: ``metric(logits) -> scalar`` (see `nnterp.interventions.metrics`).
        sae: the SAE (its hook name gives the site, or ``site=``).
        site: override of the SAE's site (see `sae_site`).
        features: feature indices to sweep (default all ``d_sae``; pick candidates with
            `feature_attribution_patching` on wide SAEs).
        positions: positions to sweep (or to patch together without ``by_position``);
            default all; negative indices count from the end.
        by_position: one cell per (feature, position); else one per feature.
        batch_size: patched runs per forward pass.
        progress: show a tqdm progress bar.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        float32 CPU tensor (len(features), len(positions)), or (len(features),) without
        ``by_position``: the metric after each patch.

    Raises:
        InvalidInputError: misaligned prompts, a site without positions, a bad ``batch_size``;
            see `sae_site`.
        LayerIndexError: a feature or position out of range.

    Example:
        >>> grid = feature_patching(model, "The capital of France is", "The capital of Italy is",
        ...                         logit_difference(paris, rome), sae, features=[12, 40, 77])
        >>> grid.shape                                          # (3, seq)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be an int of at least 1, got {batch_size!r}")
    sweep = _sweep(model, clean, corrupted, sae, site, features, positions, by_position)
    clean_features = _features(model, sweep.clean, sae, sweep.key)
    with model.trace(sweep.corrupted):  # the corrupted features and metric, one forward
        corrupted_features = nnsight.save(_encoder(sae, sweep.key)(read_site(model, sweep.parsed)))
        baseline = nnsight.save(require_scalar(metric(model.logits), "feature_patching"))
    grid = torch.full(sweep.shape, float(baseline))
    jobs = [(where, cell) for where, cell in sweep.cells() if not torch.equal(clean_features[cell], corrupted_features[cell])]
    bar = progress_bar(total=len(jobs), desc="patching SAE features", disable=not progress)
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        metrics = _patched_feature_metrics(model, sweep, sae, [cell for _, cell in chunk], clean_features, metric)
        for (where, _), value in zip(chunk, metrics):
            grid[where] = value
        bar.update(len(chunk))
    bar.close()
    return grid


@torch.enable_grad()
@remote_aware
def feature_attribution_patching(
    model: StandardizedTransformer,
    clean: str | Sequence[str],
    corrupted: str | Sequence[str],
    metric: Metric,
    sae: SparseAutoencoder,
    *,
    site: Any = None,
    features: int | Sequence[int] | None = None,
    positions: int | Sequence[int] | None = None,
    by_position: bool = True,
    remote: bool | str | None = None,
) -> torch.Tensor:
    """The linear estimate of `feature_patching`'s grid, from one forward and backward pass.

    Each cell is ``metric(corrupted) + sum over the batch and the cell's positions of
    (f_clean - f_corrupted) * d metric / d f``, the gradient taken on the corrupted run with
    the SAE spliced in with its error term (so the forward is the model's own).

    Args:
        model, clean, corrupted, metric, sae, site, features, positions, by_position, remote:
            as `feature_patching`.

    Returns:
        float32 CPU tensor shaped like `feature_patching`'s result.

    Raises:
        InvalidInputError, LayerIndexError: as `feature_patching`.

    Example:
        >>> estimate = feature_attribution_patching(model, clean, corrupted, metric, sae,
        ...                                         by_position=False)
        >>> candidates = estimate.sub(estimate.min()).topk(10).indices     # then patch those
    """
    sweep = _sweep(model, clean, corrupted, sae, site, features, positions, by_position)
    clean_features = _features(model, sweep.clean, sae, sweep.key).float().cpu()
    # Nested, not one `with`: NNsight runs the body of the trace block itself.
    with activations_only_autograd(model):  # noqa: SIM117
        with model.trace(sweep.corrupted):
            spliced = splice_sae(model, sae, sweep.key)
            value = require_scalar(metric(model.logits), "feature_attribution_patching")
            metric_value = nnsight.save(value.detach().float().cpu())
            corrupted_features = nnsight.save(spliced.detach().float().cpu())
            with value.backward():
                gradient = nnsight.save(spliced.grad)
    effect = ((clean_features - corrupted_features) * cast(torch.Tensor, gradient).float().cpu()).sum(0)  # (seq, d_sae)
    chosen = effect[sweep.positions][:, sweep.features]  # (positions, features)
    cells = chosen.T if by_position else chosen.sum(0)
    return metric_value + cells


@dataclass(frozen=True)
class FeatureAttribution:
    """Each SAE feature's direct share of a logit (difference) or direction, per prompt.

    Shapes below are for one position per prompt; with one list of ``n`` positions per prompt
    every ``batch`` becomes ``batch, n``.

    Attributes:
        site: the SAE's site key.
        component: the `logit_attribution` label of that site (``"mlp.3"``, ``"attn.2"``), or
            ``None`` for a residual-stream state (``layers_output.L``, ...).
        features: (batch, d_sae) feature activations.
        contributions: (batch, d_sae), what each feature's ``f_i * W_dec[i]`` adds.
        error: (batch,), the reconstruction error's share (``x - decode(f)``).
        decoder_bias: (batch,), ``b_dec``'s share.
        site_total: (batch,), the whole site's share: ``contributions.sum(-1) + error +
            decoder_bias``; for a component site, that component's ``logit_attribution``
            contribution; for the last layer's output, the logit minus ``bias``.
        bias: (batch,), the final norm's and the unembedding's biases through the readout.

    The units are those of `logit_attribution`: the logit before any soft-cap, times a linear
    logit scale.
    """

    site: str
    component: str | None
    features: torch.Tensor
    contributions: torch.Tensor
    error: torch.Tensor
    decoder_bias: torch.Tensor
    site_total: torch.Tensor
    bias: torch.Tensor

    def top(self, k: int = 10, prompt: int = 0, position: int = 0, largest: bool = True) -> list[tuple[int, float]]:
        """The ``k`` features adding the most (``largest=False``: the least) for one prompt
        (and one of its attributed positions): ``[(feature, contribution), ...]``."""
        row = self.contributions[prompt]
        if row.dim() == 2:
            row = row[position]
        values, indices = row.topk(min(k, row.numel()), largest=largest)
        return list(zip(indices.tolist(), values.tolist()))


@torch.no_grad()
@remote_aware
def feature_logit_attribution(
    model: StandardizedTransformer,
    prompts: Any,
    sae: SparseAutoencoder,
    target: TokenIds | None = None,
    baseline: TokenIds | None = None,
    *,
    direction: Any = None,
    apply_final_norm: bool = True,
    position: PositionArg = -1,
    site: Any = None,
    remote: bool | str | None = None,
) -> FeatureAttribution:
    """Direct logit attribution of the SAE's features: each feature as a component.

    The site's value ``x`` splits as ``sum_i f_i W_dec[i] + b_dec + (x - decode(f))``; each part
    is read out through the final norm frozen at the real residual stream and the unembedding
    (`readout`). Needs a site of the residual stream's width: a residual state or a sublayer
    contribution (per-head sites go through the output projection, which has no direct share).

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        sae: the SAE.
        target, baseline, direction, apply_final_norm, position: as `logit_attribution`.
        site: override of the SAE's site (see `sae_site`).
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        A `FeatureAttribution` (float32, CPU).

    Raises:
        UnavailableComponentError: a site not of the residual stream's width.
        InvalidInputError: as `logit_attribution`; see `sae_site`.

    Example:
        >>> dla = feature_logit_attribution(model, "The capital of France is", sae, paris_id,
        ...                                 baseline=rome_id)
        >>> dla.top(3)                                         # [(feature, share), ...]
    """
    key = sae_site(model, sae, site)
    info = site_info(key.partition(".")[0])
    if info.shape[-1] != "hidden" or any(dim in info.shape for dim in ("heads", "kv_heads")):
        raise UnavailableComponentError(
            f"{key} is not a residual-stream-wide site, so its features have no direct share of the "
            "logits; use feature_attribution_patching (gradients) for features of per-head sites."
        )
    final = f"layers_output.{model.num_layers - 1}"
    cache, per_prompt = cache_rows(model, prompts, position, sorted({key, final}))
    x = cache[key]
    features = sae.encode(x.to(device=sae.device, dtype=sae.dtype)).float().cpu()
    decoder = sae.W_dec.detach().float().cpu()
    decoder_bias = sae.b_dec.detach().float().cpu()
    linear = readout(
        model,
        cache[final],
        target,
        baseline,
        direction=direction,
        apply_final_norm=apply_final_norm,
        per_prompt=per_prompt,
    )
    contributions = features * (linear.vectors @ decoder.T)
    error = x - (features @ decoder + decoder_bias)
    return FeatureAttribution(
        site=key,
        component=component_label(model, key),
        features=unflatten_rows(features, 0, per_prompt),
        contributions=unflatten_rows(contributions, 0, per_prompt),
        error=unflatten_rows(linear.share(error), 0, per_prompt),
        decoder_bias=unflatten_rows(linear.share(decoder_bias.expand_as(x)), 0, per_prompt),
        site_total=unflatten_rows(linear.share(x), 0, per_prompt),
        bias=unflatten_rows(linear.bias, 0, per_prompt),
    )


__all__ = [
    "FEATURE_PREFIX",
    "FeatureAttribution",
    "SaeSelection",
    "cache_features",
    "feature_attribution_patching",
    "feature_key",
    "feature_logit_attribution",
    "feature_patching",
]
