"""The places where nnterp relies on nnsight internals that no public extension point covers.

Everything else uses nnsight's public API (envoys, ``.source`` operations, ``eproperty``
values, ``rename=``). Each seam below says what it needs and why; re-check them whenever
nnsight is upgraded (tests cover each one).

Example:
    >>> state = run_state(model)          # inside a trace: a dict that lives for this run only
"""

from __future__ import annotations

from typing import Any

#: Attribute of nnsight's per-run batcher under which nnterp keeps its per-run state.
_RUN_STATE = "_nnterp_run_state"


def run_state(model: Any) -> dict[str, Any]:
    """A dict that lives exactly as long as the forward run being traced (empty, and thrown
    away, outside a run).

    Seam: nnsight 0.8 creates one ``Batcher`` per run on ``model.interleaver.batcher`` and
    offers no public per-run storage; state kept on it cannot leak into a later run.
    """
    batcher = getattr(getattr(model, "interleaver", None), "batcher", None)
    if batcher is None:
        return {}
    state = batcher.__dict__.get(_RUN_STATE)
    if state is None:
        state = batcher.__dict__[_RUN_STATE] = {}
    return state


def compiled_operations(source: Any) -> tuple[list[str], dict[str, int], str]:
    """``(operation names, their line numbers, the forward's source text)`` of an nnsight
    ``Source`` view.

    Seam: nnsight 0.8 numbers operations (``softmax_0``) but does not say which are calls of
    a given function; the compiled view's names, lines and text let `nnterp.attention` find
    calls by what they call instead of by number.
    """
    compiled = source.compiled
    return list(compiled.names), dict(compiled.lines), compiled.source


__all__ = ["compiled_operations", "run_state"]
