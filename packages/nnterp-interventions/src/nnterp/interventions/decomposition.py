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

The decomposition needs each layer to add its attention and MLP outputs unchanged to the
residual stream (GPT-2, Llama, Mistral, Qwen, GPT-NeoX with parallel or sequential
residuals, ...). Architectures that normalise the branch outputs before adding them
(Gemma-2/3's post-norms) raise an error naming ``split="layer"``, which attributes each
layer's whole update instead. For models that post-process logits (Gemma-2/3 softcapping),
the attribution is of the logit before post-processing (``total``), not the model's output.

Example:
    >>> from nnterp.interventions.decomposition import logit_attribution
    >>> dla = logit_attribution(model, "The capital of France is", paris_id, baseline=london_id,
    ...                         per_head=True)
    >>> dict(zip(dla.labels, dla.contributions[0].tolist()))   # {'embed': .., 'attn.0': .., ...}
    >>> dla.head_contributions[0].shape                         # (layers, heads)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from nnterp.cache import ActivationCache, cache_activations
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.heads import project_heads
from nnterp.interventions.metrics import TokenIds

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

SPLITS = ("attn_mlp", "layer")


@dataclass(frozen=True)
class ResidualDecomposition:
    """The final residual stream at one position, as a sum of components.

    Attributes:
        labels: component names: ``"embed"``, then ``"attn.L"``, ``"mlp.L"`` per layer (or
            ``"layer.L"`` with ``split="layer"``).
        components: (components, batch, hidden); ``components.sum(0) == residual``.
        residual: (batch, hidden), the stream entering the final norm (last layer's output).
        head_components: with ``per_head``: (layers, heads, batch, hidden), each head's share
            of ``attn.L`` without the output-projection bias; else ``None``.
        attention_biases: with ``per_head``: (layers, hidden), the output-projection bias, so
            ``head_components[L].sum(0) + attention_biases[L] == attn.L``; else ``None``.
    """

    labels: list[str]
    components: torch.Tensor
    residual: torch.Tensor
    head_components: torch.Tensor | None = None
    attention_biases: torch.Tensor | None = None


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


@dataclass(frozen=True)
class LogitAttribution:
    """What each component adds to one logit (or logit difference), per prompt.

    Attributes:
        labels: component names (see `ResidualDecomposition`).
        contributions: (batch, components).
        bias: (batch,), the final norm's bias and the unembedding bias, through the unembedding.
        total: (batch,), ``contributions.sum(-1) + bias``: the logit (difference) before any
            logit post-processing.
        logits: (batch,), the same quantity read from the model's output logits.
        head_contributions: (batch, layers, heads) with ``per_head``, else ``None``.
        attention_bias_contributions: (batch, layers) with ``per_head``: the output-projection
            bias's part of each ``attn.L`` (``head_contributions.sum(-1) + this == attn.L``).
    """

    labels: list[str]
    contributions: torch.Tensor
    bias: torch.Tensor
    total: torch.Tensor
    logits: torch.Tensor
    head_contributions: torch.Tensor | None = None
    attention_bias_contributions: torch.Tensor | None = None

    def as_dict(self, prompt: int = 0) -> dict[str, float]:
        """``{label: contribution}`` of one prompt, plus ``"bias"``."""
        values = dict(zip(self.labels, self.contributions[prompt].tolist()))
        values["bias"] = float(self.bias[prompt])
        return values


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = max(float(a.abs().max()), float(b.abs().max()), 1.0)
    return bool(torch.allclose(a, b, rtol=0, atol=1e-4 * scale))


def _sites(model: StandardizedTransformer, split: str, per_head: bool) -> list[str]:
    sites = ["layers_input", "layers_output", "logits"]
    if split == "attn_mlp":
        sites += ["attentions_output", "mlps_output"]
    if per_head:
        sites.append("heads_output")
    return sites


@torch.no_grad()
def decompose_residual(
    model: StandardizedTransformer,
    prompts: Any,
    *,
    position: int = -1,
    split: str = "attn_mlp",
    per_head: bool = False,
) -> ResidualDecomposition:
    """Split the final residual stream at ``position`` into what each component wrote.

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        position: the position, counted per prompt (``-1``: last token).
        split: ``"attn_mlp"`` (embeddings, then attention and MLP of each layer) or
            ``"layer"`` (embeddings, then each layer's whole update).
        per_head: also split each attention output by head (``split="attn_mlp"`` only).

    Returns:
        A `ResidualDecomposition` (float32, CPU).

    Raises:
        UnavailableComponentError: the architecture does not add its attention and MLP
            outputs unchanged to the residual stream (use ``split="layer"``), or transforms
            the stream between layers.

    Example:
        >>> parts = decompose_residual(model, ["The capital of France is"], per_head=True)
        >>> torch.allclose(parts.components.sum(0), parts.residual, atol=1e-4)
        True
    """
    cache = _run(model, prompts, position, split, per_head)
    return _decompose(model, cache, split, per_head)


def _run(model: StandardizedTransformer, prompts: Any, position: int, split: str, per_head: bool) -> ActivationCache:
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if per_head and split != "attn_mlp":
        raise InvalidInputError("per_head=True needs split='attn_mlp' (heads split the attention outputs)")
    if not isinstance(position, int) or isinstance(position, bool):
        raise InvalidInputError(f"position must be one int, got {position!r}")
    return cache_activations(model, prompts, _sites(model, split, per_head), positions=position, dtype=torch.float32)


def _decompose(
    model: StandardizedTransformer, cache: ActivationCache, split: str, per_head: bool
) -> ResidualDecomposition:
    labels = ["embed"]
    components = [cache["layers_input.0"]]
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
        attention, mlp = cache[f"attentions_output.{layer}"], cache[f"mlps_output.{layer}"]
        if not _close(attention + mlp, update):
            raise UnavailableComponentError(
                f"{model.spec.name}: layer {layer} does not add its attention and MLP outputs "
                "unchanged to the residual stream (e.g. it normalises them first), so they are "
                "not components of it. Use split='layer' to attribute each layer's whole update."
            )
        labels += [f"attn.{layer}", f"mlp.{layer}"]
        components += [attention, mlp]
        if per_head:
            per_head_output, bias = project_heads(model, layer, cache[f"heads_output.{layer}"])
            heads.append(per_head_output.float().cpu().movedim(-2, 0))
            biases.append(bias.float().cpu())
    return ResidualDecomposition(
        labels=labels,
        components=torch.stack(components),
        residual=cache[f"layers_output.{model.num_layers - 1}"],
        head_components=torch.stack(heads) if per_head else None,
        attention_biases=torch.stack(biases) if per_head else None,
    )


def _submodule(model: StandardizedTransformer, part: str) -> torch.nn.Module | None:
    path = model.paths.get(part)
    return None if path is None else model._module.get_submodule(path)


@torch.no_grad()
def freeze_final_norm(model: StandardizedTransformer, residual: torch.Tensor) -> FrozenNorm:
    """The final norm as an affine map, its scale frozen at ``residual`` (batch, hidden).

    Probes the norm module: its output on zeros is its bias ``beta``; invariance to adding
    a constant to every coordinate tells a centering (LayerNorm) norm; its output on a
    ``+-1`` vector gives ``gamma`` up to a constant factor, which the least-squares fit of
    each prompt's scale ``s`` cancels. Checked: ``scale * P(residual) + offset`` equals the
    norm's output.

    Raises:
        UnavailableComponentError: the final norm is not of the form ``gamma * P(x) / s + beta``.

    Example:
        >>> frozen = freeze_final_norm(model, parts.residual)
        >>> normed = frozen.apply(parts.components).sum(0) + frozen.offset
    """
    norm = _submodule(model, "ln_final")
    hidden = residual.shape[-1]
    if norm is None:
        return FrozenNorm(torch.ones_like(residual), False, residual.new_zeros(hidden))
    parameter = next(norm.parameters(), None)
    dtype = parameter.dtype if parameter is not None else residual.dtype
    device = parameter.device if parameter is not None else residual.device

    def run(x: torch.Tensor) -> torch.Tensor:
        return norm(x.to(device=device, dtype=dtype)).float().cpu()

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
    if not _close(frozen.apply(x) + offset, out):
        raise UnavailableComponentError(
            f"{model.spec.name}'s final norm ({type(norm).__name__}) is not of the form "
            "gamma * P(x) / s(x) + beta, so its contributions cannot be separated."
        )
    return frozen


def _unembedding(model: StandardizedTransformer, target: torch.Tensor, baseline: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(directions (batch, hidden), biases (batch,)): the unembedding rows of each prompt's
    target minus its baseline."""
    head = _submodule(model, "lm_head")
    weight = getattr(head, "weight", None)
    if not isinstance(head, torch.nn.Linear) or weight is None:
        raise UnavailableComponentError(
            f"{model.spec.name}'s lm_head is a {type(head).__name__}, not a linear unembedding: "
            "direct logit attribution needs one."
        )
    rows = weight.detach().float().cpu()
    bias = head.bias.detach().float().cpu() if head.bias is not None else torch.zeros(rows.shape[0])
    direction, offset = rows[target], bias[target]
    if baseline is not None:
        direction, offset = direction - rows[baseline], offset - bias[baseline]
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


@torch.no_grad()
def logit_attribution(
    model: StandardizedTransformer,
    prompts: Any,
    target: TokenIds,
    baseline: TokenIds | None = None,
    *,
    position: int = -1,
    split: str = "attn_mlp",
    per_head: bool = False,
) -> LogitAttribution:
    """Direct logit attribution: each component's share of a logit or logit difference.

    See the module docstring for the method (final norm frozen at the real residual stream).

    Args:
        model: a `StandardizedTransformer`.
        prompts: a prompt or a list (left-padded batch).
        target: the token id whose logit is attributed, or one per prompt.
        baseline: if given, attribute ``logit[target] - logit[baseline]`` instead.
        position: the position, counted per prompt (``-1``: last token).
        split: ``"attn_mlp"`` or ``"layer"`` (see `decompose_residual`).
        per_head: also attribute each attention head.

    Returns:
        A `LogitAttribution` (float32, CPU); ``contributions.sum(-1) + bias == total``, and
        ``total`` equals the model's logit (difference) for models without logit
        post-processing.

    Example:
        >>> dla = logit_attribution(model, ["The capital of France is"], paris_id, london_id)
        >>> best = dla.labels[int(dla.contributions[0].argmax())]
    """
    cache = _run(model, prompts, position, split, per_head)
    parts = _decompose(model, cache, split, per_head)
    batch = parts.residual.shape[0]
    vocab = model.vocab_size
    target_ids = _token_rows(target, batch, vocab, "target")
    baseline_ids = None if baseline is None else _token_rows(baseline, batch, vocab, "baseline")
    direction, unembed_bias = _unembedding(model, target_ids, baseline_ids)
    frozen = freeze_final_norm(model, parts.residual)

    def logit_of(component: torch.Tensor) -> torch.Tensor:
        # (..., batch, hidden) -> (..., batch)
        return (frozen.apply(component) * direction).sum(-1)

    contributions = logit_of(parts.components).T
    bias = (frozen.offset * direction).sum(-1) + unembed_bias
    logits = cache["logits"]
    rows = torch.arange(batch)
    model_logit = logits[rows, target_ids]
    if baseline_ids is not None:
        model_logit = model_logit - logits[rows, baseline_ids]
    head_contributions = bias_contributions = None
    if parts.head_components is not None and parts.attention_biases is not None:
        # (layers, heads, batch) -> (batch, layers, heads)
        head_contributions = logit_of(parts.head_components).permute(2, 0, 1)
        bias_contributions = logit_of(parts.attention_biases[:, None, :].expand(-1, batch, -1)).T
    return LogitAttribution(
        labels=parts.labels,
        contributions=contributions,
        bias=bias,
        total=contributions.sum(-1) + bias,
        logits=model_logit,
        head_contributions=head_contributions,
        attention_bias_contributions=bias_contributions,
    )
