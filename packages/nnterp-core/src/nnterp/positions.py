"""Token positions that mean the same thing in a padded batch as in a single prompt.

nnterp's one rule: a position ``p >= 0`` counts from a prompt's first real token, ``p < 0``
from its last one, so ``0`` is always the first token and ``-1`` the last, however much padding
the batch adds, and on whichever side (left for most models, right for the recurrent models
whose spec says ``padding_side="right"``). Every function taking a token position (``idx``,
``token_positions``, ``positions``, ``index_to_patch``) turns it into a column of the padded
batch here.

Example:
    >>> from nnterp.positions import absolute_positions
    >>> mask = torch.tensor([[1, 1, 1], [0, 1, 1]])        # prompt 1 is one token shorter
    >>> absolute_positions(mask, torch.tensor([[0, -1], [0, -1]]), "idx")
    tensor([[0, 2],
            [1, 2]])
    >>> absolute_positions(torch.tensor([[1, 1, 1], [1, 1, 0]]), torch.tensor([[-1], [-1]]), "idx")
    tensor([[2],
            [1]])
"""

from __future__ import annotations

import contextlib
import warnings
import numbers
import operator
import threading
import weakref
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import torch

from nnterp.errors import InvalidInputError, TokenPositionError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def as_position_list(positions: int | Sequence[int], name: str) -> list[int]:
    """``positions`` as a non-empty list of ints (a single int gives a one-element list).

    Raises:
        InvalidInputError: empty, or not made of ints.

    Example:
        >>> as_position_list(-1, "idx"), as_position_list((0, 2), "idx")
        ([-1], [0, 2])
    """
    values = [positions] if _is_integer(positions) else positions
    try:
        result = [_position(value, name) for value in values]  # type: ignore[union-attr]
    except TypeError:
        raise InvalidInputError(
            f"{name} must be an int or a list of ints, got {type(positions).__name__}"
        ) from None
    if not result:
        raise InvalidInputError(f"{name} is empty: pass at least one position (e.g. -1, the last token).")
    return result


