"""Conformance checks of the derived sites: MLP hidden activations, ``layers_mid``, norm scales,
attention scores and per-head results, each against plain PyTorch hooks on the HF modules in
the same forward.

Each check takes a `StandardizedTransformer`, raises ``AssertionError`` when nnterp's value
is wrong and `UnavailableComponentError` (with ``model.support()``'s reason) when the model
offers the site on no layer. `SITE_CHECKS` maps check names to them, in the form of
`nnterp.testing.conformance.CHECKS`.

Example:
    >>> for name, check in SITE_CHECKS.items():
    ...     check(model)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

from nnterp.errors import UnavailableComponentError

PROMPTS = ("The capital of France is", "Hello world")


def _encoding(model: Any) -> dict[str, torch.Tensor]:
    encoding = model.tokenizer(list(PROMPTS), return_tensors="pt", padding=True)
    return {
        "input_ids": encoding["input_ids"],
        "attention_mask": encoding["attention_mask"],
    }


def _available_layers(model: Any, site: str) -> list[int]:
    """The layers where ``site`` is available; raises with the reason when there are none."""
    report = model.support()[site]
    if isinstance(report, dict):
        layers = [layer for layer, why in report.items() if why is None]
        reason = next((why for why in report.values() if why is not None), None)
    else:
        layers = list(range(model.num_layers)) if report is None else []
        reason = report
    if not layers:
        raise UnavailableComponentError(f"{site}: {reason}")
    return layers


@contextlib.contextmanager
def _hooked(
    modules: dict[str, torch.nn.Module],
) -> Iterator[dict[str, list[tuple[Any, Any]]]]:
    """Plain forward hooks recording every call's ``(first input, output)`` per name."""
    seen: dict[str, list[tuple[Any, Any]]] = {name: [] for name in modules}

    def recorder(name: str) -> Callable[..., None]:
        def hook(
            module: torch.nn.Module,
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            output: Any,
        ) -> None:
            first = args[0] if args else next(iter(kwargs.values()))
            value = output[0] if isinstance(output, (tuple, list)) else output
            seen[name].append((first.detach().clone(), value.detach().clone()))

        return hook

    handles = [
        module.register_forward_hook(recorder(name), with_kwargs=True)
        for name, module in modules.items()
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _layer_module(model: Any, layer: int, path: str) -> torch.nn.Module:
    module: torch.nn.Module = model.layer_module(layer).get_submodule(path)
    return module


def _layer_calls(model: Any, layer: int) -> int:
    """How many times one forward calls layer ``layer``'s block module (and so each of its
    submodules): 1, or more on an unrolled stack that re-runs the block."""
    block = model.block_index(layer)
    return sum(model.block_index(other) == block for other in range(model.num_layers))


def _standard(model: Any, hooked: torch.Tensor) -> torch.Tensor:
    """A hooked (batch, seq, ...) module tensor as the standard sites index it, from the
    spec's layout data alone: sequence-first tensors transposed, prepended positions dropped."""
    layout = model.spec.stream_layout
    if layout.sequence_first:
        hooked = hooked.transpose(0, 1)
    if layout.prefix_positions is not None:
        hooked = hooked[:, int(getattr(model._module.config, layout.prefix_positions)) :]
    return hooked


def _as_stream(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` shaped as ``like`` (a module may see its tokens flattened)."""
    return value.reshape(like.shape)


def _close(
    actual: torch.Tensor, expected: torch.Tensor, what: str, exact: bool = False
) -> None:
    from nnterp.validation import identical

    if exact:
        assert identical(actual, expected), (
            f"{what} differs from the plain forward hook"
        )
        return
    tolerance = _tolerance(expected.dtype)
    actual, expected = _without_shared_nan(actual, expected, what)
    scale = float(expected.abs().max()) or 1.0
    gap = float((actual - expected).abs().max()) / scale
    assert gap < tolerance, f"{what}: relative gap {gap:.3g}"


def _without_shared_nan(actual: torch.Tensor, expected: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float, NaN set to 0 after checking they are NaN at the same positions (a model
    computes NaN where its mask leaves a padding query nothing to attend to, in every run)."""
    actual, expected = actual.detach().float(), expected.detach().float()
    assert torch.equal(actual.isnan(), expected.isnan()), f"{what}: NaN at other positions than the expected value's"
    nan = actual.isnan()
    return actual.masked_fill(nan, 0), expected.masked_fill(nan, 0)


def _tolerance(dtype: torch.dtype) -> float:
    """The relative gap rounding alone may leave in ``dtype`` (float32: 1e-4)."""
    if dtype in (torch.float32, torch.float64):
        return 1e-4
    return 4 * torch.finfo(dtype).eps


def check_mlp_hidden(model: Any) -> None:
    """``mlps_hidden[i]`` equals the input of the HF down projection (called once per forward)."""
    import nnsight

    layers = _available_layers(model, "mlps_hidden")
    structure = model.layer_structure
    modules = {
        str(layer): _layer_module(model, layer, structure.mlps[layer].down_proj)
        for layer in layers
    }
    read: dict[int, Any] = {}
    with _hooked(modules) as seen:  # noqa: SIM117 - NNsight reads the trace's own block
        with torch.no_grad(), model.trace(_encoding(model)):
            for layer in layers:
                read[layer] = nnsight.save(model.mlps_hidden[layer])
    for layer in layers:
        calls = seen[str(layer)]
        assert len(calls) == _layer_calls(model, layer), (
            f"layer {layer}'s down projection ran {len(calls)} times in one forward"
        )
        hooked = _standard(model, calls[model.layer_call(layer)][0])
        assert read[layer].dim() == 3, (
            f"mlps_hidden[{layer}] has shape {tuple(read[layer].shape)}"
        )
        _close(
            _as_stream(read[layer], hooked), hooked, f"mlps_hidden[{layer}]", exact=True
        )


def check_layers_mid(model: Any) -> None:
    """``layers_input + mixers_output == layers_mid`` and ``layers_mid + mlps_output ==
    layers_output`` (to rounding), and the MLP's norm turns ``layers_mid`` into ``mlps_input``."""
    import nnsight

    from nnterp.norm_scales import sublayer_module_path
    from nnterp.validation import identity_gap, identity_tolerance

    layers = _available_layers(model, "layers_mid")
    structure = model.layer_structure
    norms = {
        str(layer): _layer_module(model, layer, structure.norms[layer].mlp)
        for layer in layers
        if structure.norms[layer].mlp
    }
    parts: dict[int, Any] = {}
    with _hooked(norms) as seen:  # noqa: SIM117 - NNsight reads the trace's own block
        with torch.no_grad(), model.trace(_encoding(model)):
            for layer in layers:
                entering = nnsight.save(model.layers_input[layer])
                mixer = nnsight.save(model.mixers_output[layer])
                mid = nnsight.save(model.layers_mid[layer])
                mlp_in = nnsight.save(model.mlps_input[layer])
                mlp = (
                    nnsight.save(model.mlps_output[layer])
                    if structure.mlp_unavailable(layer) is None
                    else None
                )
                leaving = nnsight.save(model.layers_output[layer])
                parts[layer] = (entering, mixer, mid, mlp_in, mlp, leaving)
    for layer, (entering, mixer, mid, mlp_in, mlp, leaving) in parts.items():
        tolerance = identity_tolerance(leaving.dtype)
        gap = identity_gap(entering, [mixer], mid)
        assert gap <= tolerance, (
            f"layers_mid[{layer}] is not layers_input + mixers_output (relative gap {gap:.3g})"
        )
        if mlp is not None:
            gap = identity_gap(mid, [mlp], leaving)
            assert gap <= tolerance, (
                f"layers_mid[{layer}] + mlps_output is not layers_output (gap {gap:.3g})"
            )
        if str(layer) in seen:
            hooked_in, hooked_out = (
                _standard(model, value) for value in seen[str(layer)][model.layer_call(layer)]
            )
            _close(
                _as_stream(mid, hooked_in),
                hooked_in,
                f"layers_mid[{layer}] (the MLP norm's input)",
                exact=True,
            )
        container = sublayer_module_path(model, layer, "mlp")
        norm = structure.norms[layer].mlp
        if norm is not None and not (
            container is not None and norm.startswith(f"{container}.")
        ):
            _close(
                _as_stream(mlp_in, hooked_out),
                hooked_out,
                f"the MLP norm's output at layer {layer}",
                exact=True,
            )
        else:  # the MLP module receives the stream itself (and may normalise it inside)
            _close(
                mlp_in,
                mid,
                f"mlps_input[{layer}] (an MLP reading the stream itself)",
                exact=True,
            )


def _fits_affine(
    x: torch.Tensor, out: torch.Tensor, scale: torch.Tensor, centred: bool
) -> float:
    """How far ``out`` is from one per-channel affine map of ``x * scale`` (``x - mean`` when
    ``centred``), relative to ``out``'s size."""
    x = x.float().reshape(-1, x.shape[-1])
    out = out.float().reshape(-1, out.shape[-1])
    unit = (x - x.mean(-1, keepdim=True) if centred else x) * scale.float().reshape(
        -1, 1
    )
    design = torch.stack([unit, torch.ones_like(unit)], -1)  # (tokens, hidden, 2)
    gram = torch.einsum("thi,thj->hij", design, design) + 1e-9 * torch.eye(2)
    coefficients = torch.linalg.solve(gram, torch.einsum("thi,th->hi", design, out))
    fitted = torch.einsum("thi,hi->th", design, coefficients)
    return float((fitted - out).abs().max()) / (float(out.abs().max()) or 1.0)


def check_norm_scales(model: Any) -> None:
    """Each norm's output, in the forward, is a per-channel affine map of its input times the
    scale nnterp reads (``attentions_norm_scale``, ``mlps_norm_scale``, ``ln_final_scale``)."""
    import nnsight

    from nnterp.norm_scales import NormForm, sublayer_module_path

    report = model.support()
    targets: dict[str, tuple[torch.nn.Module, Callable[[], Any], NormForm]] = {}
    #: The sublayer module each norm feeds, where the norm sits outside it.
    fed: dict[str, torch.nn.Module] = {}
    for site, sublayer in (
        ("attentions_norm_scale", "mixer"),
        ("mlps_norm_scale", "mlp"),
    ):
        status = report[site]
        for layer in range(model.num_layers):
            why = status.get(layer) if isinstance(status, dict) else status
            if why is None:
                accessor = getattr(model, site)
                path = getattr(model.layer_structure.norms[layer], sublayer)
                form = accessor.form(layer)
                assert isinstance(form, NormForm), form
                targets[f"{site}.{layer}"] = (
                    _layer_module(model, layer, path),
                    _deferred(accessor, layer),
                    form,
                )
                container = sublayer_module_path(
                    model, layer, "attention" if sublayer == "mixer" else "mlp"
                )
                if container is not None and not path.startswith(f"{container}."):
                    fed[f"{site}.{layer}"] = _layer_module(model, layer, container)
    if report["ln_final_scale"] is None:
        from nnterp.norm_scales import final_form

        module = model._module.get_submodule(model.paths["ln_final"])
        final = final_form(model)
        assert isinstance(final, NormForm), final
        targets["ln_final_scale"] = (module, lambda: model.ln_final_scale, final)
    if not targets:
        raise UnavailableComponentError(f"norm scales: {report['ln_final_scale']}")
    order = [name for name in targets if name != "ln_final_scale"]
    order.sort(key=lambda name: (int(name.rsplit(".", 1)[1]), name.startswith("mlps")))
    if "ln_final_scale" in targets:
        order.append("ln_final_scale")
    read: dict[str, Any] = {}
    watched = {name: targets[name][0] for name in order}
    watched.update({f"{name} fed": module for name, module in fed.items()})
    with _hooked(watched) as seen:  # noqa: SIM117 - NNsight reads the trace's own block
        with torch.no_grad(), model.trace(_encoding(model)):
            for name in order:
                read[name] = nnsight.save(targets[name][1]())
    def call(name: str) -> int:
        """Which hooked call of ``name``'s module is its layer's (the final norm: the last)."""
        if name == "ln_final_scale":
            return -1
        return int(model.layer_call(int(name.rsplit(".", 1)[1])))

    for name in fed:
        norm_out, sublayer_in = seen[name][call(name)][1], seen[f"{name} fed"][call(name)][0]
        assert torch.equal(norm_out, sublayer_in), (
            f"{name}: the norm's output is not what its sublayer receives"
        )
    for name in order:
        hooked_in, hooked_out = (_standard(model, value) for value in seen[name][call(name)])
        form = targets[name][2]
        scale = read[name]
        assert tuple(scale.shape[-1:]) == (1,), f"{name} has shape {tuple(scale.shape)}"
        gap = _fits_affine(hooked_in, hooked_out, scale, form.kind == "layer")
        assert gap < max(1e-3, _tolerance(hooked_out.dtype)), (
            f"{name}: the norm's output is not an affine map of its input times the scale ({gap:.3g})"
        )


def _deferred(accessor: Any, layer: int) -> Callable[[], Any]:
    return lambda: accessor[layer]


def check_attention_scores(model: Any) -> None:
    """``softmax(attention_scores[i]) == attention_probabilities[i]`` on every attention layer."""
    import nnsight

    layers = _available_layers(model, "attention_scores")
    pairs: dict[int, Any] = {}
    with torch.no_grad(), model.trace(_encoding(model)):
        for layer in layers:
            scores = nnsight.save(model.attention_scores[layer])
            pairs[layer] = (scores, nnsight.save(model.attention_probabilities[layer]))
    for layer, (scores, probabilities) in pairs.items():
        assert scores.shape == probabilities.shape, (
            f"attention_scores[{layer}] has shape {tuple(scores.shape)}"
        )
        expected, actual = _without_shared_nan(scores.float().softmax(-1), probabilities, f"attention_probabilities[{layer}]")
        gap = float((expected - actual).abs().max())
        assert gap < _tolerance(probabilities.dtype) / 10, (
            f"softmax(attention_scores[{layer}]) differs from attention_probabilities by {gap:.3g}"
        )


def check_heads_result(model: Any) -> None:
    """``heads_result[i].sum(-2) + bias`` equals the HF output projection's output."""
    import nnsight

    layers = _available_layers(model, "heads_result")
    o_proj = model.heads_result.layout.o_proj
    modules = {
        str(layer): _layer_module(model, layer, f"{model.paths['self_attn']}.{o_proj}")
        for layer in layers
    }
    read: dict[int, Any] = {}
    with _hooked(modules) as seen:  # noqa: SIM117 - NNsight reads the trace's own block
        with torch.no_grad(), model.trace(_encoding(model)):
            for layer in layers:
                read[layer] = nnsight.save(model.heads_result[layer])
    for layer in layers:
        bias = modules[str(layer)].bias
        total = read[layer].sum(-2) + (0 if bias is None else bias)
        _close(
            total,
            _standard(model, seen[str(layer)][model.layer_call(layer)][1]),
            f"heads_result[{layer}] summed over heads",
        )


#: The derived-site checks, by name (merge into `nnterp.testing.conformance.CHECKS`).
SITE_CHECKS: dict[str, Callable[[Any], None]] = {
    "mlp_hidden": check_mlp_hidden,
    "layers_mid": check_layers_mid,
    "norm_scales": check_norm_scales,
    "attention_scores": check_attention_scores,
    "heads_result": check_heads_result,
}

__all__ = [
    "SITE_CHECKS",
    "check_attention_scores",
    "check_heads_result",
    "check_layers_mid",
    "check_mlp_hidden",
    "check_norm_scales",
]
