"""Helpers for traces that run a single forward and may stop it early (``tracer.stop()``)."""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def single_forward_options(model: StandardizedTransformer) -> dict[str, Any]:
    """Forward keyword arguments for a trace whose one forward is never continued:
    ``use_cache=False`` (no keys and values kept for generation), for models whose config
    declares ``use_cache``; nothing for the others.

    Example:
        >>> with model.trace(prompts, **single_forward_options(model)) as tracer:
        ...     hidden = model.layers_output[3].save()
        ...     tracer.stop()
    """
    return {"use_cache": False} if getattr(model._module.config, "use_cache", None) is not None else {}


def free_stopped_forward() -> None:
    """Free what a stopped forward left behind, now rather than at a later garbage collection.

    nnsight's stop exception sits in a reference cycle with the traceback of the stopped
    forward, whose frames hold that forward's activations. A young-generation collection
    (well under a millisecond) frees them; call it after a trace that called ``tracer.stop()``,
    above all in loops over many batches, where the cycles would otherwise pile up.

    Example:
        >>> with model.trace(batch) as tracer:
        ...     hidden = model.layers_output[3].save()
        ...     tracer.stop()
        >>> free_stopped_forward()
    """
    gc.collect(1)


__all__ = ["free_stopped_forward", "single_forward_options"]
