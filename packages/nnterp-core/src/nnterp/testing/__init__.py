"""nnterp's test kit: tiny offline models and the architecture conformance checks.

Example:
    >>> from nnterp.testing import tiny_model, tiny_tokenizer, run_conformance
    >>> report = run_conformance(tiny_model("llama"), tiny_tokenizer())
    >>> report.passed
    True
"""

from nnterp.testing.tiny import (
    GENERIC_TINY_CONFIG,
    TINY_VOCAB_SIZE,
    tiny_config,
    tiny_model,
    tiny_tokenizer,
)

__all__ = ["GENERIC_TINY_CONFIG", "TINY_VOCAB_SIZE", "tiny_config", "tiny_model", "tiny_tokenizer"]
