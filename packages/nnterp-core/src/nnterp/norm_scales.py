"""Norm scales: the factor a normalisation divides its input by, as a site.

``model.attentions_norm_scale[i]``, ``model.mlps_norm_scale[i]`` and ``model.ln_final_scale``
are, for the norm before layer ``i``'s attention, before its MLP, and the final norm, ::

    1 / sqrt(mean(x ** 2) + eps)          RMSNorm
    1 / sqrt(var(x) + eps)                LayerNorm (biased variance)

computed in float32 from what the norm receives, shaped (batch, seq, 1). The norm's output is
then a per-channel affine map of ``x * scale`` (RMSNorm) or ``(x - mean(x)) * scale``
(LayerNorm): freezing the scale makes the norm linear, as attribution through a norm needs.

Which formula a norm follows is found by what the module computes, not by its class name: a
probe input (tokens of very different sizes, some shifted off zero) is run through the
module's own ``forward`` once, and only the formula whose ``x * scale`` maps to the module's
output by one per-channel affine map is accepted; ``eps`` is read from the module (or the
config) and checked by the same probe. A module that fits neither (a prediction head, an
identity, a gated norm) gives its reason in ``model.support()``.

The scales are read-only: assigning one raises `UnavailableComponentError` naming what to
patch instead (the norm's output: ``attentions_input``, ``mlps_input``).

Example:
    >>> with model.trace("The cat sat"):
    ...     s = model.mlps_norm_scale[1].save()          # (1, seq, 1), float32
    ...     h = model.layers_mid[1].save()                # what the MLP's norm receives
    >>> torch.allclose(s, torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))   # RMSNorm
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nnterp.accessors import (
    _outside_trace_checked,
    _PerLayerView,
    child_envoy,
    first_tensor,
    normalize_layer,
    token_shape,
    unflatten_tokens,
)
from nnterp.errors import UnavailableComponentError
from nnterp.spec import config_value
from nnterp.stream_layout import to_standard

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Module attributes holding a norm's epsilon, tried in order.
EPS_ATTRIBUTES = ("variance_epsilon", "eps", "epsilon", "layer_norm_eps", "norm_eps")
#: Config keys giving the norms' epsilon when the module keeps none, tried in order.
EPS_CONFIG_KEYS = (
    "rms_norm_eps",
    "layer_norm_eps",
    "layer_norm_epsilon",
    "norm_eps",
    "norm_epsilon",
)


@dataclass(frozen=True)
class NormForm:
    """What one norm module computes: ``kind`` ``"rms"`` or ``"layer"``, and its ``eps``."""

    kind: str
    eps: float


def scale_of(x: torch.Tensor, form: NormForm) -> torch.Tensor:
    """The scale ``form`` divides ``x`` (..., hidden) by: (..., 1), float32.

    Example:
        >>> scale_of(torch.ones(2, 3, 8), NormForm("rms", 1e-6)).shape
        torch.Size([2, 3, 1])
    """
    x = x.float()
    if form.kind == "layer":
        spread = x.var(-1, unbiased=False, keepdim=True)
    else:
        spread = x.pow(2).mean(-1, keepdim=True)
    return torch.rsqrt(spread + form.eps)


def _normalised(x: torch.Tensor, form: NormForm) -> torch.Tensor:
    centred = x - x.mean(-1, keepdim=True) if form.kind == "layer" else x
    return centred * scale_of(x, form)


def _eps_of(module: torch.nn.Module, config: Any) -> float | None:
    for name in EPS_ATTRIBUTES:
        value = getattr(module, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    value = config_value(config, EPS_CONFIG_KEYS)
    return float(value) if isinstance(value, (int, float)) else None


def _probe(width: int, eps: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(4, width, generator=generator)
    # Large, eps-sized, shifted and small-and-shifted tokens: only the right kind and eps fit all.
    sizes = torch.tensor([[3.0], [max(eps, 1e-8) ** 0.5], [2.0], [0.5]])
    shifts = torch.tensor([[0.0], [0.0], [4.0], [-1.0]])
    return (noise * sizes + shifts)[None]


def _fits(
    module: torch.nn.Module, form: NormForm, x: torch.Tensor, dtype: torch.dtype
) -> bool:
    """Whether ``module(x) == b + w * normalised(x)`` for one per-channel ``w`` and ``b``."""
    forward = type(
        module
    ).forward  # the HF code itself: no hooks, so safe inside a trace
    device = next(module.parameters(), torch.empty(0)).device
    with torch.no_grad():
        out = (
            first_tensor(forward(module, x.to(device=device, dtype=dtype)))
            .float()
            .cpu()
        )
        bias = (
            first_tensor(
                forward(
                    module, torch.zeros_like(x[:, :1]).to(device=device, dtype=dtype)
                )
            )
            .float()
            .cpu()
        )
    if tuple(out.shape) != tuple(x.shape):
        return False
    unit = _normalised(x.to(dtype).float(), form)[0]
    target = (out - bias)[0]
    weight = (target * unit).sum(0) / unit.pow(2).sum(0).clamp(min=1e-12)
    gap = float((weight * unit - target).abs().max())
    tolerance = 1e-3 if dtype == torch.float32 or dtype == torch.float64 else 3e-2
    return gap <= tolerance * max(float(out.abs().max()), 1.0)


def model_forms(model: StandardizedTransformer) -> dict[str, NormForm | str]:
    """The forms already probed on ``model``, by the norm's path. Kept on the model (a plain dict,
    so a remote trace can serialize the model's accessors with it)."""
    forms: dict[str, NormForm | str] = model.__dict__.setdefault("_nnterp_norm_forms", {})
    return forms


