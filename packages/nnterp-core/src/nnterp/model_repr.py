"""The concise text form of a `StandardizedTransformer`: the standard tree with the HF module
each standard name stands for, instead of NNsight's listing of the whole HF tree (and then
every alias again).

Example:
    >>> print(model)
    StandardizedTransformer(LlamaForCausalLM, spec 'llama': 2 layers, hidden 64, 4 heads, vocab 512)
      embed_tokens   model.embed_tokens   Embedding(512, 64, padding_idx=0)
      layers[0-1]    model.layers         LlamaDecoderLayer
        self_attn    self_attn            LlamaAttention (attention)
        mlp          mlp                  LlamaMLP
      ln_final       model.norm           LlamaRMSNorm((64,), eps=1e-06)
      lm_head        lm_head              Linear(in_features=64, out_features=512, bias=False)
    The HuggingFace module tree: print(model._module)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def _describe(module: Any, leaf: bool) -> str:
    """A leaf module's own repr (one line), a container's class name."""
    if module is None:
        return "(absent)"
    return repr(module).splitlines()[0] if leaf and not list(module.children()) else type(module).__name__


def _layer_rows(model: StandardizedTransformer, layers: Any) -> list[tuple[str, str, str]]:
    """One group of rows per run of consecutive layers with the same classes and sublayers."""
    structure = model.layer_structure
    signatures: list[tuple[str, tuple[tuple[str, str, str], ...]]] = []
    for index, layer in enumerate(layers):
        mixer = structure.mixers[index]
        mlp = structure.mlps[index]
        parts: list[tuple[str, str, str]] = []
        if mixer is not None:
            name = "mlp" if mixer.is_mlp else ("self_attn" if mixer.kind == "attention" else "mixer")
            kind = "" if mixer.is_mlp else f" ({mixer.kind})"
            parts.append((name, mixer.path, _describe(_get(layer, mixer.path), False) + kind))
        if mlp is not None and not (mixer is not None and mixer.is_mlp):
            if mlp.path is None:
                parts.append(("mlp", "-", f"no module: its contribution is read at {mlp.contribution.output}"))
            else:
                parts.append(("mlp", mlp.path, _describe(_get(layer, mlp.path), False)))
        signatures.append((_block_name(layer), tuple(parts)))
    rows: list[tuple[str, str, str]] = []
    start = 0
    for index in range(1, len(signatures) + 1):
        if index < len(signatures) and signatures[index] == signatures[start]:
            continue
        span = f"{start}" if index - 1 == start else f"{start}-{index - 1}"
        layer_class, layer_parts = signatures[start]
        rows.append((f"layers[{span}]", model.paths["layers"] or "-", layer_class))
        rows.extend((f"  {name}", path, text) for name, path, text in layer_parts)
        start = index
    return rows


def _block_name(layer: Any) -> str:
    """A block's class name, or what a block nnterp built is made of (`nnterp.virtual_blocks`)."""
    from nnterp.virtual_blocks import VirtualBlock

    return layer.description if isinstance(layer, VirtualBlock) else type(layer).__name__


def _get(root: Any, path: str | None) -> Any:
    if not path:
        return None
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def standard_tree_repr(model: StandardizedTransformer) -> str:
    """The standard tree of ``model`` as text: each standard name, the HF path it stands for,
    and that module (leaf modules with their parameters' sizes)."""
    hf_model = model._module
    heads = model.num_heads
    sizes = [f"{model.num_layers} layers", f"hidden {model.hidden_size}"]
    if heads is not None:
        sizes.append(f"{heads} heads")
    sizes.append(f"vocab {model.vocab_size}")
    header = f"StandardizedTransformer({type(hf_model).__name__}, spec {model.spec.name!r}: {', '.join(sizes)})"
    rows: list[tuple[str, str, str]] = []
    for name in ("embed_tokens",):
        path = model.paths.get(name)
        rows.append((name, path or "-", _describe(_get(hf_model, path), True)))
    rows.extend(_layer_rows(model, hf_model.get_submodule(model.paths["layers"])))
    for name in ("ln_final", "lm_head"):
        path = model.paths.get(name)
        rows.append((name, path or "-", _describe(_get(hf_model, path), True)))
    name_width = max(len(row[0]) for row in rows) + 3
    path_width = max(len(row[1]) for row in rows) + 3
    lines = [header]
    lines += [f"  {name:<{name_width}}{path:<{path_width}}{text}" for name, path, text in rows]
    lines.append("The HuggingFace module tree: print(model._module)")
    return "\n".join(lines)
