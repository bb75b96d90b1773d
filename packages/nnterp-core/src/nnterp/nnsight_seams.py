"""The places where nnterp relies on nnsight internals that no public extension point covers.

Everything else uses nnsight's public API (envoys, ``.source`` operations, ``eproperty``
values, ``rename=``). Each seam below says what it needs and why; re-check them whenever
nnsight is upgraded (tests cover each one).

Example:
    >>> state = run_state(model)          # inside a trace: a dict that lives for this run only
"""

from __future__ import annotations

from typing import Any

from nnterp.errors import RenamingError

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


def mount_over_child(host: Any, alias: str, target: Any, target_path: str) -> None:
    """Bind ``alias`` on the envoy ``host`` to its descendant envoy ``target`` (at
    ``target_path`` below it), moving a native child already named ``alias`` to
    ``E_<alias>``, where nnsight itself mounts a child named after a value it serves.

    ModernBERT-decoder's root holds both ``lm_head`` (the prediction head) and ``decoder``
    (the unembedding): after this, ``model.lm_head`` is the decoder and ``model.E_lm_head``
    the native head, still at its own path ``model.lm_head`` (which hooks, remote requests
    and ``nnterp.accessors.child_envoy(model, "lm_head")`` use). A host with no child named
    ``alias`` just gets the alias, as ``rename=`` would give it.

    Seam: nnsight 0.8's ``rename=`` refuses an alias that shadows a child (``ValueError``),
    and no public hook moves a child. ``Envoy._wrap_envoy`` moves BERT's ``output`` child to
    ``E_output`` and records it in the envoy's ``_aliases``, ``aliasing.bind`` binds an alias
    as a plain attribute recorded there too; this writes the same two things, so nnsight's
    repr labels both (``E_lm_head/lm_head``, ``lm_head/decoder``) and ``Envoy._drop_envoy``
    (re-dispatch) finds the moved child under its prefixed name.

    Raises:
        RenamingError: ``alias`` is already taken on ``host`` by something else than a native
            child (an alias, an envoy attribute, an attribute of the wrapped module), or the
            prefixed name is taken.
    """
    from nnsight.intervention.envoy import Envoy

    if host.__dict__.get(alias) is target:
        return
    where = f"`{getattr(host, 'path', type(host).__name__)}`"
    native = host._module._modules.get(alias)
    if host._aliases.get(alias) is not None:
        raise RenamingError(
            f"cannot name {target_path!r} {alias!r} on {where}: the alias {alias!r} is already bound there "
            f"(to {host._aliases[alias]!r}). Fix: give {alias!r} one path in the spec or rename=."
        )
    taken = native is None and (alias in host.__dict__ or hasattr(host._module, alias))
    if taken or any(alias in vars(klass) for klass in type(host).__mro__):
        raise RenamingError(
            f"cannot name {target_path!r} {alias!r} on {where}: {alias!r} is an attribute of the envoy or of "
            f"the wrapped {type(host._module).__name__}, not a child module nnterp can move aside. "
            "Fix: reach the module by its native path instead."
        )
    if native is not None:
        moved = f"{Envoy.OVERLOAD_PREFIX}{alias}"
        child = host.__dict__.get(alias)
        if moved in host.__dict__ or not isinstance(child, Envoy) or child._module is not native:
            raise RenamingError(
                f"cannot move the native child {alias!r} of {where} to {moved!r}: that name is taken, or the "
                f"child is not mounted at {alias!r}. Fix: reach {target_path!r} by its native path."
            )
        object.__setattr__(host, moved, child)
        host._aliases[moved] = alias
    object.__setattr__(host, alias, target)
    host._aliases[alias] = target_path


__all__ = ["compiled_operations", "mount_over_child", "run_state"]
