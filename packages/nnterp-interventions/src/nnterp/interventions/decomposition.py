"""Residual-stream decomposition and direct logit attribution (DLA).

The residual stream entering the final norm is a sum of what each part of the model wrote
into it::

    residual = embeddings + sum over layers (attention output + MLP output)

(``embeddings`` is what enters layer 0: token plus position embeddings). Per head, each
attention output splits further into every head's share through ``o_proj`` plus its bias
(`nnterp.heads.project_heads`).

Direct logit attribution maps each component to the logit (or logit difference) it adds.
The final norm is not linear, so it is *frozen* at the actual residual stream: a LayerNorm
or RMSNorm computes ``gamma * P(x) / s(x) + beta``, with ``P`` the centering (LayerNorm) or
identity (RMSNorm) and ``s(x)`` one scale per prompt. Holding ``s`` at its value for the real
residual, the norm is the affine map ``c -> D * P(c)`` plus ``beta``, with ``D = gamma / s``,
and so the logit splits exactly:

    logit = sum over components (D * P(c)) . u  +  (beta . u + unembedding bias)

where ``u`` is the unembedding row of the token (the difference of two rows for a logit
difference). ``D``, the centering and ``beta`` are measured from the norm module itself (by
probing it with known inputs), so any norm of that form works without per-model code.

The components are the standard contributions (`nnterp.sites`): ``mixers_output`` (labelled
``attn.L`` on softmax-attention layers, ``mixer.L`` on a hybrid's other layers) and
``mlps_output``, which the architecture spec places wherever each family adds its sublayers to
the residual stream (after Gemma-2/3's post-norms, without BLOOM's in-module residual, times
Granite's branch scale, ...), so the decomposition holds on every family where
``model.support()`` reports them. Blocks with no additive contribution (post-norm BERT/GPT-1,
rescaled residuals) raise an error naming the reason and ``split="layer"``, which attributes
each layer's whole update instead. Per-head shares go through any post-attention norm frozen at
the real attention output, exactly like the final norm.

Logit post-processing is part of the unembedding chain: a projection between the final norm
and the unembedding (OPT's ``project_out``) folds into the direction, linear logit scales
(Cohere's ``logit_scale``, Granite's ``logits_scaling``) scale every contribution, so ``total``
equals the model's logit; with a soft-cap (Gemma-2/3), contributions are in pre-cap units and
``total`` applies the cap to their sum, which again gives the model's logit.

Attribution toward a direction: ``logit_attribution(..., direction=v)`` attributes
``final_norm(residual) . v`` (a probe, a steering vector, a difference of means) instead of a
logit: each component's share is ``(D * P(c)) . v`` and the bias term ``beta . v``; with
``apply_final_norm=False`` it is ``c . v`` on the raw residual stream (no norm, no bias). No
unembedding, logit scale or soft-cap is involved.

Positions: an int (the same position in every prompt), one int per prompt (``[4, 6]``), or one
list per prompt (``[[2, -1], [3, -1]]``, equal lengths: results gain a position dimension),
each counted within its prompt (``-1``: its last token), whatever the padding.

Example:
    >>> from nnterp.interventions.decomposition import logit_attribution
    >>> dla = logit_attribution(model, "The capital of France is", paris_id, baseline=london_id,
    ...                         per_head=True)
    >>> dict(zip(dla.labels, dla.contributions[0].tolist()))   # {'embed': .., 'attn.0': .., ...}
    >>> dla.head_contributions[0].shape                         # (layers, heads)
    >>> probe = logit_attribution(model, prompts, direction=probe_vector, position=[[-2, -1]] * 2)
    >>> probe.contributions.shape                               # (batch, 2 positions, components)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from nnterp.cache import ActivationCache, cache_activations, is_per_prompt
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.heads import attention_layout, project_heads
from nnterp.inputs import require_finite
from nnterp.interventions.metrics import TokenIds
from nnterp.positions import as_position_list
from nnterp.unembedding import apply_logit_steps, linear_logit_scale
from nnterp.tracing import remote_aware

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

SPLITS = ("attn_mlp", "layer")

#: A position argument: one int for every prompt, one int per prompt, or one list per prompt.
PositionArg = int | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor


@dataclass(frozen=True)
class ResidualDecomposition:
    """The final residual stream at one position, as a sum of components.

    Shapes below are for one position per prompt; with one list of ``n`` positions per prompt
    every ``batch`` becomes ``batch, n``.

    Attributes:
        labels: component names: ``"embed"``, then ``"attn.L"``, ``"mlp.L"`` per layer (or
            ``"layer.L"`` with ``split="layer"``).
        components: (components, batch, hidden); ``components.sum(0) == residual``.
        residual: (batch, hidden), the stream entering the final norm (last layer's output).
        head_components: with ``per_head``: (attention layers, heads, batch, hidden), each
            head's share of ``attn.L`` without the output-projection bias; else ``None``.
        attention_biases: with ``per_head``: (attention layers, batch, hidden), the
            output-projection bias's part (through any post-attention norm), so
            ``head_components[k].sum(0) + attention_biases[k] == attn.L`` for the k-th attention
            layer L; else ``None``.
        head_layers: with ``per_head``: the layer of each row of ``head_components``.
    """

    labels: list[str]
    components: torch.Tensor
    residual: torch.Tensor
    head_components: torch.Tensor | None = None
    attention_biases: torch.Tensor | None = None
    head_layers: list[int] | None = None


@dataclass(frozen=True)
class FrozenNorm:
    """A norm ``gamma * P(x) / s(x) + beta`` with ``s`` frozen at one residual stream.

    Attributes:
        scale: (batch, hidden), ``gamma / s`` for each prompt.
        centered: whether ``P`` subtracts the mean (LayerNorm) or not (RMSNorm).
        offset: (hidden,), ``beta`` (zeros for a norm without bias).
    """

    scale: torch.Tensor
    centered: bool
    offset: torch.Tensor

    def apply(self, component: torch.Tensor) -> torch.Tensor:
        """``scale * P(component)`` for (..., batch, hidden) components (no offset)."""
        if self.centered:
            component = component - component.mean(dim=-1, keepdim=True)
        return component * self.scale

    def adjoint(self, vector: torch.Tensor) -> torch.Tensor:
        """The (batch, hidden) vectors ``w`` with ``apply(c) . vector == c . w`` for every
        component ``c``: ``P(scale * vector)`` (the centering is symmetric)."""
        weighted = vector * self.scale
        if self.centered:
            weighted = weighted - weighted.mean(dim=-1, keepdim=True)
        return weighted


@dataclass(frozen=True)
class LogitAttribution:
    """What each component adds to one logit (or logit difference, or direction), per prompt.

    Shapes below are for one position per prompt; with one list of ``n`` positions per prompt
    every ``batch`` becomes ``batch, n``.

    Attributes:
        labels: component names (see `ResidualDecomposition`).
        contributions: (batch, components).
        bias: (batch,), the final norm's bias and the unembedding bias, through the unembedding
            (for a direction: the final norm's bias along it; zero without the norm).
        total: (batch,), the logit (difference) the components give: ``contributions.sum(-1) +
            bias``, through the model's soft-cap when it has one (linear logit scales are
            already in every contribution); equals ``logits``.
        logits: (batch,), the same quantity read from the model's output logits (for a
            direction: the final norm's real output, or the residual stream, dotted with it).
        head_contributions: (batch, attention layers, heads) with ``per_head``, else ``None``.
        attention_bias_contributions: (batch, attention layers) with ``per_head``: the
            output-projection bias's part of each ``attn.L`` (``head_contributions.sum(-1) +
            this == attn.L``).
        head_layers: with ``per_head``: the layer of each attention-layer column.
    """

    labels: list[str]
    contributions: torch.Tensor
    bias: torch.Tensor
    total: torch.Tensor
    logits: torch.Tensor
    head_contributions: torch.Tensor | None = None
    attention_bias_contributions: torch.Tensor | None = None
    head_layers: list[int] | None = None

    def as_dict(self, prompt: int = 0, position: int = 0) -> dict[str, float]:
        """``{label: contribution}`` of one prompt (and of its ``position``-th attributed
        position when there are several), plus ``"bias"``."""
        contributions, bias = self.contributions[prompt], self.bias[prompt]
        if contributions.dim() == 2:
            contributions, bias = contributions[position], bias[position]
        values = dict(zip(self.labels, contributions.tolist()))
        values["bias"] = float(bias)
        return values


@dataclass(frozen=True)
class Readout:
    """A logit (difference) or direction readout made linear in the residual stream, with the
    final norm frozen at the real residual: any component ``c`` of that residual (batch, hidden)
    adds ``(c * vectors).sum(-1)``, and ``bias`` is the part no component writes.

    Attributes:
        vectors: (batch, hidden), one per attributed row.
        bias: (batch,), the final norm's bias and the unembedding bias through the readout.

    Example:
        >>> out = readout(model, residual, target=paris_id)
        >>> share = out.share(mlp_contribution)            # (batch,)
    """

    vectors: torch.Tensor
    bias: torch.Tensor

    def share(self, component: torch.Tensor) -> torch.Tensor:
        """What (..., batch, hidden) ``component`` adds to the readout: (..., batch)."""
        return (component * self.vectors).sum(-1)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1.0)
    return bool(torch.allclose(a, b, rtol=0, atol=1e-4 * scale))


def _sites(model: StandardizedTransformer, split: str, per_head: bool) -> list[str]:
    sites = ["layers_input", "layers_output", "logits"]
    if split == "attn_mlp":
        structure = model.layer_structure
        for layer in range(model.num_layers):
            if structure.mixers[layer] is not None:
                sites.append(f"mixers_output.{layer}")
            if structure.has_mlp(layer):
                sites.append(f"mlps_output.{layer}")
    if per_head:
        sites += [f"heads_output.{layer}" for layer in model.attention_layers]
    return sites


@torch.no_grad()
@remote_aware
def decompose_residual(
    model: StandardizedTransformer,
    prompts: Any,
    *,
    position: PositionArg = -1,
    split: str = "attn_mlp",
    per_head: bool = False,
    remote: bool | str | None = None,
) -> ResidualDecomposition:
    """Split the final residual stream at ``position`` into what each component wrote.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        position: counted per prompt (``-1``: last token): one int for every prompt, one int
            per prompt, or one list per prompt (equal lengths; shapes gain that dimension).
        split: ``"attn_mlp"`` (embeddings, then each layer's mixer and MLP contributions) or
            ``"layer"`` (embeddings, then each layer's whole update).
        per_head: also split each attention contribution by head (``split="attn_mlp"`` only).
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        A `ResidualDecomposition` (float32, CPU).

    Raises:
        UnavailableComponentError: the blocks add no sublayer contributions to the stream
            (the reason is ``model.support()["mixers_output"]``; use ``split="layer"``), or
            the stream is transformed between layers.

    Example:
        >>> parts = decompose_residual(model, ["The capital of France is"], per_head=True)
        >>> torch.allclose(parts.components.sum(0), parts.residual, atol=1e-4)
        True
    """
    cache, per_prompt = _run(model, prompts, position, split, per_head)
    return _unflatten_parts(_decompose(model, cache, split, per_head), per_prompt)


def _prompt_count(prompts: Any) -> int | None:
    if isinstance(prompts, str):
        return 1
    if isinstance(prompts, (list, tuple)):
        return len(prompts)
    return None


def _cache_positions(position: Any, prompts: Any) -> tuple[Any, int | None]:
    """``position`` as `cache_activations` positions, and the number of positions per prompt
    when they come as one list per prompt (``None``: one position per prompt)."""
    if isinstance(position, torch.Tensor) and position.dim() <= 1:
        position = position.tolist()
    if isinstance(position, bool):
        raise InvalidInputError(f"position must be an int, one int per prompt or one list per prompt, got {position!r}")
    if isinstance(position, int):
        return position, None
    if is_per_prompt(position):
        lengths = [len(row) for row in position]
        if len(set(lengths)) != 1:
            raise InvalidInputError(
                f"position gives prompts different numbers of positions ({lengths}): give every prompt the same number."
            )
        return position, lengths[0]
    one_each = as_position_list(position, "position")
    count = _prompt_count(prompts)
    if count is not None and len(one_each) != count:
        raise InvalidInputError(
            f"position gives {len(one_each)} positions for {count} prompts: give one int (every "
            "prompt), one int per prompt, or one list of positions per prompt."
        )
    return [[value] for value in one_each], None


def cache_rows(
    model: StandardizedTransformer, prompts: Any, position: PositionArg, sites: list[str]
) -> tuple[ActivationCache, int | None]:
    """``sites`` at ``position`` as rows, float32 on the CPU: (batch, ...) for one position per
    prompt, (batch * n, ...) for one list of ``n`` positions per prompt; and that ``n``
    (``None`` for one position). `unflatten_rows` gives results their position dimension back.

    Example:
        >>> cache, per_prompt = cache_rows(model, ["Hi", "Hey"], [[0, -1]] * 2, ["mlps_output.1"])
        >>> cache["mlps_output.1"].shape, per_prompt           # ((4, hidden), 2)
    """
    positions, per_prompt = _cache_positions(position, prompts)
    cache = cache_activations(model, prompts, sites, positions=positions, dtype=torch.float32)
    if isinstance(positions, int):
        return cache, None
    return ActivationCache(cache.num_layers, {key: value.flatten(0, 1) for key, value in cache.items()}), per_prompt


def unflatten_rows(value: Any, dim: int, per_prompt: int | None) -> Any:
    """``value``'s row dimension ``dim`` split back into (batch, n) (see `cache_rows`)."""
    if value is None or per_prompt is None:
        return value
    return value.unflatten(dim, (-1, per_prompt))


def component_label(model: StandardizedTransformer, site: str) -> str | None:
    """The decomposition's label of the component a site key holds (``"mlps_output.3"`` ->
    ``"mlp.3"``, ``"attentions_output.2"`` -> ``"attn.2"``, a hybrid's other mixers
    ``"mixer.L"``), or ``None`` for a site that is not one component of the stream.

    Example:
        >>> component_label(model, "mixers_output.0")
        'attn.0'
    """
    name, _, layer_text = site.partition(".")
    if not layer_text:
        return None
    layer = int(layer_text)
    if name == "mlps_output":
        return f"mlp.{layer}"
    if name == "attentions_output":
        return f"attn.{layer}"
    if name == "mixers_output":
        return f"attn.{layer}" if model.layer_kinds[layer] == "attention" else f"mixer.{layer}"
    return None


def _unflatten_parts(parts: ResidualDecomposition, per_prompt: int | None) -> ResidualDecomposition:
    if per_prompt is None:
        return parts
    return replace(
        parts,
        components=unflatten_rows(parts.components, 1, per_prompt),
        residual=unflatten_rows(parts.residual, 0, per_prompt),
        head_components=unflatten_rows(parts.head_components, 2, per_prompt),
        attention_biases=unflatten_rows(parts.attention_biases, 1, per_prompt),
    )


def _run(
    model: StandardizedTransformer, prompts: Any, position: Any, split: str, per_head: bool
) -> tuple[ActivationCache, int | None]:
    """The cache the decomposition needs, as rows (one per prompt and position), and the
    number of positions per prompt when several (``None``: one)."""
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if per_head and split != "attn_mlp":
        raise InvalidInputError("per_head=True needs split='attn_mlp' (heads split the attention outputs)")
    _cache_positions(position, prompts)
    if split == "attn_mlp":
        structure = model.layer_structure
        reasons = {
            why
            for layer in range(model.num_layers)
            for why in (
                structure.mixer_unavailable(layer) if structure.mixers[layer] is not None else structure.non_additive,
                structure.mlp_unavailable(layer) if structure.has_mlp(layer) else None,
            )
        } - {None}
        if reasons:
            raise UnavailableComponentError(
                f"{model.spec.name}: the residual stream does not split into sublayer contributions "
                f"({'; '.join(sorted(str(r) for r in reasons))}). Use split='layer' to attribute each "
                "layer's whole update."
            )
    if per_head and not model.attention_layers:
        raise UnavailableComponentError(f"{model.spec.name}: per_head=True needs softmax-attention layers; this model has none.")
    return cache_rows(model, prompts, position, _sites(model, split, per_head))


def _decompose(
    model: StandardizedTransformer, cache: ActivationCache, split: str, per_head: bool
) -> ResidualDecomposition:
    labels = ["embed"]
    components = [cache["layers_input.0"]]
    kinds = model.layer_kinds
    heads: list[torch.Tensor] = []
    biases: list[torch.Tensor] = []
    for layer in range(model.num_layers):
        entering, leaving = cache[f"layers_input.{layer}"], cache[f"layers_output.{layer}"]
        if layer > 0 and not _close(entering, cache[f"layers_output.{layer - 1}"]):
            raise UnavailableComponentError(
                f"{model.spec.name}: layer {layer}'s input is not layer {layer - 1}'s output, so the "
                "residual stream cannot be decomposed into layer contributions."
            )
        update = leaving - entering
        if split == "layer":
            labels.append(f"layer.{layer}")
            components.append(update)
            continue
        has_mixer, has_mlp = f"mixers_output.{layer}" in cache, f"mlps_output.{layer}" in cache
        mixer = cache[f"mixers_output.{layer}"] if has_mixer else torch.zeros_like(update)
        parts = [mixer] + ([cache[f"mlps_output.{layer}"]] if has_mlp else [])
        if not _close(torch.stack(parts).sum(0), update):
            raise UnavailableComponentError(
                f"{model.spec.name}: layer {layer}'s mixer and MLP contributions do not add up to its "
                "update on these prompts, so they are not components of the stream. Use split='layer' "
                "to attribute each layer's whole update."
            )
        if has_mixer:
            labels.append(str(component_label(model, f"mixers_output.{layer}")))
            components.append(mixer)
        if has_mlp:
            labels.append(str(component_label(model, f"mlps_output.{layer}")))
            components.append(parts[1])
        if per_head and kinds[layer] == "attention":
            per_head_output, bias = attention_head_shares(model, layer, cache[f"heads_output.{layer}"], mixer)
            heads.append(per_head_output.movedim(-2, 0))
            biases.append(bias)
    return ResidualDecomposition(
        labels=labels,
        components=torch.stack(components),
        residual=cache[f"layers_output.{model.num_layers - 1}"],
        head_components=torch.stack(heads) if per_head else None,
        attention_biases=torch.stack(biases) if per_head else None,
        head_layers=list(model.attention_layers) if per_head else None,
    )


def attention_head_shares(
    model: StandardizedTransformer, layer: int, heads_output: torch.Tensor, contribution: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each head's share of layer ``layer``'s attention *contribution* (outside a trace).

    `nnterp.heads.project_heads` splits the attention module's output through ``o_proj``;
    this carries the split on to what the block adds: through a post-attention norm frozen at
    the real attention output (Gemma-2/3, OLMo-2), and times a branch scale (Granite).

    Args:
        model: the `StandardizedTransformer`.
        layer: a softmax-attention layer.
        heads_output: (batch, heads, head_dim), a cached ``heads_output`` at one position.
        contribution: (batch, hidden), the cached ``attentions_output`` at that position.

    Returns:
        ``(per_head, bias)``: (batch, heads, hidden) float32 CPU, and (batch, hidden), the part
        that belongs to no head; ``per_head.sum(-2) + bias == contribution``.

    Raises:
        UnavailableComponentError: the contribution is not a per-position affine image of the
            attention output (so heads have no separate shares).

    Example:
        >>> cache = cache_activations(model, "Hi there", ["heads_output.1", "attentions_output.1"], positions=-1)
        >>> per_head, bias = attention_head_shares(model, 1, cache["heads_output.1"], cache["attentions_output.1"])
    """
    per_head, bias = project_heads(model, layer, heads_output)
    per_head, bias = per_head.float().cpu(), bias.float().cpu().expand(per_head.shape[0], -1)
    mixer = model.layer_structure.mixers[layer]
    assert mixer is not None
    layer_module = model.layer_module(layer)
    o_proj_path = f"{mixer.path}.{attention_layout(model).o_proj}"
    if mixer.contribution.output not in (None, o_proj_path):
        # A module after the attention that transforms its output: a post-attention norm.
        raw = per_head.sum(-2) + bias
        frozen = freeze_norm(layer_module.get_submodule(mixer.contribution.output), raw, model.spec.name)
        per_head = frozen.apply(per_head.movedim(-2, 0)).movedim(0, -2)
        bias = frozen.apply(bias) + frozen.offset
    if mixer.contribution.scale is not None:
        scale = float(getattr(layer_module, mixer.contribution.scale))
        per_head, bias = per_head * scale, bias * scale
    if not _close(per_head.sum(-2) + bias, contribution.float().cpu()):
        raise UnavailableComponentError(
            f"{model.spec.name}: layer {layer}'s attention contribution is not its heads' outputs through "
            "o_proj (and a frozen post-attention norm), so heads have no separate shares."
        )
    return per_head, bias


def _submodule(model: StandardizedTransformer, part: str) -> torch.nn.Module | None:
    path = model.paths.get(part)
    return None if path is None else model._module.get_submodule(path)


@torch.no_grad()
def freeze_norm(norm: torch.nn.Module, residual: torch.Tensor, owner: str = "the model") -> FrozenNorm:
    """A norm module as an affine map, its scale frozen at ``residual`` (batch, hidden).

    Probes the module: its output on zeros is its bias ``beta``; invariance to adding a
    constant to every coordinate tells a centering (LayerNorm) norm; its output on a ``+-1``
    vector gives ``gamma`` up to a constant factor, which the least-squares fit of each
    prompt's scale ``s`` cancels. Checked: ``scale * P(residual) + offset`` equals the norm's
    output.

    Raises:
        UnavailableComponentError: the module is not of the form ``gamma * P(x) / s + beta``.

    Example:
        >>> frozen = freeze_norm(hf_model.model.layers[0].post_attention_layernorm, attention_out)
        >>> torch.allclose(frozen.apply(attention_out) + frozen.offset, norm(attention_out), atol=1e-5)
        True
    """
    hidden = residual.shape[-1]
    parameter = next(norm.parameters(), None)
    dtype = parameter.dtype if parameter is not None else residual.dtype
    device = parameter.device if parameter is not None else residual.device

    def run(x: torch.Tensor) -> torch.Tensor:
        return norm(x.to(device=device, dtype=dtype)).float().cpu()

    try:
        x = residual.float()
        out = run(x)
        offset = run(x.new_zeros(1, hidden))[0]
        centered = _close(run(x + (x.abs().mean() + 1.0)), out)
        probe = torch.ones(hidden)
        probe[1::2] = -1.0
        if centered:
            probe = probe - probe.mean()
        gamma = (run(probe[None])[0] - offset) / probe
        centred_x = x - x.mean(dim=-1, keepdim=True) if centered else x
        weighted = gamma * centred_x
        target = out - offset
        s = (weighted * weighted).sum(-1, keepdim=True) / (weighted * target).sum(-1, keepdim=True)
        frozen = FrozenNorm(scale=gamma / s, centered=centered, offset=offset)
        matches = _close(frozen.apply(x) + offset, out)
    except (RuntimeError, TypeError, ValueError) as error:
        raise UnavailableComponentError(
            f"{owner}: {type(norm).__name__} could not be probed as a norm ({error})."
        ) from None
    if not matches:
        raise UnavailableComponentError(
            f"{owner}: {type(norm).__name__} is not of the form gamma * P(x) / s(x) + beta, so the "
            "contributions through it cannot be separated."
        )
    return frozen


@torch.no_grad()
def freeze_final_norm(model: StandardizedTransformer, residual: torch.Tensor) -> FrozenNorm:
    """The final norm as an affine map, its scale frozen at ``residual`` (batch, hidden)
    (see `freeze_norm`); the identity map when the model has no final norm.

    ``frozen.apply(c) + frozen.offset`` is what the final norm outputs for the residual;
    ``frozen.apply(c)`` of each component ``c`` of it is that component's share (the shares sum
    to the output minus ``offset``). Use it to attribute to any direction or readout.

    Raises:
        UnavailableComponentError: the final norm is not of the form ``gamma * P(x) / s + beta``.

    Example:
        >>> frozen = freeze_final_norm(model, parts.residual)
        >>> normed = frozen.apply(parts.components).sum(0) + frozen.offset
    """
    norm = _submodule(model, "ln_final")
    if norm is None:
        return FrozenNorm(torch.ones_like(residual.float()), False, residual.new_zeros(residual.shape[-1]).float())
    return freeze_norm(norm, residual, f"{model.spec.name}'s final norm")


def _linear_rows(module: torch.nn.Module | None, owner: str, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    weight = getattr(module, "weight", None)
    if not isinstance(module, torch.nn.Linear) or weight is None:
        raise UnavailableComponentError(
            f"{owner}'s {part} is a {type(module).__name__}, not a linear map: direct logit attribution needs one."
        )
    rows = weight.detach().float().cpu()
    bias = module.bias.detach().float().cpu() if module.bias is not None else torch.zeros(rows.shape[0])
    return rows, bias


def _unembedding(model: StandardizedTransformer, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions (batch, hidden), biases (batch,)): each prompt's token row of the whole
    linear unembedding, folded through a projection between the final norm and ``lm_head``."""
    rows, bias = _linear_rows(_submodule(model, "lm_head"), model.spec.name, "lm_head")
    direction, offset = rows[tokens], bias[tokens]
    projection = model.unembedding_projection_module()
    if projection is not None:
        weight, projection_bias = _linear_rows(projection, model.spec.name, "unembedding projection")
        direction, offset = direction @ weight, offset + direction @ projection_bias
    return direction, offset


def _token_rows(tokens: TokenIds, batch: int, vocab: int, name: str) -> torch.Tensor:
    ids = torch.as_tensor(tokens, dtype=torch.long).reshape(-1)
    if ids.numel() == 1:
        ids = ids.expand(batch)
    if ids.numel() != batch:
        raise InvalidInputError(f"{name}: give one token id, or one per prompt ({batch}); got {ids.numel()}")
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise InvalidInputError(f"{name}: token ids must be in 0..{vocab - 1}, got {ids.tolist()}")
    return ids


def _direction_rows(direction: Any, prompts: int, per_prompt: int | None, hidden: int) -> torch.Tensor:
    """``direction`` ((hidden,) or (prompts, hidden)) as one float32 row per attributed row."""
    if not isinstance(direction, torch.Tensor):
        try:
            direction = torch.as_tensor(direction)
        except Exception as error:
            raise InvalidInputError(f"direction must be a tensor, got {type(direction).__name__}") from error
    if direction.is_complex() or direction.dim() not in (1, 2) or direction.shape[-1] != hidden:
        raise InvalidInputError(
            f"direction has shape {tuple(direction.shape)}: give a ({hidden},) vector or one per "
            f"prompt, ({prompts}, {hidden}) (the residual stream is {hidden} wide)."
        )
    if direction.dim() == 2 and direction.shape[0] != prompts:
        raise InvalidInputError(
            f"direction has {direction.shape[0]} rows for {prompts} prompts: give one ({hidden},) "
            f"vector, or one per prompt ({prompts}, {hidden})."
        )
    require_finite(direction, "direction")
    rows = direction.detach().float().cpu()
    if rows.dim() == 1:
        return rows.expand(prompts * (per_prompt or 1), -1)
    return rows.repeat_interleave(per_prompt or 1, dim=0)


def _per_prompt_ids(tokens: TokenIds, prompts: int, per_prompt: int | None, vocab: int, name: str) -> torch.Tensor:
    return _token_rows(tokens, prompts, vocab, name).repeat_interleave(per_prompt or 1)


def _check_readout(target: Any, baseline: Any, direction: Any, apply_final_norm: bool) -> None:
    if (target is None) == (direction is None):
        raise InvalidInputError("give either target (token ids) or direction (a hidden-size vector), not both or neither.")
    if direction is not None and baseline is not None:
        raise InvalidInputError("baseline applies to token ids; for a direction, attribute the difference of two directions.")
    if direction is None and not apply_final_norm:
        raise InvalidInputError("apply_final_norm=False applies to a direction: logits always go through the final norm.")


@torch.no_grad()
def readout(
    model: StandardizedTransformer,
    residual: torch.Tensor,
    target: TokenIds | None = None,
    baseline: TokenIds | None = None,
    *,
    direction: Any = None,
    apply_final_norm: bool = True,
    per_prompt: int | None = None,
) -> Readout:
    """The readout `logit_attribution` attributes, as one linear map per row, with the final
    norm frozen at ``residual``: a component's share is ``readout(...).share(component)``.

    The shares of the components of ``residual`` plus ``bias`` give the logit (difference) in
    the units before any soft-cap (times the model's linear logit scale), or the projection on
    ``direction``, exactly as `logit_attribution` computes them.

    Args:
        model: a `StandardizedTransformer`.
        residual: (rows, hidden), the stream entering the final norm, one row per attributed
            prompt (and position).
        target, baseline, direction, apply_final_norm: as `logit_attribution`.
        per_prompt: positions per prompt when rows are (prompt, position) pairs (`cache_rows`),
            so that per-prompt ids and directions repeat over each prompt's positions.

    Raises:
        InvalidInputError: as `logit_attribution`.

    Example:
        >>> cache, _ = cache_rows(model, prompts, -1, ["layers_output.-1", "mlps_output.2"])
        >>> out = readout(model, cache["layers_output.-1"], target=paris_id)
        >>> out.share(cache["mlps_output.2"])              # what layer 2's MLP adds, (batch,)
    """
    _check_readout(target, baseline, direction, apply_final_norm)
    rows = residual.shape[0]
    prompt_count = rows // (per_prompt or 1)
    if direction is not None:
        vectors = _direction_rows(direction, prompt_count, per_prompt, residual.shape[-1])
        if not apply_final_norm:
            return Readout(vectors, torch.zeros(rows))
        frozen = freeze_final_norm(model, residual)
        return Readout(frozen.adjoint(vectors), (frozen.offset * vectors).sum(-1))
    frozen = freeze_final_norm(model, residual)
    factor, _ = linear_logit_scale(model.spec, model._module.config)
    vocab = model.vocab_size

    def of(tokens: TokenIds, name: str) -> Readout:
        ids = _per_prompt_ids(tokens, prompt_count, per_prompt, vocab, name)
        unembedding, unembed_bias = _unembedding(model, ids)
        return Readout(
            frozen.adjoint(unembedding) * factor, ((frozen.offset * unembedding).sum(-1) + unembed_bias) * factor
        )

    result = of(target, "target")  # type: ignore[arg-type]
    if baseline is None:
        return result
    other = of(baseline, "baseline")
    return Readout(result.vectors - other.vectors, result.bias - other.bias)


@torch.no_grad()
@remote_aware
def logit_attribution(
    model: StandardizedTransformer,
    prompts: Any,
    target: TokenIds | None = None,
    baseline: TokenIds | None = None,
    *,
    direction: Any = None,
    apply_final_norm: bool = True,
    position: PositionArg = -1,
    split: str = "attn_mlp",
    per_head: bool = False,
    remote: bool | str | None = None,
) -> LogitAttribution:
    """Direct logit attribution: each component's share of a logit, a logit difference, or
    the projection on a direction.

    See the module docstring for the method (final norm frozen at the real residual stream).

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        target: the token id whose logit is attributed, or one per prompt.
        baseline: if given, attribute ``logit[target] - logit[baseline]`` instead.
        direction: instead of ``target``: a (hidden,) vector, or one per prompt (batch,
            hidden); attributes ``final_norm(residual) . direction``.
        apply_final_norm: with ``direction``: ``False`` attributes ``residual . direction`` on
            the raw residual stream (no final norm, no bias term).
        position: counted per prompt (``-1``: last token): one int for every prompt, one int
            per prompt (``[4, 6]``), or one list per prompt (``[[2, -1], [3, -1]]``, equal
            lengths; every result then has a position dimension after the batch).
        split: ``"attn_mlp"`` or ``"layer"`` (see `decompose_residual`).
        per_head: also attribute each attention head.
        remote: run on NDIF (``True``) or NNsight's local simulation of it (``"local"``), every
            trace of the call; default: the model's own setting.

    Returns:
        A `LogitAttribution` (float32, CPU); ``total`` equals the model's logit (difference):
        ``contributions.sum(-1) + bias`` (through the soft-cap of models that cap logits), or
        for a direction the real final norm output (or residual) dotted with it.

    Raises:
        InvalidInputError: neither or both of ``target`` and ``direction``; a ``baseline``
            with a direction; a direction of the wrong shape or holding NaN/inf; bad token
            ids or positions.

    Example:
        >>> dla = logit_attribution(model, ["The capital of France is"], paris_id, london_id)
        >>> best = dla.labels[int(dla.contributions[0].argmax())]
        >>> along = logit_attribution(model, prompts, direction=probe, position=[5, 7])
        >>> raw = logit_attribution(model, prompts, direction=probe, apply_final_norm=False)
    """
    _check_readout(target, baseline, direction, apply_final_norm)
    cache, per_prompt = _run(model, prompts, position, split, per_head)
    parts = _decompose(model, cache, split, per_head)
    rows = parts.residual.shape[0]
    prompt_count = rows // (per_prompt or 1)
    frozen = freeze_final_norm(model, parts.residual)

    if direction is not None:
        vectors = _direction_rows(direction, prompt_count, per_prompt, parts.residual.shape[-1])
        if apply_final_norm:
            along = _LinearReadout(lambda c: (frozen.apply(c) * vectors).sum(-1), (frozen.offset * vectors).sum(-1))
            normed = _final_norm_output(model, parts.residual)
        else:
            along = _LinearReadout(lambda c: (c * vectors).sum(-1), torch.zeros(rows))
            normed = parts.residual
        contributions, bias, heads, head_bias = along.attribute(parts)
        result = LogitAttribution(
            labels=parts.labels,
            contributions=contributions,
            bias=bias,
            total=contributions.sum(-1) + bias,
            logits=(normed * vectors).sum(-1),
            head_contributions=heads,
            attention_bias_contributions=head_bias,
            head_layers=parts.head_layers,
        )
        return _unflatten_attribution(result, per_prompt)

    vocab = model.vocab_size
    target_ids = _per_prompt_ids(target, prompt_count, per_prompt, vocab, "target")  # type: ignore[arg-type]
    baseline_ids = None if baseline is None else _per_prompt_ids(baseline, prompt_count, per_prompt, vocab, "baseline")
    factor, capping = linear_logit_scale(model.spec, model._module.config)
    config = model._module.config

    def attribute(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Any, Any]:
        direction, unembed_bias = _unembedding(model, tokens)
        readout = _LinearReadout(
            # (..., rows, hidden) -> (..., rows), in the units of the logits before any soft-cap
            lambda c: (frozen.apply(c) * direction).sum(-1) * factor,
            ((frozen.offset * direction).sum(-1) + unembed_bias) * factor,
        )
        contributions, bias, heads, head_bias = readout.attribute(parts)
        total = apply_logit_steps(contributions.sum(-1) + bias, capping, config)
        return contributions, bias, total, heads, head_bias

    contributions, bias, total, head_contributions, bias_contributions = attribute(target_ids)
    logits = cache["logits"]
    row_index = torch.arange(rows)
    model_logit = logits[row_index, target_ids]
    if baseline_ids is not None:
        base = attribute(baseline_ids)
        contributions, bias, total = contributions - base[0], bias - base[1], total - base[2]
        if head_contributions is not None:
            head_contributions, bias_contributions = head_contributions - base[3], bias_contributions - base[4]
        model_logit = model_logit - logits[row_index, baseline_ids]
    result = LogitAttribution(
        labels=parts.labels,
        contributions=contributions,
        bias=bias,
        total=total,
        logits=model_logit,
        head_contributions=head_contributions,
        attention_bias_contributions=bias_contributions,
        head_layers=parts.head_layers,
    )
    return _unflatten_attribution(result, per_prompt)


@dataclass(frozen=True)
class _LinearReadout:
    """A linear map of (..., rows, hidden) components to (..., rows) values, plus a bias (rows,)."""

    of: Any
    bias: torch.Tensor

    def attribute(self, parts: ResidualDecomposition) -> tuple[torch.Tensor, torch.Tensor, Any, Any]:
        """(contributions (rows, components), bias, heads (rows, layers, heads), head biases)."""
        contributions = self.of(parts.components).T
        heads = head_bias = None
        if parts.head_components is not None and parts.attention_biases is not None:
            # (layers, heads, rows) -> (rows, layers, heads)
            heads = self.of(parts.head_components).permute(2, 0, 1)
            head_bias = self.of(parts.attention_biases).T
        return contributions, self.bias, heads, head_bias


def _final_norm_output(model: StandardizedTransformer, residual: torch.Tensor) -> torch.Tensor:
    """What the model's final norm module outputs for ``residual`` (float32 CPU)."""
    norm = _submodule(model, "ln_final")
    if norm is None:
        return residual
    parameter = next(norm.parameters(), None)
    moved = residual if parameter is None else residual.to(device=parameter.device, dtype=parameter.dtype)
    return norm(moved).float().cpu()


def _unflatten_attribution(result: LogitAttribution, per_prompt: int | None) -> LogitAttribution:
    if per_prompt is None:
        return result
    return replace(
        result,
        contributions=unflatten_rows(result.contributions, 0, per_prompt),
        bias=unflatten_rows(result.bias.expand(result.contributions.shape[0]), 0, per_prompt),
        total=unflatten_rows(result.total, 0, per_prompt),
        logits=unflatten_rows(result.logits, 0, per_prompt),
        head_contributions=unflatten_rows(result.head_contributions, 0, per_prompt),
        attention_bias_contributions=unflatten_rows(result.attention_bias_contributions, 0, per_prompt),
    )


__all__ = [
    "SPLITS",
    "FrozenNorm",
    "LogitAttribution",
    "Readout",
    "ResidualDecomposition",
    "attention_head_shares",
    "cache_rows",
    "component_label",
    "decompose_residual",
    "freeze_final_norm",
    "freeze_norm",
    "logit_attribution",
    "readout",
    "unflatten_rows",
]