def absolute_positions(
    attention_mask: torch.Tensor,
    relative: torch.Tensor,
    name: str,
    rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Column indices of ``relative`` positions in a padded batch.

    Each row's real tokens must be contiguous: padding on the left, on the right, or both.

    Args:
        attention_mask: (batch, seq), 0 at the padding.
        relative: (n_rows, n) positions per row, counted within each prompt's real tokens.
        name: the argument's name, for errors.
        rows: the rows of the batch ``relative`` is for (default every row, in order); only
            those are checked and placed, and errors name a prompt by its row in the batch.

    Returns:
        (n_rows, n) long tensor of indices into the padded sequence dimension.

    Raises:
        InvalidInputError: a row's real tokens are not contiguous (padding inside a prompt).
        TokenPositionError: a position is outside its prompt's tokens.

    Example:
        >>> mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
        >>> absolute_positions(mask, torch.tensor([[0, -1], [0, -1]]), "idx")
        tensor([[0, 2],
                [1, 2]])
        >>> absolute_positions(mask, torch.tensor([[1]]), "idx", rows=[1])
        tensor([[2]])
    """
    mask = attention_mask.to(torch.long).cpu()
    batch_rows = list(range(mask.shape[0])) if rows is None else [int(row) for row in rows]
    mask = mask[batch_rows]
    lengths = mask.sum(dim=1, keepdim=True)
    first = mask.argmax(dim=1, keepdim=True)
    columns = torch.arange(mask.shape[1])
    if not torch.equal(((columns >= first) & (columns < first + lengths)).to(torch.long), mask):
        row = int(((columns >= first) & (columns < first + lengths)).ne(mask.bool()).any(dim=1).nonzero()[0])
        raise InvalidInputError(
            f"prompt {batch_rows[row]} has padding between its real tokens (attention mask "
            f"{mask[row].tolist()}): nnterp counts positions within each prompt's contiguous tokens; "
            "pad on one side (tokenize with padding=True) or pass the prompts as strings."
        )
    relative = relative.to(torch.long).cpu()
    outside = (relative >= lengths) | (relative < -lengths)
    if bool(outside.any()):
        row, column = (int(i) for i in outside.nonzero()[0])
        length = int(lengths[row])
        raise TokenPositionError(
            f"{name} {int(relative[row, column])} is outside prompt {batch_rows[row]}, which has "
            f"{length} tokens: use 0..{length - 1} or -{length}..-1 (negative counts from the "
            "last token)."
        )
    return first + torch.where(relative >= 0, relative, lengths + relative)


def traced_attention_mask(model: StandardizedTransformer, needed_for: str = "token positions") -> torch.Tensor:
    """Inside a trace: the forward's attention mask (batch, seq), all ones when none was passed.

    ``generate`` drops the mask of a batch without padding; every token is then real. The mask
    is the one nnterp kept when the batch was assembled (`StandardizedTransformer.
    batch_attention_mask`), so any point of a single-invoke trace can read it; in a trace with
    several invokes it is the forward's input, read in forward order (before any module).

    Args:
        model: the traced `StandardizedTransformer`.
        needed_for: what the mask is read for, named in the error.

    Raises:
        InvalidInputError: a module was read first in a trace with several invokes.

    Example:
        >>> with model.trace(["Hello", "The capital of France is"]):
        ...     mask = traced_attention_mask(model)          # 0 at the first prompt's padding
    """
    from nnsight.intervention.interleaver import (
        OutOfOrderError,  # lazily: nnsight is heavy
    )

    kept = model.batch_attention_mask()
    if kept is not None:
        return kept
    try:
        return model.attention_mask
    except OutOfOrderError as error:
        raise InvalidInputError(
            f"{needed_for} count within each prompt, which needs the trace's attention mask, but "
            "the forward already ran past its input (a module was read or edited first) in a "
            "trace with several invokes: ask for it before any module (forward order), or use "
            "two traces."
        ) from error


# -- the running forward: its model, its lock ---------------------------------------------

class _Fresh:
    """Module state that a copy of nnterp shipped by value (a remote trace) starts empty."""

    def __reduce__(self) -> tuple[type, tuple]:
        return (type(self), ())


class _Locks(_Fresh):
    """One re-entrant lock per wrapped HF module: its runs are serialized across threads
    (nnsight keeps each run's state on the model, and its greenlets cannot cross threads)."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.by_module: weakref.WeakKeyDictionary[torch.nn.Module, Any] = weakref.WeakKeyDictionary()
        self.tracer_class: type | None = None


class _Running(_Fresh, threading.local):
    """Per thread, the models whose forward runs now (innermost last)."""

    def __init__(self) -> None:
        self.models: list[Any] = []


_LOCKS = _Locks()
_RUNNING = _Running()


def trace_lock(model: StandardizedTransformer) -> Any:
    """The re-entrant lock held while ``model`` runs (one per wrapped HF module).

    Example:
        >>> with trace_lock(model):
        ...     ...                    # no other thread's trace of model runs meanwhile
    """
    with _LOCKS.guard:
        lock = _LOCKS.by_module.get(model._module)
        if lock is None:
            lock = _LOCKS.by_module[model._module] = threading.RLock()
        return lock


def locked_tracer_class() -> type:
    """nnsight's ``InterleavingTracer``, whose run (at the ``with`` block's exit, where nnsight
    runs the forward) holds the model's `trace_lock` and re-raises nnsight's user-facing errors
    as nnterp errors (`nnterp.inputs.nnsight_errors`); each ``tracer.invoke(input)`` checks its
    input as ``model.trace`` does (`nnterp.inputs.check_prompts`)."""
    if _LOCKS.tracer_class is None:
        from nnsight.intervention.tracer import InterleavingTracer

        from nnterp.inputs import check_prompts, nnsight_errors

        class LockedTracer(InterleavingTracer):
            def __exit__(
                self,
                exc_type: type[BaseException] | None,
                exc_value: BaseException | None,
                exc_traceback: TracebackType | None,
            ) -> bool:
                with trace_lock(self.envoy), nnsight_errors(), _typed_dropped_statement_warnings():
                    return super().__exit__(exc_type, exc_value, exc_traceback)

            def all(self) -> Any:
                """Every step of the run: in a ``generate`` with ``max_new_tokens=n``, the
                loop ``tracer.iter[:n]`` (the run makes at most n steps), so that the
                statements after the loop run; otherwise nnsight's open ``tracer.iter[:]``."""
                steps = self.kwargs.get("max_new_tokens")
                if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
                    return self.iter[:steps]
                return super().all()

            def invoke(self, *args: Any, **kwargs: Any) -> Any:
                if args:
                    check_prompts(self.envoy, args[0])
                return super().invoke(*args, **kwargs)

        _LOCKS.tracer_class = LockedTracer
    return _LOCKS.tracer_class


@contextlib.contextmanager
def _typed_dropped_statement_warnings() -> Iterator[None]:
    """Re-issue NNsight's warning that a per-step loop cut the trace body short as a
    `DroppedStatementsWarning`, with the fix in nnterp's terms; other warnings pass unchanged."""
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always")
            caught = recorded
            yield
    finally:
        _reissue(caught)


def _reissue(caught: list[warnings.WarningMessage]) -> None:
    from nnterp.errors import DroppedStatementsWarning

    for warning in caught:
        text = str(warning.message)
        if "was never reached" in text and "statements after it did not run" in text:
            warnings.warn(
                f"{text} In nnterp: `tracer.all()` inside `model.generate(..., max_new_tokens=n)` is "
                "bounded to n steps; a loop cut short by an end-of-sequence token needs "
                "`min_new_tokens=n`, and code that must run after the loop belongs in its own "
                "`tracer.invoke()` or after the trace.",
                DroppedStatementsWarning,
                stacklevel=5,
            )
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno, source=warning.source)


@contextlib.contextmanager
def running(model: StandardizedTransformer) -> Iterator[None]:
    """Mark ``model``'s forward as running in this thread (its trace body runs in greenlets of
    the same thread), so code that gets only tensors (a metric given logits) can find the
    batch's attention mask with `running_attention_mask`."""
    _RUNNING.models.append(model)
    try:
        yield
    finally:
        _RUNNING.models.pop()


def running_attention_mask(rows: int, required_for: str | None = None) -> torch.Tensor | None:
    """The attention mask (batch, seq) of the forward running in this thread, for a tensor of
    ``rows`` batch rows; ``None`` outside a run, or when the mask is unknown (a trace with
    several invokes) and ``required_for`` is None.

    Raises:
        InvalidInputError: the running batch is padded but has another number of rows than
            the tensor, or the mask is unknown in a run and ``required_for`` (what needs it)
            is given: pass the mask explicitly.

    Example:
        >>> with model.trace(["Hi", "The capital of France is"]):
        ...     mask = running_attention_mask(2)                  # 0 at "Hi"'s padding
    """
    if not _RUNNING.models:
        return None
    mask = _RUNNING.models[-1].batch_attention_mask()
    if mask is None and required_for is not None:
        raise InvalidInputError(
            f"{required_for} counts within each prompt, which needs the batch's attention mask, "
            "and a trace with several invokes does not keep it: read mask = model.attention_mask "
            "first in the invoke (before any module) and pass attention_mask=mask, or use a "
            "negative position (counted from the last token, which needs no mask)."
        )
    if mask is None or mask.shape[0] == rows:
        return mask
    if bool(mask.all()):
        return None
    raise InvalidInputError(
        f"the running batch has {mask.shape[0]} padded rows but the logits given have {rows}: "
        "positions count within each prompt, so pass the rows' attention_mask explicitly "
        "(metric(logits, attention_mask=mask))."
    )


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) or (isinstance(value, torch.Tensor) and value.dim() == 0)


def _position(value: Any, name: str) -> int:
    if isinstance(value, bool) or not _is_integer(value):
        raise InvalidInputError(f"{name} must be made of ints, got {value!r}")
    return operator.index(value)
