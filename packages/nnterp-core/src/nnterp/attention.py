"""Finding attention probabilities inside an attention module's forward.

The operation is found by what it is (a call of a named function, e.g. the dropout applied to
the softmax output), never by NNsight's numbered labels, which move between nnsight and
transformers versions.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nnterp.errors import NnterpError, UnavailableComponentError
from nnterp.nnsight_seams import compiled_operations
from nnterp.spec import chain_alternatives

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


def _is_call_of(source_text_lines: list[str], line: int, dotted: str) -> bool:
    # Compiled line numbers are 1-based within the dedented source (decorators included);
    # a call may sit on the statement's first line or the one after it.
    window = "\n".join(source_text_lines[max(line - 1, 0) : line + 1])
    return re.search(rf"(?<![\w.]){re.escape(dotted)}\s*\(", window) is not None


_OCCURRENCE = re.compile(r"^(?P<name>.+)\[(?P<index>-?\d+)\]$")


def find_call(source: Any, dotted: str) -> Any:
    """The first operation of an NNsight ``Source`` that calls ``dotted`` (e.g. ``"torch.softmax"``).

    Assignments that share the name (``attention_interface = ...``) are skipped: only a call
    of the function qualifies. ``"name[k]"`` picks the k-th call of ``name`` in the source's
    order instead (``[-1]``: the last), for a forward whose first call sits in a branch the
    standard inputs do not take (XLNet's two-stream attention).

    Raises:
        LookupError: no call of that name in the forward.
    """
    occurrence = _OCCURRENCE.match(dotted)
    index = 0
    if occurrence is not None:
        dotted, index = occurrence.group("name"), int(occurrence.group("index"))
    base = dotted.replace(".", "_")
    pattern = re.compile(rf"^{re.escape(base)}_(\d+)$")
    names, line_of, text = compiled_operations(source)
    lines = text.split("\n")
    labels = sorted((int(match.group(1)), name) for name in names if (match := pattern.match(name)))
    calls = [name for _, name in labels if _is_call_of(lines, line_of[name], dotted)]
    if -len(calls) <= index < len(calls):
        return getattr(source, calls[index])
    which = f"call [{index}] of" if occurrence is not None else "call of"
    raise LookupError(f"no {which} {dotted}(...) in {source.prefix}; operations: {', '.join(names)}")


def submodule_envoy(owner: Any, dotted: str) -> Any:
    """The envoy of submodule ``dotted`` (``"self.attn_dropout"``) of ``owner``, or ``None``.

    ``self.<path>`` names a submodule of the module whose forward is being read; a call of a
    submodule is reached through its envoy (its ``.source``, or its ``.output``), not through
    the caller's source.
    """
    if owner is None or not dotted.startswith("self."):
        return None
    path = dotted[len("self.") :]
    try:
        owner._module.get_submodule(path)
    except AttributeError:
        return None
    envoy = owner
    for part in path.split("."):
        envoy = getattr(envoy, part)
    return envoy


def softmax_attention_envoy(model: StandardizedTransformer, layer: int, what: str) -> Any:
    """The envoy of the softmax attention whose probabilities layer ``layer`` computes: its
    ``self_attn`` on attention layers, or the spec's ``side_attention`` on layers that run one
    besides a mixer of another kind (Zamba's shared block). Inside a trace, called before any
    read of the layer's mixer on those layers (the side attention runs first).

    Raises:
        UnavailableComponentError: layer ``layer`` computes no softmax attention; the message
            names the layers that do (``what`` names the site asked for).

    Example:
        >>> softmax_attention_envoy(zamba, 1, "attention_probabilities")   # layers[1].shared_transf.self_attn
    """
    structure = model.layer_structure
    if not structure.side_attentions:
        return model._attention(layer)
    side = structure.side_attention(layer)
    if side is None:
        why = structure.probabilities_unavailable(layer)
        if why is not None:
            raise UnavailableComponentError(f"{what}[{layer}] of {model.spec.name}: {why}.")
        return model._attention(layer)
    envoy = model.layers[layer]
    for part in side.split("."):
        envoy = getattr(envoy, part)
    return envoy


def attention_to_read(model: StandardizedTransformer, layer: int, what: str) -> Any:
    """`softmax_attention_envoy`, inside a trace, before a value computed in it is read: when
    that attention is the layer's mixer, what the mixer's contribution needs from its input is
    read first (`StandardizedTransformer._before_inside_mixer`); a side attention runs before
    its layer's mixer, so nothing of the mixer is read yet."""
    attention = softmax_attention_envoy(model, layer, what)
    if model.layer_structure.side_attention(layer) is None:
        model._before_inside_mixer(layer)
    return attention


def first_located(chains: Any, locate: Callable[[Any], Any]) -> Any:
    """``locate(chain)`` for the first of the spec value ``chains``' alternatives
    (`nnterp.spec.chain_alternatives`) whose operations the forward has.

    Raises:
        UnavailableComponentError: no alternative is found (the message gives each one's reason).
    """
    alternatives = chain_alternatives(chains) or ((),)
    errors: list[str] = []
    for chain in alternatives:
        try:
            return locate(chain)
        except UnavailableComponentError as error:
            errors.append(str(error))
    if len(errors) == 1:
        raise UnavailableComponentError(errors[0])
    raise UnavailableComponentError(
        "none of the spec's chains is in this forward: "
        + "; ".join(f"{chain!r}: {error}" for chain, error in zip(alternatives, errors))
    )


def locate_probabilities(attention_envoy: Any, chain: Any, layer: int) -> Any:
    """The ``SourceEnvoy`` (or module envoy) whose output is layer ``layer``'s attention probabilities.

    ``chain`` names the calls to drill through (see ``ArchitectureSpec.attention_probabilities``):
    each is a function or method call found in the previous step's source, or a submodule
    (``"self.attention"``, ``"self.attn_dropout"``) of the module whose forward is read.
    Several chains are tried in order. Must be called inside a trace (nested ``.source``
    resolves the live callable).
    """
    if chain is None:
        raise UnavailableComponentError(
            "this architecture's attention computes no explicit probabilities "
            "(its spec sets attention_probabilities=None)"
        )
    if callable(chain):
        return _legacy_locator_operation(chain, attention_envoy, layer)
    return first_located(chain, lambda one: _located_probabilities(attention_envoy, one, layer))


def _located_probabilities(attention_envoy: Any, chain: tuple[str, ...], layer: int) -> Any:
    if not chain:
        raise UnavailableComponentError(f"attention probabilities of layer {layer}: the spec's chain is empty")
    what = "attention probabilities"
    owner, source = walk_chain(attention_envoy, chain[:-1], what, layer, chain)
    envoy = submodule_envoy(owner, chain[-1])
    if envoy is not None:
        return envoy
    return find_step(source if source is not None else owner.source, chain[-1], what, layer, chain)


def find_step(source: Any, dotted: str, what: str, layer: int, chain: tuple[str, ...]) -> Any:
    """The call ``dotted`` in ``source`` (see `find_call`), or an `UnavailableComponentError`
    saying that ``what`` of layer ``layer`` needs eager attention or another spec ``chain``."""
    try:
        return find_call(source, dotted)
    except LookupError as error:
        raise UnavailableComponentError(
            f"{what} of layer {layer}: {error}. Load the model with enable_attention_probs=True "
            f"(eager attention), or fix the spec's chain {chain!r}."
        ) from None


def walk_chain(attention_envoy: Any, steps: tuple[str, ...], what: str, layer: int, chain: tuple[str, ...]) -> tuple[Any, Any]:
    """Follow ``steps`` of a spec chain from the attention module: each is a submodule
    (``"self.attention"``) of the module whose forward is read, or a call in the previous step's
    source. Returns (the module envoy whose forward is read, ``None`` inside a free function;
    the source view read last, ``None`` when that module's own forward is next)."""
    owner, source = attention_envoy, None
    for dotted in steps:
        envoy = submodule_envoy(owner, dotted)
        if envoy is not None:
            owner, source = envoy, None
            continue
        operation = find_step(source if source is not None else owner.source, dotted, what, layer, chain)
        if not dotted.startswith("self."):
            owner = None
        source = operation.source
    return owner, source


def split_merged_heads(tensor: Any, model: StandardizedTransformer) -> Any:
    """Attention probabilities or scores as (batch, heads, query, key).

    Older attentions (BART-style decoders: XGLM, MVP, TrOCR; the spec's
    ``attention_heads_merged``) compute them with ``torch.bmm`` over the batch and head
    dimensions merged, (batch * heads, query, key); those are viewed as (batch, heads, query,
    key). Other models' tensors are returned as they are.

    Example:
        >>> split_merged_heads(xglm_weights, xglm).shape      # (6, 5, 5) with 3 heads
        torch.Size([2, 3, 5, 5])
    """
    if not model.spec.attention_heads_merged:
        return tensor
    return tensor.view(-1, model.num_heads, *tensor.shape[-2:])


def merge_like(value: Any, current: Any, model: StandardizedTransformer) -> Any:
    """``value`` (batch, heads, query, key) in the layout of the model's ``current`` tensor:
    merged to (batch * heads, query, key) where the spec says the model computes it that way."""
    return value.reshape(current.shape) if model.spec.attention_heads_merged else value


def _legacy_locator_operation(locator: Any, attention_envoy: Any, layer: int) -> Any:
    """The operation an nnterp 1.x attention-probability function (``RenameConfig.attn_prob_source``,
    an ``AttnProbFunction`` or a plain function of the attention envoy) points at."""
    name = getattr(locator, "__name__", type(locator).__name__)
    try:
        return locator(attention_envoy)
    except NnterpError:
        raise
    except Exception as error:  # user code reading NNsight's source labels: any failure means the same
        raise UnavailableComponentError(
            f"attention probabilities of layer {layer}: the nnterp 1.x locator {name} failed ({error}). "
            "1.x locators name NNsight's numbered .source operations, which differ between NNsight "
            "versions; `model.attention_probabilities.print_source()` shows the current names, or pass "
            "the call names instead: attn_prob_source=('attention_interface', 'nn.functional.dropout')."
        ) from None
