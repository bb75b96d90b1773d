"""Helpers for traces that run a single forward and may stop it early (``tracer.stop()``)."""

from __future__ import annotations

import contextlib
import functools
import gc
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

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


def remote_options(remote: Any) -> dict[str, Any]:
    """Trace options for an nnterp function's ``remote=`` argument.

    ``None`` or ``False``: the model's own setting (``StandardizedTransformer(..., remote=True)``
    runs every trace on NDIF); ``True``: this call runs on NDIF; ``"local"``: NNsight's local
    simulation of a remote run (the trace is serialized as for NDIF, deserialized without the
    caller's modules, and run here), for testing remote code offline.

    Raises:
        InvalidInputError: any other value.

    Example:
        >>> remote_options(None), remote_options(True), remote_options("local")
        ({}, {'remote': True}, {'remote': 'local'})
    """
    from nnterp.errors import InvalidInputError

    if remote is None or remote is False:
        return {}
    if remote is True or remote == "local":
        return {"remote": remote}
    raise InvalidInputError(f"remote must be True, False, None or 'local', got {remote!r}")


_REMOTE = threading.local()


@contextlib.contextmanager
def remote_runs(remote: Any) -> Iterator[None]:
    """Within the block, every trace of a `StandardizedTransformer` that names no ``remote=`` of
    its own runs with ``remote`` (see `remote_options`); ``None``/``False`` change nothing.

    This is how an nnterp function's ``remote=`` reaches every trace the function runs (its
    collection, its patched runs, ...). Thread-local.

    Example:
        >>> with remote_runs("local"):
        ...     grid = activation_patching(model, clean, corrupted, metric)   # simulated remote runs
    """
    options = remote_options(remote)
    if not options:
        yield
        return
    previous = getattr(_REMOTE, "value", None)
    _REMOTE.value = options["remote"]
    try:
        yield
    finally:
        _REMOTE.value = previous


def current_remote() -> Any:
    """The ``remote`` that `remote_runs` set for this thread, or ``None``."""
    return getattr(_REMOTE, "value", None)


_Function = TypeVar("_Function", bound=Callable[..., Any])


def remote_aware(function: _Function) -> _Function:
    """Decorate an nnterp function with a ``remote`` parameter so that every trace it runs uses
    it (`remote_runs`); the function itself never reads the parameter.

    Example:
        >>> @remote_aware
        ... def lens(model, prompts, remote=None):
        ...     with model.trace(prompts):        # remote=remote applies here
        ...         ...
    """
    signature = inspect.signature(function)
    if "remote" not in signature.parameters:
        raise TypeError(f"{function.__qualname__} has no remote parameter")

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        remote = signature.bind_partial(*args, **kwargs).arguments.get("remote")
        with remote_runs(remote):
            return function(*args, **kwargs)

    return cast(_Function, run)
