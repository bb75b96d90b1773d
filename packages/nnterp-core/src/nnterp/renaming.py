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


#: The root parts nnterp 1.x also named inside the backbone (``model.model.layers``).
LEGACY_TREE_PARTS = ("layers", "ln_final", "embed_tokens")


def legacy_tree_aliases(
    model: torch.nn.Module, paths: dict[str, str | None], *, skip: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Extra NNsight aliases rebuilding nnterp 1.x's renamed backbone: ``model.model`` is the
    module holding the layers (GPT-2's ``transformer``, NeoX's ``gpt_neox``), and under it are
    ``layers``, ``ln_final`` and ``embed_tokens`` wherever those parts live in it.

    1.x renamed the backbone and its children in place, so code such as
    ``model.model.layers[i].self_attn`` or ``model.model.ln_final`` ran on every architecture;
    these aliases keep it running. An alias is added only where its name is free (no native
    child or attribute of that name), so no native module is ever hidden. ``paths`` gives
    the resolved standard parts (`resolve_paths`); the parts in ``skip`` get no alias (layers
    that are not the native blocks: virtual or unrolled ones).

    Returns:
        ``{native path: [alias, ...]}`` to merge with `rename_mapping`.

    Example:
        >>> legacy_tree_aliases(gpt2, resolve_paths(gpt2, spec))
        {'transformer': ['model'], 'transformer.h': ['transformer.layers'], 'transformer.ln_f': ['transformer.ln_final'], 'transformer.wte': ['transformer.embed_tokens']}
        >>> legacy_tree_aliases(llama, resolve_paths(llama, spec))      # model.layers is native
        {'model.norm': ['model.ln_final']}
    """
    from nnsight.intervention.envoy import Envoy

    layers_path = paths.get("layers")
    if not layers_path or "." not in layers_path:
        return {}
    container = layers_path.split(".", 1)[0]
    backbone = model._modules.get(container)
    if backbone is None or hasattr(Envoy, container):
        return {}
    aliases: dict[str, list[str]] = {}
    if container != "model":
        # A one-name key binds on every envoy with a child of that name: only where it is unique.
        same_name = [name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] == container]
        if hasattr(model, "model") or hasattr(Envoy, "model") or same_name != [container]:
            return {}
        aliases[container] = ["model"]
    for part in LEGACY_TREE_PARTS:
        path = None if part in skip else paths.get(part)
        if not path or not path.startswith(f"{container}.") or path == f"{container}.{part}":
            continue
        if hasattr(backbone, part) or hasattr(Envoy, part):
            continue
        aliases[path] = [f"{container}.{part}"]
    return aliases


def with_legacy_tree(aliases: dict[str, str], legacy: dict[str, list[str]]) -> dict[Any, Any]:
    """``aliases`` (`rename_mapping`) with the `legacy_tree_aliases` added to its entries."""
    merged: dict[Any, Any] = dict(aliases)
    for path, names in legacy.items():
        current = merged.get(path)
        merged[path] = names if current is None else [current, *names]
    return merged


def displaced_children(model: torch.nn.Module, paths: dict[str, str | None]) -> dict[str, str]:
    """``{standard name: native path}`` of the standard parts whose name is already a native
    child, holding another module, of the module the name goes on (the root for root parts,
    a layer for ``self_attn``/``mlp``).

    ModernBERT-decoder's unembedding is ``decoder`` while its root's ``lm_head`` child is the
    prediction head before it: ``{"lm_head": "decoder"}``. NNsight's ``rename=`` refuses such
    an alias; `split_aliases` takes them out of it and `bind_displaced` binds them after the
    envoy tree is built, the native child moving to ``E_<name>``
    (`nnterp.nnsight_seams.mount_over_child`).
    """

    def other_child(module: torch.nn.Module, name: str, path: str) -> bool:
        child = module._modules.get(name)
        return child is not None and _has_submodule(module, path) and child is not module.get_submodule(path)

    displaced: dict[str, str] = {}
    for part in ROOT_PARTS:
        path = paths.get(part)
        if path is not None and path != part and other_child(model, part, path):
            displaced[part] = path
    layers_path = paths.get("layers")
    layers = list(cast(torch.nn.ModuleList, model.get_submodule(layers_path))) if layers_path else []
    for part in LAYER_PARTS:
        path = paths.get(part)
        if path is not None and path != part and any(other_child(layer, part, path) for layer in layers):
            displaced[part] = path
    return displaced


def split_aliases(
    model: torch.nn.Module, paths: dict[str, str | None], aliases: dict[Any, Any]
) -> tuple[dict[Any, Any], dict[str, str]]:
    """``(rename for NNsight, displaced standard names)``: ``aliases`` without the standard
    names `displaced_children` finds, and those names with their native paths, to bind with
    `bind_displaced` once NNsight has built the envoy tree.

    Example:
        >>> rename, displaced = split_aliases(hf_model, paths, rename_mapping(paths))
        >>> displaced                   # ModernBERT-decoder
        {'lm_head': 'decoder'}
    """
    displaced = displaced_children(model, paths)
    if not displaced:
        return dict(aliases), {}
    rename: dict[Any, Any] = {}
    for key, value in aliases.items():
        if isinstance(value, str):
            if value not in displaced:
                rename[key] = value
            continue
        kept = [alias for alias in value if alias not in displaced]
        if kept:
            rename[key] = kept
    return rename, displaced


def bind_displaced(model: Any, paths: dict[str, str | None], displaced: dict[str, str]) -> None:
    """Bind each standard name of ``displaced`` (from `split_aliases`) on the NNsight model
    ``model``: a root part on the root, a layer part on every layer that has its path; the
    native child of that name stays reachable as ``E_<name>`` at its own path.

    Raises:
        RenamingError: the name is taken on the envoy by something that is not a native child.
    """
    from nnterp.accessors import child_envoy
    from nnterp.nnsight_seams import mount_over_child

    for part, path in displaced.items():
        if part in ROOT_PARTS:
            mount_over_child(model, part, child_envoy(model, path), path)
            continue
        for layer in child_envoy(model, cast(str, paths["layers"])):
            if _has_submodule(layer._module, path):
                mount_over_child(layer, part, child_envoy(layer, path), path)


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
