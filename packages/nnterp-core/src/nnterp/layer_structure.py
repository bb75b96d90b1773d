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
        if mixer.attention_class is not None and mixer.attention_class not in type(module).__name__:
            continue
        return mixer
    return None


@dataclass(frozen=True)
class LayerStructure:
    """Per-layer structure of one model.

    Attributes:
        mixers: Per layer, the `Mixer` it holds (``None``: no token mixer found).
        mlp_contribution: Where every layer's MLP contribution is read, or ``None`` when the
            layers have no MLP (module or feed-forward projections).
        mlp_path: The standard MLP module's path from a layer, or ``None``.
        non_additive: Why the blocks have no additive sublayer contributions (post-norm blocks,
            a rescaled residual), or ``None`` when they do.
    """

    mixers: tuple[Mixer | None, ...]
    mlp_contribution: Contribution | None
    mlp_path: str | None
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
            return f"layer {layer} has no token mixer the spec names"
        return None

    def attention_unavailable(self, layer: int) -> str | None:
        """Why layer ``layer`` has no softmax attention, or ``None``."""
        kind = self.kinds[layer]
        if kind == "attention":
            return None
        if kind is None:
            return f"layer {layer} has no attention module"
        return f"layer {layer} is a {kind} mixer, not softmax attention (attention layers: {list(self.attention_layers)})"

    def mlp_unavailable(self) -> str | None:
        """Why the layers have no MLP contribution, or ``None``."""
        if self.mlp_contribution is None:
            return "the layers have no MLP (spec mlp=None and no feed-forward contribution site)"
        return self.non_additive


def resolve_layer_structure(
    hf_model: torch.nn.Module, spec: ArchitectureSpec, paths: dict[str, str | None]
) -> LayerStructure:
    """The `LayerStructure` of ``hf_model`` under ``spec`` (with the resolved ``paths``)."""
    layers: Any = hf_model.get_submodule(paths["layers"]) if paths["layers"] else []
    attention_path = paths.get("self_attn")
    candidates = spec.layer_mixers() if spec.mixers else (
        (Mixer(attention_path, "attention", spec.attention_contribution),) if attention_path else ()
    )
    mixers = tuple(_layer_mixer(layer, candidates) for layer in layers)
    mlp_path = paths.get("mlp")
    contribution: Contribution | None = spec.mlp_contribution
    if mlp_path is None and spec.mlp_contribution.output is None:
        contribution = None
    elif mlp_path is None and len(layers) and _submodule(layers[0], spec.mlp_contribution.output or "") is None:
        contribution = None
    return LayerStructure(
        mixers=mixers,
        mlp_contribution=contribution,
        mlp_path=mlp_path,
        non_additive=POST_NORM_REASON if spec.is_post_norm(getattr(hf_model, "config", None)) else spec.non_additive,
    )


__all__ = ["MODULE_OUTPUT", "POST_NORM_REASON", "LayerStructure", "resolve_layer_structure"]
