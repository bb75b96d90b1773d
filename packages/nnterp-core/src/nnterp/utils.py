"""``nnterp.utils``: the helpers nnterp 1.x kept here, still importable under that name.

Version strings, notebook display helpers, a minimal input batch, the probe that runs a function
under ``model.scan()`` and falls back to a real trace, and 1.x's model-class names
(``OPTForCausalLM``, ``LlamaForCausalLM``, ...; `ArchitectureNotFound` where transformers lacks
one). New code should not need any of it.

Example:
    >>> from nnterp.utils import dummy_inputs, unpack_tuple, is_notebook
    >>> dummy_inputs()["input_ids"].shape
    torch.Size([1, 3])
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import torch

from nnterp.logging import logger
from nnterp.nnsight_utils import TraceTensor, unpack_tuple

NNSIGHT_VERSION = version("nnsight")
TRANSFORMERS_VERSION = version("transformers")

#: The transformers classes 1.x's ``nnterp.utils`` named (resolved on first access).
_LEGACY_CLASS_NAMES = (
    "OPTForCausalLM",
    "MixtralForCausalLM",
    "BloomForCausalLM",
    "GPT2LMHeadModel",
    "Qwen2MoeForCausalLM",
    "DbrxForCausalLM",
    "GPTJForCausalLM",
    "LlamaForCausalLM",
    "Qwen3ForCausalLM",
    "Qwen2ForCausalLM",
)


class ArchitectureNotFound:
    """Stands for a model class the installed transformers does not have (``isinstance`` with
    it is always false)."""


def __getattr__(name: str) -> Any:
    if name in _LEGACY_CLASS_NAMES:
        import transformers

        return getattr(transformers, name, ArchitectureNotFound)
    raise AttributeError(f"module 'nnterp.utils' has no attribute {name!r}")


def is_notebook() -> bool:
    """Whether the code runs in a Jupyter kernel (IPython's kernel app is configured)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def display_markdown(text: str) -> None:
    """Render ``text`` as Markdown in a notebook; print it where IPython is not installed."""
    try:
        from IPython.display import Markdown, display
    except ImportError:
        print(text)
        return
    display(Markdown(text))


def display_source(source: str) -> None:
    """Show ``source`` as a Python code block (`display_markdown`)."""
    display_markdown(f"```py\n{source}\n```")


class DummyCache:
    """A stand-in KV cache whose legacy form is empty."""

    def to_legacy_cache(self) -> None:
        return None


def dummy_inputs() -> dict[str, torch.Tensor]:
    """A one-row, three-token batch of token ids (0, 1, 1), for probing a model's structure.

    Example:
        >>> with model.scan(dummy_inputs()):
        ...     shape = model.layers_output[0].shape
    """
    return {"input_ids": torch.tensor([[0, 1, 1]])}


def try_with_scan(
    model: Any,
    function: Callable[[], Any],
    error_to_throw: Exception,
    allow_dispatch: bool,
    warn_if_scan_fails: bool = True,
    errors_to_raise: tuple[type[Exception], ...] | type[Exception] | None = None,
) -> bool:
    """Run ``function`` (no arguments, reading the model's envoys) inside ``model.scan()`` on
    `dummy_inputs`, which needs no weights; if that fails, inside a real ``model.trace()``.

    Args:
        model: an NNsight model (a `StandardizedTransformer` included).
        function: what to run in the context.
        error_to_throw: raised (from the failure) when neither context runs ``function``.
        allow_dispatch: whether a model not yet dispatched may fall back to a real trace.
        warn_if_scan_fails: log a warning when falling back.
        errors_to_raise: exception types raised as they are, without fallback.

    Returns:
        ``True`` if the scan ran it, ``False`` if the trace did.
    """
    immediate = errors_to_raise or ()
    try:
        with model.scan(dummy_inputs(), use_cache=False) as tracer:
            function()
            tracer.stop()
        return True
    except immediate:
        raise
    except Exception as scan_error:  # noqa: BLE001 - any failure of the scan falls back to a trace
        if not allow_dispatch and not getattr(model, "dispatched", True):
            raise error_to_throw from scan_error
        if warn_if_scan_fails:
            logger.warning("model.scan() failed (%s); using model.trace(), which loads the weights", scan_error)
    try:
        with model.trace(dummy_inputs()) as tracer:
            function()
            tracer.stop()
    except immediate:
        raise
    except Exception as trace_error:  # noqa: BLE001 - reported as the caller's error
        raise error_to_throw from trace_error
    return False


__all__ = [
    "NNSIGHT_VERSION",
    "TRANSFORMERS_VERSION",
    "ArchitectureNotFound",
    "DummyCache",
    "TraceTensor",
    "display_markdown",
    "display_source",
    "dummy_inputs",
    "is_notebook",
    "try_with_scan",
    "unpack_tuple",
    *_LEGACY_CLASS_NAMES,
]
