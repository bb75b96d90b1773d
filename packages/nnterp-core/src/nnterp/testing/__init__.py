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

__all__ = ["GENERIC_TINY_CONFIG", "TINY_VOCAB_SIZE", "tiny_config", "tiny_model", "tiny_tokenizer"]


def __getattr__(name: str) -> Any:
    # Lazy: pytest imports nnterp.testing.pytest_plugin (and so this package) in every project
    # where nnterp-core is installed; torch loads only when the kit is used.
    if name not in __all__:
        raise AttributeError(f"module 'nnterp.testing' has no attribute {name!r}")
    from nnterp.testing import tiny

    return getattr(tiny, name)
