"""What each layer of a model holds: its token mixer (and that mixer's kind), its MLP, and
where each sublayer's contribution to the residual stream is read.

Resolved once at load from the architecture spec and the HF modules, so hybrid models
(attention in some layers, Mamba, gated DeltaNet or short convolutions in others) get one
answer per layer, and every site's availability (`nnterp.support`) follows from it.

Example:
    >>> structure = resolve_layer_structure(hf_model, spec, paths)
    >>> structure.kinds                    # e.g. ('gated_deltanet', 'attention')
    >>> structure.attention_layers         # (1,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nnterp.spec import MODULE_OUTPUT, ArchitectureSpec, Contribution, Mixer

#: Why no sublayer output is an additive contribution in a post-norm block.
POST_NORM_REASON = (
    "post-norm blocks: the block normalises after adding each sublayer to the residual, so no "
    "sublayer output is an additive contribution (the raw sublayer outputs stay readable through "
    "their modules; layers_output - layers_input is each block's whole update)"
)


_NORMS_AFTER_ADD = (
    "post-norm blocks: each norm comes after a residual add, not before a sublayer, so no norm "
    "scales a sublayer's input"
)


def _submodule(parent: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        module = parent.get_submodule(path)
    except AttributeError:
        return None
    return module


def _layer_mixer(layer: torch.nn.Module, mixers: tuple[Mixer, ...]) -> Mixer | None:
    for mixer in mixers:
        module = _submodule(layer, mixer.path)
        if module is None:
            continue
        if mixer.module_class is not None and mixer.module_class not in type(module).__name__:
            continue
        return mixer
    return None


@dataclass(frozen=True)
class MlpSite:
    """Where one layer's MLP is: its module's path from the layer (``None``: no MLP module, the
    feed-forward's projections sit in the layer itself), where its contribution is read, and
    its down projection (path from the layer; ``None``: none found, ``hidden_unavailable``
    says why), whose input is the MLP's hidden activations."""

    path: str | None
    contribution: Contribution
    down_proj: str | None = None
    hidden_unavailable: str | None = None


@dataclass(frozen=True)
class SublayerNorms:
    """The pre-norms of one layer: paths from the layer of the norm before its token mixer and
    of the norm before its MLP (``None`` where there is none or none was found; the
    ``*_missing`` fields say why). ``mlp_reads_stream``: the spec says the MLP has no pre-norm
    and reads the residual stream itself (OLMo-2)."""

    mixer: str | None = None
    mixer_missing: str | None = "the spec names no norm before the mixer"
    mlp: str | None = None
    mlp_missing: str | None = "the spec names no norm before the MLP"
    mlp_reads_stream: bool = False


@dataclass(frozen=True)
class LayerStructure:
    """Per-layer structure of one model.

    Attributes:
        mixers: Per layer, the `Mixer` it holds (``None``: no token mixer).
        mlps: Per layer, its `MlpSite` (``None``: no MLP, as in a Mamba block).
        non_additive: Why the blocks have no additive sublayer contributions (post-norm blocks,
            a rescaled residual), or ``None`` when they do.
        norms: Per layer, its `SublayerNorms`.
        parallel: The mixer and the MLP both read the block's input (no stream between them).
        required_inputs: Per layer, the forward input without which the model skips the block
            (the spec's ``conditional_layers``), or ``None``: it always runs; empty when no
            block is conditional.
        side_attentions: Per layer, the path (from the layer) of a softmax attention it runs
            besides its mixer (the spec's ``side_attention``: Zamba's shared block), or
            ``None``; empty when the spec names none.
        side_attention_reason: Why such an attention's output is no additive contribution.
    """

    mixers: tuple[Mixer | None, ...]
    mlps: tuple[MlpSite | None, ...]
    non_additive: str | None
    norms: tuple[SublayerNorms, ...] = ()
    parallel: bool = False
    required_inputs: tuple[str | None, ...] = ()
    side_attentions: tuple[str | None, ...] = ()
    side_attention_reason: str | None = None

    def skipped_reason(self, layer: int, inputs: set[str] | None) -> str | None:
        """Why layer ``layer`` does not run in a forward given ``inputs`` (names of its keyword
        inputs; ``None``: unknown), or ``None`` when it runs."""
        needed = self.required_inputs[layer] if layer < len(self.required_inputs) else None
        if needed is None or inputs is None or needed in inputs:
            return None
        return (
            f"layer {layer} runs only when the forward gets {needed} (the model skips it otherwise, "
            "so its stream passes unchanged): give that input (e.g. images), or read the layers around it"
        )

    @property
    def kinds(self) -> tuple[str | None, ...]:
        """Per layer, the kind of its mixer (``"attention"``, ``"mamba"``, ...) or ``None``."""
        return tuple(None if mixer is None else mixer.kind for mixer in self.mixers)

    @property
    def attention_layers(self) -> tuple[int, ...]:
        """Indices of the layers whose mixer is softmax attention."""
        return tuple(index for index, kind in enumerate(self.kinds) if kind == "attention")

    @property
    def hybrid(self) -> bool:
        """Whether layers differ in the kind of their mixer."""
        return len(set(self.kinds)) > 1

    def mixer_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no mixer contribution, or ``None``."""
        if self.non_additive is not None:
            return self.non_additive
        if self.mixers[layer] is None:
            if self.mlps[layer] is not None:
                return f"layer {layer}'s block is an MLP alone: it has no token mixer"
            return f"layer {layer} has no token mixer the spec names"
        return self.mixers[layer].contribution.unavailable  # type: ignore[union-attr]

    def attention_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer``'s mixer is not softmax attention (so the attention sites that
        read a mixer: ``attentions_output``, per-head sites, norm scales), or ``None``."""
        kind = self.kinds[layer]
        if kind == "attention":
            return None
        side = self.side_attention(layer)
        if side is not None:
            return (
                f"layer {layer}'s mixer is {kind}; its softmax attention ({side}) runs beside it: "
                f"{self.side_attention_reason or 'its output is no additive contribution'} "
                f"(attention_probabilities[{layer}] reads it)"
            )
        if kind is None:
            return f"layer {layer} has no attention module"
        beside = f"; softmax attention beside the mixer: {list(self.probability_layers)}" if self.side_attentions else ""
        return f"layer {layer} is a {kind} mixer, not softmax attention (attention layers: {list(self.attention_layers)}{beside})"

    def side_attention(self, layer: int) -> str | None:
        """Path, from layer ``layer``, of the softmax attention it runs besides a mixer that is
        not softmax attention (the spec's ``side_attention``), or ``None``."""
        if not self.side_attentions or layer >= len(self.side_attentions) or self.kinds[layer] == "attention":
            return None
        return self.side_attentions[layer]

    def softmax_attention(self, layer: int) -> str | None:
        """Path, from layer ``layer``, of the softmax attention whose probabilities it computes:
        its mixer's on attention layers, the side attention's where it runs one, else ``None``."""
        mixer = self.mixers[layer]
        if mixer is not None and mixer.kind == "attention":
            return mixer.path
        return self.side_attention(layer)

    @property
    def probability_layers(self) -> tuple[int, ...]:
        """Indices of the layers that compute softmax attention probabilities: the attention
        layers, and the layers running a side attention (Zamba's hybrid layers)."""
        return tuple(index for index in range(len(self.mixers)) if self.softmax_attention(index) is not None)

    def probabilities_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` computes no attention probabilities, or ``None``; the reason names
        the layers that do."""
        if self.softmax_attention(layer) is not None:
            return None
        if not self.side_attentions:
            return self.attention_unavailable(layer)
        kind = self.kinds[layer]
        holder = f"layer {layer} ({kind} mixer)" if kind else f"layer {layer}"
        return (
            f"{holder} runs no softmax attention; the layers with attention probabilities are "
            f"{list(self.probability_layers)}"
        )

    def mlp_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no MLP contribution, or ``None``."""
        if self.mlps[layer] is None:
            kind = self.kinds[layer]
            holder = f"layer {layer} ({kind})" if kind else f"layer {layer}"
            return f"{holder} has no MLP (spec mlp=None and no feed-forward contribution site)"
        return self.non_additive or self.mlps[layer].contribution.unavailable  # type: ignore[union-attr]

    def identity_checkable(self, layer: int) -> bool:
        """Whether every sublayer layer ``layer`` has is readable, so the residual identity
        can be checked there."""
        if self.non_additive is not None:
            return False
        mixer_ok = self.mixers[layer] is None or self.mixer_unavailable(layer) is None
        mlp_ok = not self.has_mlp(layer) or self.mlp_unavailable(layer) is None
        return mixer_ok and mlp_ok

    def has_mlp(self, layer: int) -> bool:
        """Whether layer ``layer`` has an MLP (readable or not)."""
        return self.mlps[layer] is not None

    def hidden_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no MLP hidden activations (``mlps_hidden``), or ``None``."""
        site = self.mlps[layer]
        if site is None:
            return self.mlp_unavailable(layer)
        return site.hidden_unavailable

    def mid_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no residual stream between its mixer and its MLP
        (``layers_mid``), or ``None``."""
        if self.non_additive is not None:
            return self.non_additive
        if self.parallel:
            return (
                "parallel blocks: the mixer and the MLP both read the block's input, so no stream "
                "runs between them (layers_input[i] is what both read)"
            )
        if self.mixers[layer] is None:
            return f"layer {layer} has no token mixer, so no stream between a mixer and an MLP"
        if self.mlps[layer] is None:
            return self.mlp_unavailable(layer)
        norms = self.norms[layer] if self.norms else SublayerNorms()
        if norms.mlp is None and not norms.mlp_reads_stream:
            return norms.mlp_missing
        return None

    @property
    def post_norm(self) -> bool:
        """Whether the blocks normalise after each residual add (no norm before a sublayer)."""
        return self.non_additive == POST_NORM_REASON

    def mlp_norm_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no norm before its MLP whose input it computes from, or ``None``
        (whether that module is an RMS or layer norm is `nnterp.norm_scales`' question)."""
        if self.mlps[layer] is None:
            return self.mlp_unavailable(layer)
        if self.post_norm:
            return _NORMS_AFTER_ADD
        if self.parallel:
            return (
                "parallel blocks: the MLP's norm reads the block's input like the mixer's, so its scale "
                "is attentions_norm_scale[i]"
            )
        norms = self.norms[layer] if self.norms else SublayerNorms()
        if norms.mlp_reads_stream:
            return "the MLP reads the residual stream un-normalised (no norm before it)"
        return norms.mlp_missing if norms.mlp is None else None

    def mixer_norm_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no norm before its token mixer, or ``None``."""
        if self.mixers[layer] is None:
            return f"layer {layer} has no token mixer"
        if self.post_norm:
            return _NORMS_AFTER_ADD
        norms = self.norms[layer] if self.norms else SublayerNorms()
        return norms.mixer_missing if norms.mixer is None else None


def resolve_layer_structure(
    hf_model: torch.nn.Module, spec: ArchitectureSpec, paths: dict[str, str | None]
) -> LayerStructure:
    """The `LayerStructure` of ``hf_model`` under ``spec`` (with the resolved ``paths``)."""
    layers: Any = hf_model.get_submodule(paths["layers"]) if paths["layers"] else []
    attention_path = paths.get("self_attn")
    candidates = spec.layer_mixers() if spec.mixers else (
        (Mixer(attention_path, "attention", spec.attention_contribution),) if attention_path else ()
    )
    mixers: list[Mixer | None] = []
    mlps: list[MlpSite | None] = []
    norms: list[SublayerNorms] = []
    for index, layer in enumerate(layers):
        mixer = _layer_mixer(layer, candidates)
        if mixer is not None and mixer.is_mlp:
            mixers.append(None)
            site: MlpSite | None = MlpSite(mixer.path, mixer.contribution)
        else:
            mixers.append(mixer)
            site = _mlp_site(layer, paths.get("mlp"), mixer.mlp if mixer is not None and mixer.mlp else spec.mlp_contribution)
        mlps.append(None if site is None else _with_down_proj(layer, index, site, spec))
        norms.append(_sublayer_norms(layer, spec))
    config = getattr(hf_model, "config", None)
    return LayerStructure(
        mixers=tuple(mixers),
        mlps=tuple(mlps),
        non_additive=POST_NORM_REASON if spec.is_post_norm(config) else spec.non_additive,
        norms=tuple(norms),
        parallel=spec.is_parallel(config),
        # Empty when every block always runs, so that accessors skip the per-run check.
        required_inputs=tuple(spec.conditional_layers.get(type(layer).__name__) for layer in layers)
        if spec.conditional_layers
        else (),
        side_attentions=tuple(_first_found(layer, spec.path("side_attention")) for layer in layers)
        if spec.side_attention
        else (),
        side_attention_reason=spec.side_attention_reason,
    )


def _mlp_site(layer: torch.nn.Module, path: str | None, contribution: Contribution) -> MlpSite | None:
    if path is not None and _submodule(layer, path) is not None:
        return MlpSite(path, contribution)
    if contribution.output is not None and _submodule(layer, contribution.output) is not None:
        return MlpSite(None, contribution)
    return None


#: Children by which a feed-forward module shows it routes tokens to experts.
_ROUTING_CHILDREN = ("experts", "router")


def _routes_to_experts(module: torch.nn.Module) -> bool:
    children = dict(module.named_children())
    if any(name in children for name in _ROUTING_CHILDREN):
        return True
    gate = children.get("gate")
    return gate is not None and not isinstance(gate, torch.nn.Linear)


def _with_down_proj(layer: torch.nn.Module, index: int, site: MlpSite, spec: ArchitectureSpec) -> MlpSite:
    """``site`` with its down projection resolved (or the reason there is none)."""
    import dataclasses

    holder = layer if site.path is None else _submodule(layer, site.path)
    where = f"layer {index}" if site.path is None else f"layer {index}'s MLP ({type(holder).__name__})"
    if holder is not None and site.path is not None and _routes_to_experts(holder):
        return dataclasses.replace(
            site,
            hidden_unavailable=(
                f"{where} is a mixture of experts: each token's hidden activations live in the experts "
                "it is routed to, so there is no single (batch, seq, intermediate) tensor"
            ),
        )
    candidates = spec.path("down_proj")
    for candidate in candidates:
        if holder is not None and _submodule(holder, candidate) is not None:
            path = candidate if site.path is None else f"{site.path}.{candidate}"
            return dataclasses.replace(site, down_proj=path)
    tried = ", ".join(candidates) or "none: the spec sets down_proj=None"
    return dataclasses.replace(
        site, hidden_unavailable=f"no down projection found in {where} (tried {tried}); set the spec's down_proj"
    )


def _first_found(layer: torch.nn.Module, candidates: tuple[str, ...]) -> str | None:
    return next((path for path in candidates if _submodule(layer, path) is not None), None)


def _sublayer_norms(layer: torch.nn.Module, spec: ArchitectureSpec) -> SublayerNorms:
    mixer = _first_found(layer, spec.path("attention_norm"))
    mlp = _first_found(layer, spec.path("mlp_norm"))

    def missing(field: str, found: str | None) -> str | None:
        if found is not None:
            return None
        if getattr(spec, field) is None:
            return f"the spec says there is no norm here ({field}=None)"
        tried = spec.path(field)
        if not tried:
            return f"the spec does not name this norm ({field}=())"
        return f"no {field.replace('_', ' ')} found in the layer (tried {', '.join(tried)}); set the spec's {field}"

    return SublayerNorms(
        mixer=mixer,
        mixer_missing=missing("attention_norm", mixer),
        mlp=mlp,
        mlp_missing=missing("mlp_norm", mlp),
        mlp_reads_stream=spec.mlp_norm is None,
    )


__all__ = ["MODULE_OUTPUT", "POST_NORM_REASON", "LayerStructure", "MlpSite", "SublayerNorms", "resolve_layer_structure"]
