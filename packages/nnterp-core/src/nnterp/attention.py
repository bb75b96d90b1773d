"""Finding attention probabilities inside an attention module's forward.

The operation is found by what it is (a call of a named function, e.g. the dropout applied to
the softmax output), never by NNsight's numbered labels, which move between nnsight and
transformers versions.
"""

from __future__ import annotations

import re
from typing import Any

from nnterp.errors import UnavailableComponentError


def _is_call_of(source_text_lines: list[str], line: int, dotted: str) -> bool:
    # Compiled line numbers are 1-based within the dedented source (decorators included);
    # a call may sit on the statement's first line or the one after it.
    window = "\n".join(source_text_lines[max(line - 1, 0) : line + 1])
    return re.search(rf"(?<![\w.]){re.escape(dotted)}\s*\(", window) is not None


def find_call(source: Any, dotted: str) -> Any:
    """The first operation of an NNsight ``Source`` that calls ``dotted`` (e.g. ``"torch.softmax"``).

    Assignments that share the name (``attention_interface = ...``) are skipped: only a call
    of the function qualifies.

    Raises:
        LookupError: no call of that name in the forward.
    """
    base = dotted.replace(".", "_")
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)$")
    compiled = source.compiled
    lines = compiled.source.split("\n")
    labels = sorted(
        (int(match.group(1)), name)
        for name in compiled.names
        if (match := pattern.match(name))
    )
    for _, name in labels:
        if _is_call_of(lines, compiled.lines[name], dotted):
            return getattr(source, name)
    raise LookupError(
        f"no call of {dotted}(...) in {source.prefix}; operations: {', '.join(compiled.names)}"
    )


def locate_probabilities(attention_envoy: Any, chain: tuple[str, ...] | None, layer: int) -> Any:
    """The ``SourceEnvoy`` whose output is layer ``layer``'s attention probabilities.

    ``chain`` names the calls to drill through (see ``ArchitectureSpec.attention_probabilities``).
    Must be called inside a trace (nested ``.source`` resolves the live callable).
    """
    if chain is None:
        raise UnavailableComponentError(
            "this architecture's attention computes no explicit probabilities "
            "(its spec sets attention_probabilities=None)"
        )
    source = attention_envoy.source
    operation = None
    for depth, dotted in enumerate(chain):
        try:
            operation = find_call(source, dotted)
        except LookupError as error:
            raise UnavailableComponentError(
                f"attention probabilities of layer {layer}: {error}. Load the model with "
                f"enable_attention_probs=True (eager attention), or fix the spec's "
                f"attention_probabilities chain {chain!r}."
            ) from None
        if depth < len(chain) - 1:
            source = operation.source
    return operation