def norm_form(
    module: torch.nn.Module, width: int, config: Any, where: str, known: dict[str, NormForm | str] | None = None
) -> NormForm | str:
    """The `NormForm` of ``module`` (a norm over ``width`` channels), or why it has none.

    ``known`` caches results by ``where`` (the norm's path), see `model_forms`.

    Example:
        >>> norm_form(torch.nn.LayerNorm(8), 8, None, "ln_final")
        NormForm(kind='layer', eps=1e-05)
    """
    if known is not None and where in known:
        return known[where]
    name = type(module).__name__
    eps = _eps_of(module, config)
    result: NormForm | str
    if eps is None:
        result = f"{where} ({name}) keeps no epsilon (tried {', '.join(EPS_ATTRIBUTES)} and the config)"
    else:
        parameter = next(module.parameters(), None)
        dtype = (
            parameter.dtype
            if parameter is not None and parameter.is_floating_point()
            else torch.float32
        )
        x = _probe(width, eps)
        result = (
            f"{where} ({name}) is neither an RMSNorm nor a LayerNorm: its output on a probe is not a "
            "per-channel affine map of x / rms(x) or (x - mean) / std(x)"
        )
        for kind in ("rms", "layer"):
            form = NormForm(kind, eps)
            try:
                fits = _fits(module, form, x, dtype)
            except Exception:  # noqa: BLE001 - a module that cannot run on one tensor is no plain norm
                result = f"{where} ({name}) does not run on the stream alone (a gated or conditioned norm)"
                break
            if fits:
                result = form
                break
    if known is not None:
        known[where] = result
    return result


