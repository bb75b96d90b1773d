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
    feed-forward's projections sit in the layer itself) and where its contribution is read."""

    path: str | None
    contribution: Contribution


@dataclass(frozen=True)
class LayerStructure:
    """Per-layer structure of one model.

    Attributes:
        mixers: Per layer, the `Mixer` it holds (``None``: no token mixer).
        mlps: Per layer, its `MlpSite` (``None``: no MLP, as in a Mamba block).
        non_additive: Why the blocks have no additive sublayer contributions (post-norm blocks,
            a rescaled residual), or ``None`` when they do.
    """

    mixers: tuple[Mixer | None, ...]
    mlps: tuple[MlpSite | None, ...]
    non_additive: str | None

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
        """Why layer ``layer`` has no softmax attention, or ``None``."""
        kind = self.kinds[layer]
        if kind == "attention":
            return None
        if kind is None:
            return f"layer {layer} has no attention module"
        return f"layer {layer} is a {kind} mixer, not softmax attention (attention layers: {list(self.attention_layers)})"

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
    for layer in layers:
        mixer = _layer_mixer(layer, candidates)
        if mixer is not None and mixer.is_mlp:
            mixers.append(None)
            mlps.append(MlpSite(mixer.path, mixer.contribution))
            continue
        mixers.append(mixer)
        mlps.append(_mlp_site(layer, paths.get("mlp"), mixer.mlp if mixer is not None and mixer.mlp else spec.mlp_contribution))
    return LayerStructure(
        mixers=tuple(mixers),
        mlps=tuple(mlps),
        non_additive=POST_NORM_REASON if spec.is_post_norm(getattr(hf_model, "config", None)) else spec.non_additive,
    )


def _mlp_site(layer: torch.nn.Module, path: str | None, contribution: Contribution) -> MlpSite | None:
    if path is not None and _submodule(layer, path) is not None:
        return MlpSite(path, contribution)
    if contribution.output is not None and _submodule(layer, contribution.output) is not None:
        return MlpSite(None, contribution)
    return None


__all__ = ["MODULE_OUTPUT", "POST_NORM_REASON", "LayerStructure", "MlpSite", "resolve_layer_structure"]
