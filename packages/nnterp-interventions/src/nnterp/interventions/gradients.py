"""Gradients of a scalar metric with respect to standardized activations, in one call.

Built on NNsight 0.8's backward tracing (``with metric.backward(): x.grad``), run inside the
forward trace. The model's parameters are excluded from autograd for the duration of the
call (their ``requires_grad`` flags are restored afterwards), so no parameter ``.grad`` is
touched and only activation gradients are computed; the token embeddings become the graph's
leaf, so this works for frozen models too.

Example:
    >>> from nnterp.interventions.gradients import compute_gradients
    >>> from nnterp.interventions.metrics import logit_difference
    >>> result = compute_gradients(model, ["The capital of France is"],
    ...                            logit_difference(paris_id, london_id),
    ...                            ["layers_output", "attentions_output.3"])
    >>> result.metric                                   # the metric's value
    >>> result.gradients["layers_output.5"].shape       # (batch, seq, hidden)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import nnsight
import torch
from nnterp.cache import (
    ActivationCache,
    Positions,
    Site,
    parse_sites,
    position_columns,
    position_dim,
    read_site,
    select_positions,
    trace_attention_mask,
)
from nnterp.errors import InvalidInputError
from nnterp.heads import HEAD_SITES
from nnterp.inputs import check_prompts
from nnterp.interventions.metrics import Metric, require_scalar
from nnterp.sites import site_info
from nnterp.tracing import remote_options

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


@dataclass(frozen=True)
class GradientResult:
    """What `compute_gradients` returns.

    Attributes:
        metric: the metric's value on the prompts (0-dim float32 tensor).
        gradients: d metric / d activation for each site, shaped like the activation.
        activations: the activation at each site (same keys), or empty if not asked.
    """

    metric: torch.Tensor
    gradients: ActivationCache
    activations: ActivationCache


@contextlib.contextmanager
def activations_only_autograd(model: StandardizedTransformer) -> Iterator[None]:
    """Within the block, no parameter of ``model`` requires grad (flags restored after).

    Example:
        >>> with activations_only_autograd(model):
        ...     ...   # a backward pass here leaves every parameter's .grad untouched
    """
    frozen = [p for p in model._module.parameters() if p.requires_grad]
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)


def _raw_and_view(model: StandardizedTransformer, site: Site) -> tuple[Any, Any, Any]:
    """(the tensor the forward uses at ``site``, a function making the site's view of it, and
    the site's value when it is computed from the forward rather than that tensor's view)."""
    info = site_info(site.name)
    if not info.writable:
        raise InvalidInputError(
            f"{site.key} is computed from the forward (read-only), so it has no gradient of its own: "
            "take the gradient of the site it is computed from (e.g. the norm's input)."
        )
    accessor = getattr(model, site.name)
    if site.layer is not None and hasattr(accessor, "gradient_source"):
        # The site's value may be computed from the forward's tensor (per-head results, a
        # contribution minus an in-module residual or times a branch scale, a transposed or
        # prefixed view): the gradient is taken of that tensor, then turned into the site's.
        value = accessor[site.layer]
        raw, spread = accessor.gradient_source(site.layer)
        return raw, spread, value
    if site.name in HEAD_SITES:
        return accessor.raw(site.layer), accessor.to_heads, None
    return read_site(model, site), None, None


def compute_gradients(
    model: StandardizedTransformer,
    prompts: Any,
    metric: Metric,
    sites: str | Iterable[str],
    *,
    positions: Positions = None,
    return_activations: bool = True,
    device: str | torch.device | None = "cpu",
    remote: bool | str | None = None,
    **trace_kwargs: Any,
) -> GradientResult:
    """The gradient of ``metric(logits)`` with respect to the activations at ``sites``.

    One forward and one backward pass over the batch. The metric is computed from the
    (batch, seq, vocab) logits and must return a scalar (e.g. a mean logit difference).

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        metric: ``metric(logits) -> scalar tensor`` (see `nnterp.interventions.metrics`).
        sites: site names as in `nnterp.cache` (``"layers_output.5"``, ``"attentions_output"``
            for every layer, ``"heads_output.2"``, ``"token_embeddings"``, ...).
        positions: keep only these positions of each gradient (see
            `nnterp.cache.cache_activations`); the metric always sees the whole sequence.
        return_activations: also return the activations (for attribution).
        device: where to put the returned tensors.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``);
            default: the model's own setting.
        **trace_kwargs: passed to ``model.trace``.

    Returns:
        A `GradientResult`.

    Raises:
        InvalidInputError: the metric returned more than one value, or a bad site/position.

    Example:
        >>> result = compute_gradients(model, prompts, token_logit(paris_id), "mlps_output")
        >>> attribution = (result.gradients["mlps_output.2"] * result.activations["mlps_output.2"]).sum()
    """
    wanted = parse_sites(model, sites)
    if isinstance(prompts, (str, list, tuple)):
        check_prompts(model, prompts)
    squeeze = isinstance(positions, int)
    raws: list[Any] = []
    views: list[Any] = []
    values: list[Any] = []
    gradients: list[torch.Tensor] = []
    activations: list[torch.Tensor] = []
    # Nested, not one `with`: NNsight runs the body of the trace block itself.
    with activations_only_autograd(model):  # noqa: SIM117
        with model.trace(prompts, **trace_kwargs, **remote_options(remote)):
            columns = nnsight.save(position_columns(trace_attention_mask(model), positions))
            leaf = model.token_embeddings.detach().requires_grad_(True)
            model.token_embeddings = leaf
            for site in wanted:
                if site.name == "token_embeddings":
                    raw, view, computed = leaf, None, None
                else:
                    raw, view, computed = _raw_and_view(model, site)
                raws.append(raw)
                views.append(view)
                values.append(computed)
            value = require_scalar(metric(model.logits), "compute_gradients")
            metric_value = nnsight.save(value.detach().float().cpu())
            by_tensor: dict[int, torch.Tensor] = {}
            with value.backward():
                # Gradients arrive in reverse forward order; one tensor can serve several sites
                # (layers_output.i is layers_input.i+1, fused q/k/v share one projection).
                for raw in reversed(raws):
                    if id(raw) not in by_tensor:
                        by_tensor[id(raw)] = raw.grad
                for index in range(len(raws)):
                    gradients.append(nnsight.save(by_tensor[id(raws[index])]))
            for index in range(len(raws)):
                source = raws[index] if values[index] is None else values[index]
                activations.append(nnsight.save(source.detach()))
    grads = ActivationCache(model.num_layers)
    acts = ActivationCache(model.num_layers)
    for site, view, computed, gradient, activation in zip(wanted, views, values, gradients, activations):
        dim = position_dim(site)
        if view is not None:
            gradient = view(gradient)
            if computed is None:
                activation = view(activation)
        grads[site.key] = _finish(select_positions(gradient, columns, dim, squeeze), device)
        if return_activations:
            acts[site.key] = _finish(select_positions(activation, columns, dim, squeeze), device)
    return GradientResult(metric=metric_value, gradients=grads, activations=acts)


def _finish(value: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    return value.detach().to(device=device or value.device)
