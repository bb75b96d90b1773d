"""Per-row positions for models whose position embedding ignores left padding.

BART-family decoders (BART, mBART, Marian, Pegasus, PLBart, MVP, Blenderbot, BigBird-Pegasus,
TrOCR) count positions ``0..seq-1`` for every row themselves, so in a left-padded batch a short
prompt's tokens get the positions of the padding's end, and its results differ from running it
alone. Their position-embedding modules accept explicit ``position_ids``; a forward hook that
nnterp puts on the module named by the spec's ``position_embedding`` recomputes the embedding
with each row's own positions (counted from its first real token), during nnterp's traces of a
left-padded batch only. Outside nnterp's traces, and when the batch has no padding, the module's
output is untouched.

Example:
    >>> with model.trace(["Hi", "The capital of France is"]):   # a BART-family decoder
    ...     logits = model.logits.save()                         # row 0 equals "Hi" alone
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch


if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def install(model: StandardizedTransformer, path: str) -> None:
    """Hook ``model``'s position-embedding module at ``path`` (from the HF model's root) so a
    left-padded batch traced through nnterp gets per-row positions."""
    module = model._module.get_submodule(path)
    inside = threading.local()

    def per_row(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
        if getattr(inside, "active", False) or not isinstance(output, torch.Tensor):
            return None
        mask = model.batch_attention_mask()
        cache_length = args[1] if len(args) > 1 else kwargs.get("cache_length", 0)
        if mask is None or bool(mask.all()) or cache_length or output.shape[-2] != mask.shape[1]:
            return None
        positions = (mask.cumsum(-1) - 1).clamp(min=0).to(output.device)
        inside.active = True
        try:
            rows = [module(args[0], 0, position_ids=row) for row in positions]
        finally:
            inside.active = False
        seq, width = output.shape[-2:]
        return torch.stack([row.reshape(-1, seq, width)[0] for row in rows])

    # Kept on the model so a second wrapper of the same HF model does not hook it twice.
    handles = model._module.__dict__.setdefault("_nnterp_position_hooks", {})
    if path not in handles:
        handles[path] = module.register_forward_hook(per_row, with_kwargs=True)


__all__ = ["install"]