class NormScaleAccessor(_PerLayerView):
    """``model.attentions_norm_scale[i]`` / ``model.mlps_norm_scale[i]``: (batch, seq, 1), read-only.

    Args:
        model: The `StandardizedTransformer`.
        sublayer: ``"attention"`` (the norm before the attention) or ``"mlp"``.

    Example:
        >>> with model.trace("Hello world"):
        ...     scale = model.attentions_norm_scale[0].save()
    """

    def __init__(self, model: StandardizedTransformer, sublayer: str) -> None:
        self._model = model
        self._sublayer = sublayer
        self.site = f"{'attentions' if sublayer == 'attention' else 'mlps'}_norm_scale"
        self.description = f"{self.site} (norm scales)"

    def _path(self, layer: int) -> tuple[str | None, str | None]:
        structure = self._model.layer_structure
        if self._sublayer == "attention":
            why = structure.attention_unavailable(
                layer
            ) or structure.mixer_norm_unavailable(layer)
            return (None, why) if why else (structure.norms[layer].mixer, None)
        why = structure.mlp_norm_unavailable(layer)
        return (None, why) if why else (structure.norms[layer].mlp, None)

    def form(self, layer: int) -> NormForm | str:
        """Layer ``layer``'s `NormForm`, or why it has none."""
        layer = normalize_layer(self._model, layer)
        declared = self._model.spec.unavailable_sites.get(self.site)
        if declared is not None:
            return declared
        path, why = self._path(layer)
        if why is not None or path is None:
            return why or "no norm"
        module = self._model.layer_module(layer).get_submodule(path)
        return norm_form(
            module,
            self._model.hidden_size,
            self._model._module.config,
            f"layers[{layer}].{path}",
            model_forms(self._model),
        )

    def unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no such scale, or ``None``."""
        form = self.form(layer)
        return form if isinstance(form, str) else None

    @_outside_trace_checked
    def __getitem__(self, layer: int) -> torch.Tensor:
        layer = normalize_layer(self._model, layer)
        form = self.form(layer)
        if isinstance(form, str):
            raise UnavailableComponentError(
                f"{self.site}[{layer}] of {self._model.spec.name}: {form}."
            )
        path, _ = self._path(layer)
        assert path is not None
        envoy = norm_input_envoy(self._model, layer, path, self._sublayer)
        return scale_of(_stream_input(self._model, envoy), form)

    def __setitem__(self, layer: int, value: torch.Tensor) -> None:
        patch = "attentions_input" if self._sublayer == "attention" else "mlps_input"
        raise UnavailableComponentError(
            f"{self.site}[{layer}] is read-only (it is computed from the norm's input): patch what the "
            f"norm gives instead, {patch}[{layer}], or the norm's input."
        )


def _stream_input(model: StandardizedTransformer, envoy: Any) -> torch.Tensor:
    """A norm's input as (batch, seq, hidden), also when the layer flattened its tokens (OPT)."""
    value = first_tensor(envoy.input)
    if value.dim() == 2:
        value = unflatten_tokens(value, token_shape(model, value))
    return to_standard(model, value)


def sublayer_module_path(
    model: StandardizedTransformer, layer: int, sublayer: str
) -> str | None:
    """Path, from the layer, of the module whose input is what ``sublayer`` (``"attention"``
    or ``"mlp"``) reads: the mixer, or the MLP's input module (BERT's ``intermediate``)."""
    structure = model.layer_structure
    if sublayer == "attention":
        mixer = structure.mixers[layer]
        return None if mixer is None else mixer.path
    site = structure.mlps[layer]
    if site is None:
        return None
    return site.contribution.input or site.path


def norm_input_envoy(
    model: StandardizedTransformer, layer: int, path: str, sublayer: str
) -> Any:
    """The envoy whose input is the input of layer ``layer``'s norm at ``path``.

    A norm inside the sublayer's own module (Megatron-BERT's ``attention.ln``,
    RoBERTa-PreLayerNorm's ``intermediate.LayerNorm``) is that module's first operation, so its
    input is the module's input, read there: the site then comes before the module's insides
    in the forward, as the site table orders it."""
    container = sublayer_module_path(model, layer, sublayer)
    if container is not None and path.startswith(f"{container}."):
        return child_envoy(model.layers[layer], container)
    return child_envoy(model.layers[layer], path)


def final_form(model: StandardizedTransformer) -> NormForm | str:
    """The final norm's `NormForm`, or why it has none."""
    declared = model.spec.unavailable_sites.get("ln_final_scale")
    if declared is not None:
        return declared
    path = model.paths["ln_final"]
    if path is None:
        return "the model has no final norm (spec ln_final=None)"
    return norm_form(
        model._module.get_submodule(path),
        model.hidden_size,
        model._module.config,
        "ln_final",
        model_forms(model),
    )


def ln_final_scale(model: StandardizedTransformer) -> torch.Tensor:
    """The final norm's scale (batch, seq, 1) inside a trace (``model.ln_final_scale``)."""
    form = final_form(model)
    if isinstance(form, str):
        raise UnavailableComponentError(f"ln_final_scale of {model.spec.name}: {form}.")
    return scale_of(_stream_input(model, model.ln_final), form)


def refuse_final_write() -> None:
    """Raise the read-only error of ``model.ln_final_scale = ...``."""
    raise UnavailableComponentError(
        "ln_final_scale is read-only (it is computed from the final norm's input): patch the final "
        "norm's input (layers_output[-1]) or its output (model.ln_final.output) instead."
    )


__all__ = [
    "NormForm",
    "NormScaleAccessor",
    "final_form",
    "ln_final_scale",
    "norm_form",
    "norm_input_envoy",
    "scale_of",
    "sublayer_module_path",
]
