"""nnterp's test kit: tiny offline models and the architecture conformance checks.

Example:
    >>> from nnterp.testing import tiny_model, tiny_tokenizer, run_conformance
    >>> report = run_conformance(tiny_model("llama"), tiny_tokenizer())
    >>> report.passed
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnterp.testing.tiny import (
        GENERIC_TINY_CONFIG,
        TINY_VOCAB_SIZE,
        tiny_config,
        tiny_model,
        tiny_tokenizer,
    )
    from nnterp.testing.tiny_vision import (
        TINY_VISION_KINDS,
        tiny_image,
        tiny_vision_inputs,
        tiny_vision_model,
        tiny_vision_request,
    )

#: Where each name of the kit lives (imported on first use).
_HOMES = {
    **dict.fromkeys(("GENERIC_TINY_CONFIG", "TINY_VOCAB_SIZE", "tiny_config", "tiny_model", "tiny_tokenizer"), "tiny"),
    **dict.fromkeys(
        ("TINY_VISION_KINDS", "tiny_image", "tiny_vision_inputs", "tiny_vision_model", "tiny_vision_request"),
        "tiny_vision",
    ),
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    # Lazy: pytest imports nnterp.testing.pytest_plugin (and so this package) in every project
    # where nnterp-core is installed; torch loads only when the kit is used.
    if name not in _HOMES:
        raise AttributeError(f"module 'nnterp.testing' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"nnterp.testing.{_HOMES[name]}"), name)
