"""From an architecture spec to NNsight ``rename`` aliases, and the errors when it fails."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch

from nnterp.errors import RenamingError
from nnterp.spec import ArchitectureSpec

ROOT_PARTS = ("layers", "ln_final", "lm_head", "embed_tokens", "vision_layers")
LAYER_PARTS = ("self_attn", "mlp")


def _has_submodule(module: torch.nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def resolve_paths(model: torch.nn.Module, spec: ArchitectureSpec) -> dict[str, str | None]:
    """The path of each standard part that exists in ``model`` (``None`` where the spec has none).

    Root parts are resolved from the model root, ``self_attn``/``mlp`` from the layers (the
    first candidate path that some layer has).

    Raises:
        RenamingError: a part the spec declares is found at none of its candidate paths.
    """
    resolved: dict[str, str | None] = {}
    missing: list[str] = [f"{part} (the spec gives no path)" for part in ("layers", "lm_head") if not spec.path(part)]
    for part in ROOT_PARTS:
        candidates = spec.path(part)
        found = next((path for path in candidates if _has_submodule(model, path)), None)
        if candidates and found is None and part not in spec.optional_parts:
            missing.append(f"{part} (tried {', '.join(candidates)})")
        resolved[part] = found
    layers = cast(torch.nn.ModuleList, model.get_submodule(resolved["layers"])) if resolved["layers"] else None
    # Hybrid models hold some parts in some layers only: a part is found if any layer has it.
    for part in LAYER_PARTS:
        candidates = spec.path(part)
        found = next(
            (path for path in candidates for layer in (layers or ()) if _has_submodule(layer, path)), None
        )
        if candidates and found is None:
            missing.append(f"layers[i].{part} (tried {', '.join(candidates)})")
        resolved[part] = found
    if missing:
        raise RenamingError(unresolved_message(model, spec.name, missing))
    return resolved


def rename_mapping(paths: dict[str, str | None]) -> dict[str, str]:
    """NNsight ``rename=`` entries giving each resolved part its standard name.

    A module whose name is also an envoy attribute (GIT's root ``output``) is mounted by
    NNsight under a prefixed name, which is the one its alias must name."""
    from nnsight.intervention.envoy import Envoy

    mapping: dict[str, str] = {}
    for part, path in paths.items():
        if path is not None and path != part:
            names = [f"{Envoy.OVERLOAD_PREFIX}{name}" if hasattr(Envoy, name) else name for name in path.split(".")]
            mapping[".".join(names)] = part
    return mapping


def candidate_modules(model: torch.nn.Module, limit: int = 12) -> dict[str, list[str]]:
    """Module names in ``model`` that could be each standard part, for error messages."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if not vocab:
        sizes = [m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        vocab = max(sizes, default=None)
    found: dict[str, list[str]] = {"layers": [], "ln_final": [], "lm_head": [], "embed_tokens": []}
    for name, module in model.named_modules():
        if not name:
            continue
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            found["layers"].append(f"{name} ({len(module)} x {type(module[0]).__name__})")
        elif "norm" in type(module).__name__.lower() or "ln" in name.split(".")[-1]:
            if name.count(".") <= 2:
                found["ln_final"].append(name)
        elif isinstance(module, torch.nn.Linear) and vocab and module.out_features == vocab:
            found["lm_head"].append(name)
        elif isinstance(module, torch.nn.Embedding) and vocab and module.num_embeddings == vocab:
            found["embed_tokens"].append(name)
    return {part: names[:limit] for part, names in found.items()}


def unresolved_message(model: torch.nn.Module, architecture: str, missing: list[str]) -> str:
    """A `RenamingError` message: what is missing, what exists, and how to fix it."""
    candidates = candidate_modules(model)
    lines = [
        f"nnterp could not build the standard tree for {type(model).__name__} "
        f"(architecture spec {architecture!r}).",
        "Not found: " + "; ".join(missing) + ".",
        "Candidate modules in this model:",
    ]
    for part, names in candidates.items():
        lines.append(f"  {part}: {', '.join(names) if names else '(none)'}")
    lines.append(
        "Fix: pass rename={'<native path>': '<standard name>', ...} to StandardizedTransformer "
        "(e.g. rename={'transformer.h': 'layers', 'attn': 'self_attn', 'transformer.ln_f': "
        "'ln_final'}), or register an ArchitectureSpec for this class in a plugin "
        "(see the 'Adding a model' docs)."
    )
    return "\n".join(lines)


def apply_user_rename(
    model: torch.nn.Module, spec: ArchitectureSpec | None, rename: dict[Any, Any] | None
) -> ArchitectureSpec | None:
    """``spec`` with every standard part that the user's ``rename=`` names taken from it.

    ``rename={"transformer.h": "layers", "attn": "self_attn"}`` sets ``layers`` and
    ``self_attn``; the user's mapping beats any plugin spec. Entries naming non-standard
    aliases are left to NNsight. With no spec and no standard part named, returns ``None``.
    """
    # Any: the keys are dataclass field names of several types, checked by `dataclasses.replace`.
    overrides: dict[str, Any] = {}
    for key, value in (rename or {}).items():
        if not isinstance(key, str):
            continue
        for alias in [value] if isinstance(value, str) else value:
            if alias in ROOT_PARTS + LAYER_PARTS:
                overrides[alias] = key
    if not overrides:
        return spec
    if spec is None:
        spec = ArchitectureSpec(
            name=f"user rename for {type(model).__name__}",
            model_classes=(),
            layers=None,
            self_attn=None,
            mlp=None,
            ln_final=None,
            lm_head="lm_head",
            embed_tokens=None,
        )
    return dataclasses.replace(spec, **overrides)
