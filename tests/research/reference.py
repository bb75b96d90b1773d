"""Plain-PyTorch references: the HF model run directly, with torch hooks on its native modules.

Nothing here goes through nnterp or NNsight, so the tools can be checked against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch

#: Native module names of each family (test data; the library reads them from specs).
NATIVE: dict[str, dict[str, Any]] = {
    "llama": {"layers": "model.layers", "attn": "self_attn", "mlp": "mlp", "o": "o_proj",
              "norm": "model.norm", "embed": "model.embed_tokens", "q": "q_proj", "k": "k_proj", "v": "v_proj"},
    "gpt2": {"layers": "transformer.h", "attn": "attn", "mlp": "mlp", "o": "c_proj",
             "norm": "transformer.ln_f", "embed": "transformer.wte", "fused": "c_attn", "fused_layout": "blocks"},
    "gpt_neox": {"layers": "gpt_neox.layers", "attn": "attention", "mlp": "mlp", "o": "dense",
                 "norm": "gpt_neox.final_layer_norm", "embed": "gpt_neox.embed_in",
                 "fused": "query_key_value",
                 "fused_layout": "interleaved_heads"},
}


def family(hf_model: torch.nn.Module) -> str:
    """The NATIVE key of ``hf_model``."""
    return {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2", "GPTNeoXForCausalLM": "gpt_neox"}[
        type(hf_model).__name__
    ]


def native(hf_model: torch.nn.Module, part: str, layer: int | None = None) -> torch.nn.Module:
    """A native module: ``part`` in ``layers``, ``attn``, ``mlp``, ``o``, ``q``, ``k``, ``v``,
    ``fused`` (per layer), ``norm`` or ``embed``."""
    names = NATIVE[family(hf_model)]
    if part in ("norm", "embed"):
        return hf_model.get_submodule(names[part])
    block = hf_model.get_submodule(names["layers"])[layer]
    if part == "layer":
        return block
    if part in ("attn", "mlp"):
        return block.get_submodule(names[part])
    return block.get_submodule(f"{names['attn']}.{names[part]}")


def encode(tokenizer: Any, prompts: list[str]) -> dict[str, torch.Tensor]:
    """Left-padded inputs with position ids counted from each prompt's first token."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    mask = batch["attention_mask"]
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
    }


@contextlib.contextmanager
def hooks(*handles: Any) -> Iterator[None]:
    """Remove the given hook handles on exit."""
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def first(output: Any) -> torch.Tensor:
    """The hidden state of a module output (tensor or tuple)."""
    return output[0] if isinstance(output, tuple) else output


def replace_first(output: Any, value: torch.Tensor) -> Any:
    """``output`` with its hidden state replaced."""
    return (value, *output[1:]) if isinstance(output, tuple) else value


def capture(hf_model: torch.nn.Module, inputs: dict[str, torch.Tensor], taps: dict[str, tuple[torch.nn.Module, str]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run the model once; ``taps = {name: (module, "input" | "output")}``. Returns the
    captured tensors and the logits."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, (module, side) in taps.items():
        if side == "input":
            handles.append(module.register_forward_pre_hook(lambda m, args, name=name: seen.__setitem__(name, args[0].detach().clone())))
        else:
            handles.append(module.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, first(out).detach().clone())))
    with hooks(*handles), torch.no_grad():
        logits = hf_model(**inputs).logits
    return seen, logits


def split_heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., heads * d) -> (..., heads, d)."""
    return tensor.reshape(*tensor.shape[:-1], heads, -1)


def qkv_from_native(hf_model: torch.nn.Module, seen: dict[str, torch.Tensor], heads: int, kv_heads: int) -> dict[str, torch.Tensor]:
    """Queries, keys, values (batch, seq, heads, d) from the captured projection outputs."""
    layout = NATIVE[family(hf_model)].get("fused_layout")
    if layout is None:
        return {"q": split_heads(seen["q"], heads), "k": split_heads(seen["k"], kv_heads), "v": split_heads(seen["v"], kv_heads)}
    fused = seen["fused"]
    if layout == "blocks":
        q, k, v = fused.chunk(3, dim=-1)
        return {"q": split_heads(q, heads), "k": split_heads(k, heads), "v": split_heads(v, heads)}
    q, k, v = split_heads(fused, heads).chunk(3, dim=-1)
    return {"q": q, "k": k, "v": v}


def patched_logits(hf_model: torch.nn.Module, inputs: dict[str, torch.Tensor], module: torch.nn.Module, side: str, edit: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Logits with ``edit`` applied to ``module``'s input or (first) output."""
    if side == "input":
        handle = module.register_forward_pre_hook(lambda m, args: (edit(args[0]), *args[1:]))
    else:
        handle = module.register_forward_hook(lambda m, args, out: replace_first(out, edit(first(out))))
    with hooks(handle), torch.no_grad():
        return hf_model(**inputs).logits
