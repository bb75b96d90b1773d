"""``model.support()``: per standard site, whether this model offers it, and if not, why.

Derived from the site table (`nnterp.sites`) and the model's `LayerStructure`, so a new site
or a new layer kind is reported without new code here.

Example:
    >>> report = model.support()
    >>> report["layers_output"] is None                # available everywhere
    True
    >>> report["attentions_output"]                    # a hybrid: per layer
    {0: 'layer 0 is a gated_deltanet mixer, not softmax attention (attention layers: [1])', 1: None}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, cast

from nnterp.errors import NnterpError
from nnterp.sites import SITES, SiteInfo

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Per site: None (available everywhere), a reason (available nowhere), or reasons per layer.
Support = Any


def _collapse(per_layer: dict[int, str | None]) -> Support:
    values = set(per_layer.values())
    if len(values) == 1:
        return values.pop()
    return per_layer


def _attention_level(model: StandardizedTransformer, site: SiteInfo) -> str | None:
    """A model-wide reason an attention site is unavailable on every attention layer."""
    from nnterp.accessors import no_softmax_attention, probabilities_off

    why = no_softmax_attention(model)
    if why is not None:
        return why
    if site.name == "attention_probabilities":
        why = probabilities_off(model)
        if why is not None:
            return why
    if site.kind == "head":
        from nnterp.heads import attention_layout

        try:
            layout = attention_layout(model)
        except NnterpError as error:
            return str(error)
        if site.name == "heads_output" and layout.o_proj is None:
            return f"no output projection found (spec o_proj={model.spec.o_proj!r})"
        if site.name in ("queries", "keys", "values") and layout.q_proj is None and layout.qkv_proj is None:
            return "no query/key/value projection found (set q_proj/k_proj/v_proj or qkv_proj in the spec)"
        if site.name.endswith("_rotated") and layout.rotary_embedding is None:
            return "the spec names no rotary-embedding call (positions are not rotary, or not readable)"
    return None


def _layer_reason(model: StandardizedTransformer, site: SiteInfo) -> Callable[[int], str | None]:
    structure = model.layer_structure
    declared = model.spec.unavailable_sites.get(site.name)
    if declared is not None:
        return lambda layer: declared
    # Accessors that know their own availability (the derived sites) say it themselves.
    unavailable = getattr(getattr(model, site.name, None), "unavailable", None)
    if callable(unavailable):
        return cast("Callable[[int], str | None]", unavailable)
    if site.name in ("mixers_input",):
        return lambda layer: None if structure.mixers[layer] is not None else f"layer {layer} has no token mixer"
    if site.name == "mixers_output":
        return structure.mixer_unavailable
    if site.name == "mlps_input":
        return lambda layer: None if structure.has_mlp(layer) else structure.mlp_unavailable(layer)
    if site.name == "mlps_output":
        return structure.mlp_unavailable
    if site.layer_kind == "attention":
        model_wide = _attention_level(model, site)
        if model_wide is not None:
            return lambda layer: model_wide

        def attention_reason(layer: int) -> str | None:
            why = structure.attention_unavailable(layer)
            if why is None and site.kind == "contribution":
                return structure.mixer_unavailable(layer)
            return why

        return attention_reason
    return lambda layer: None


def _whole_model_reason(model: StandardizedTransformer, name: str) -> str | None:
    declared = model.spec.unavailable_sites.get(name)
    if declared is not None:
        return declared
    if name == "token_embeddings" and model.paths["embed_tokens"] is None:
        return "the spec names no embedding module"
    if name == "ln_final_scale":
        from nnterp.norm_scales import final_form

        form = final_form(model)
        return form if isinstance(form, str) else None
    return None


def site_support(model: StandardizedTransformer) -> dict[str, Support]:
    """The `StandardizedTransformer.support` report of ``model``."""
    report: dict[str, Support] = {}
    for site in SITES:
        if not site.per_layer:
            report[site.name] = _whole_model_reason(model, site.name)
            continue
        reason = _layer_reason(model, site)
        report[site.name] = _collapse({layer: reason(layer) for layer in range(model.num_layers)})
    return report


__all__ = ["site_support"]
