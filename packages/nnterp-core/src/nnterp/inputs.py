"""Checks of user input at nnterp's API boundary, each raising a typed error that says the fix."""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from nnterp.errors import InvalidInputError, LayerIndexError, TokenIdError, TraceError

_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def max_positions(config: Any) -> int | None:
    """The longest input the config allows, or ``None`` when it sets no limit."""
    for key in _POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def require_causal(model: torch.nn.Module) -> None:
    """Raise `InvalidInputError` unless ``model`` is a decoder that predicts the next token."""
    config = getattr(model, "config", None)
    name = type(model).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise InvalidInputError(
            f"{name} is an encoder-decoder model; nnterp wraps causal (decoder-only) language "
            "models. Load a *ForCausalLM class instead."
        )
    lineage = [klass.__name__ for klass in type(model).__mro__]
    looks_causal = any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in lineage)
    if not looks_causal:
        from transformers.models.auto import modeling_auto

        # Causal LMs, and vision-language models, whose language model predicts the next token.
        mappings = (modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, modeling_auto.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
        causal_classes = {n for mapping in mappings for names in mapping.values()
                          for n in ([names] if isinstance(names, str) else names)}
        looks_causal = bool(causal_classes.intersection(lineage))
    if looks_causal:
        return
    if not isinstance(model, _pretrained_class()):
        raise InvalidInputError(
            f"{name} is a custom torch.nn.Module, not a transformers *ForCausalLM class: nnterp "
            "wraps transformers models (it needs their config, generate and tokenizer "
            "plumbing). Make it one: subclass PreTrainedModel and GenerationMixin with a "
            "PretrainedConfig and a name ending in ForCausalLM, returning CausalLMOutput(logits=...); "
            "then describe where its parts live with rename={native path: standard name} (e.g. "
            "{'blocks': 'layers', 'head': 'lm_head'}) or spec=ArchitectureSpec(...) "
            "(docs: Adding a model)."
        )
    has_head = any(hasattr(model, attr) for attr in ("lm_head", "embed_out", "output_projection"))
    reason = "it is not a *ForCausalLM / *LMHeadModel class" if has_head else "it has no next-token head"
    raise InvalidInputError(
        f"{name} is not a causal language model ({reason}): nnterp needs a *ForCausalLM / "
        "*LMHeadModel class. Load it with AutoModelForCausalLM, or, for your own class, name it "
        "*ForCausalLM and describe its parts with rename={native path: standard name} or "
        "spec=ArchitectureSpec(...) (docs: Adding a model)."
    )


def _pretrained_class() -> type:
    from transformers import PreTrainedModel

    return PreTrainedModel


#: The forms a model's input may take, named in every error about one.
ACCEPTED_INPUTS = (
    "a string, a list of strings, token ids (a list of ints, a list of such lists, or an "
    "integer tensor of shape (seq,) or (batch, seq)), or a tokenizer encoding (a dict with "
    "'input_ids', e.g. tokenizer(texts, return_tensors='pt', padding=True))"
)


def check_prompts(model: Any, prompts: Any, name: str = "prompts") -> None:
    """Check a model input at nnterp's boundary, in every form ``model.trace`` takes.

    Strings, lists of strings, token-id lists / tensors and encodings all get the same checks:
    a known form (see `ACCEPTED_INPUTS`), nothing empty, token ids inside the vocabulary, and
    a length within the model's context: past ``max_positions`` it is an error for a model
    with learned position embeddings (they have no row for it) and a ``UserWarning`` for the
    others (RoPE, ALiBi: they run, but past the context they were trained on).

    Args:
        model: the `StandardizedTransformer` (``tokenizer``, ``max_positions``, ``_module``).
        prompts: the input.
        name: the argument's name, for errors.

    Raises:
        InvalidInputError: an unknown form, an empty input, or too long for learned positions.
        TokenIdError: a token id outside the vocabulary.

    Example:
        >>> check_prompts(model, torch.tensor([[5, 6, 7]]))          # fine: returns None
        >>> check_prompts(model, 5)
        Traceback (most recent call last):
        InvalidInputError: prompts must be a string, a list of strings, token ids ...; got int
    """
    texts, rows = _input_rows(prompts, name)
    for index, text in enumerate(texts):
        if not text:
            raise InvalidInputError(
                f"{name}: prompt {index} is an empty string: a causal LM needs at least one token "
                "to predict from. Remove it or give it text."
            )
    for index, row in enumerate(rows):
        if row.numel() == 0:
            raise InvalidInputError(
                f"{name}: row {index} has no token ids: a causal LM needs at least one token to "
                "predict from."
            )
    if rows:
        _check_token_ids(torch.cat([row.reshape(-1) for row in rows]), _embedding_rows(model), name)
    limit = max_positions(getattr(getattr(model, "_module", None), "config", None))
    if limit is None:
        return
    lengths = [(index, int(row.numel())) for index, row in enumerate(rows)]
    for index, text in enumerate(texts):
        # A token covers at least one byte, so only long texts need tokenizing to be checked.
        if len(text.encode("utf-8")) + 4 > limit:
            lengths.append((index, len(model.tokenizer(text)["input_ids"])))
    for index, length in lengths:
        if length > limit:
            _too_long(model, name, index, length, limit)


def _too_long(model: Any, name: str, index: int, length: int, limit: int) -> None:
    fix = (
        f"shorten or truncate it (e.g. tokenizer(..., truncation=True, max_length={limit}))"
    )
    if has_learned_positions(model):
        raise InvalidInputError(
            f"{name}: prompt {index} is {length} tokens long but the model accepts at most {limit} "
            f"positions (its position embeddings have {limit} rows): {fix}."
        )
    warnings.warn(
        f"{name}: prompt {index} is {length} tokens long, past the {limit} positions this model "
        f"was trained on (max_position_embeddings): it runs, but its outputs there are "
        f"extrapolation; {fix} to stay within its context.",
        UserWarning,
        stacklevel=4,
    )


def _input_rows(prompts: Any, name: str) -> tuple[list[str], list[torch.Tensor]]:
    """``(texts, token-id rows)`` of a model input, each row a 1-D long tensor of real tokens."""
    if isinstance(prompts, str):
        return [prompts], []
    if isinstance(prompts, torch.Tensor):
        return [], _tensor_rows(prompts, name, None)
    if isinstance(prompts, Mapping):
        if "input_ids" not in prompts:
            keys = ", ".join(repr(key) for key in prompts) or "none"
            raise InvalidInputError(
                f"{name}: the encoding has no 'input_ids' (keys: {keys}): pass {ACCEPTED_INPUTS}."
            )
        ids, mask = prompts["input_ids"], prompts.get("attention_mask")
        if not isinstance(ids, torch.Tensor):
            _, rows = _input_rows(ids, f"{name}['input_ids']")
            return [], rows
        return [], _tensor_rows(ids, name, mask)
    if isinstance(prompts, (list, tuple)):
        if not prompts:
            raise InvalidInputError(f"{name}: the prompt list is empty: pass at least one prompt.")
        if all(isinstance(item, str) for item in prompts):
            return list(prompts), []
        if all(_is_token_id(item) for item in prompts):
            return [], [torch.tensor([int(item) for item in prompts], dtype=torch.long)]
        if all(isinstance(item, (list, tuple, torch.Tensor)) for item in prompts):
            rows = []
            for item in prompts:
                if isinstance(item, torch.Tensor):
                    rows.extend(_tensor_rows(item, name, None))
                elif all(_is_token_id(value) for value in item):
                    rows.append(torch.tensor([int(value) for value in item], dtype=torch.long))
                else:
                    break
            else:
                return [], rows
    raise InvalidInputError(f"{name} must be {ACCEPTED_INPUTS}; got {_describe(prompts)}.")


def _tensor_rows(ids: torch.Tensor, name: str, mask: Any) -> list[torch.Tensor]:
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise InvalidInputError(
            f"{name}: token ids must be an integer tensor, got dtype {ids.dtype}: pass "
            "input_ids (e.g. tokenizer(texts, return_tensors='pt')['input_ids'])."
        )
    if ids.dim() not in (1, 2):
        raise InvalidInputError(
            f"{name}: token ids must have shape (seq,) or (batch, seq), got {tuple(ids.shape)}."
        )
    matrix = ids.reshape(1, -1) if ids.dim() == 1 else ids
    if matrix.shape[0] == 0:
        raise InvalidInputError(f"{name}: the batch of token ids is empty: pass at least one row.")
    real = None
    if isinstance(mask, torch.Tensor) and tuple(mask.reshape(matrix.shape[0], -1).shape) == tuple(matrix.shape):
        real = mask.reshape(matrix.shape).to(torch.bool).cpu()
    matrix = matrix.cpu()
    if real is None:
        return list(matrix)
    return [row[keep] for row, keep in zip(matrix, real)]


def _is_token_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral) or (
        isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point()
    )


def _describe(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        kinds = sorted({type(item).__name__ for item in value})
        return f"a {type(value).__name__} of {', '.join(kinds)}"
    return type(value).__name__


def _embedding_rows(model: Any) -> int | None:
    module = getattr(model, "_module", None)
    rows = getattr(_embedding_module(module), "num_embeddings", None)
    if isinstance(rows, int):
        return rows
    vocab = getattr(getattr(module, "config", None), "vocab_size", None)
    return vocab if isinstance(vocab, int) else None


def _check_token_ids(ids: torch.Tensor, vocab_size: int | None, name: str) -> None:
    if ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (vocab_size is not None and high >= vocab_size):
        bad = low if low < 0 else high
        upper = "" if vocab_size is None else f" and below the vocabulary size {vocab_size}"
        raise TokenIdError(
            f"{name}: token id {bad} is not in the vocabulary: ids must be >= 0{upper}; "
            "tokenize text with model.tokenizer."
        )


def token_ids(tokens: Any, vocab_size: int | None, name: str) -> torch.Tensor:
    """``tokens`` (an id, a list of ids or a tensor) as a 1-D long tensor of valid token ids.

    Raises:
        InvalidInputError: not integers, or empty.
        TokenIdError: an id outside ``0..vocab_size - 1``.

    Example:
        >>> token_ids([3, 5], 100, "tokens")
        tensor([3, 5])
    """
    if isinstance(tokens, torch.Tensor):
        ids = tokens
    elif _is_token_id(tokens):
        ids = torch.tensor([int(tokens)])
    elif isinstance(tokens, (list, tuple)) and all(_is_token_id(value) for value in tokens):
        ids = torch.tensor([int(value) for value in tokens], dtype=torch.long)
    else:
        raise InvalidInputError(
            f"{name} must be a token id (an int), a list of ids or an integer tensor, got {_describe(tokens)}."
        )
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise InvalidInputError(f"{name} must hold integer token ids, got dtype {ids.dtype}.")
    ids = ids.reshape(-1).to(torch.long)
    if ids.numel() == 0:
        raise InvalidInputError(f"{name} is empty: give at least one token id.")
    _check_token_ids(ids.cpu(), vocab_size, name)
    return ids


def has_learned_positions(model: Any) -> bool:
    """Whether the model adds a learned position embedding (a table of ``max_positions``
    rows, GPT-2's ``wpe``, OPT's offset table): inputs longer than that cannot run.

    Rotary and ALiBi models have no such table: past ``max_positions`` they run, out of the
    context they were trained on.
    """
    module = getattr(model, "_module", model)
    limit = max_positions(getattr(module, "config", None))
    tokens = _embedding_module(module)
    return limit is not None and any(
        isinstance(child, torch.nn.Embedding) and child is not tokens and limit <= child.num_embeddings <= limit + 2
        for child in module.modules()
    )


def _embedding_module(module: Any) -> Any:
    getter = getattr(module, "get_input_embeddings", None)
    try:
        return getter() if callable(getter) else None
    except (AttributeError, NotImplementedError):
        return None


def require_hidden(tensor: Any, hidden_size: int, name: str) -> None:
    """Raise unless ``tensor`` is a tensor whose last dimension is ``hidden_size``."""
    shape = getattr(tensor, "shape", None)
    if shape is None:
        raise InvalidInputError(f"{name} must be a tensor of shape (..., {hidden_size}), got {type(tensor).__name__}")
    if len(shape) == 0 or shape[-1] != hidden_size:
        raise InvalidInputError(
            f"{name} has shape {tuple(shape)} but the model's hidden size is {hidden_size}: its "
            f"last dimension must be {hidden_size}."
        )


def require_steering_vector(vector: Any, hidden_size: int, factor: Any = None) -> torch.Tensor:
    """A steering vector as a finite floating tensor of last dimension ``hidden_size``.

    Lists and numpy arrays are converted; integer tensors become float. Dtype and device are
    matched to the activations where it is applied. ``factor``, when given, must be a finite
    number (see `require_factor`).

    Raises:
        InvalidInputError: not a tensor, complex, the wrong hidden size, NaN/inf values, or a
            NaN/inf ``factor``.

    Example:
        >>> require_steering_vector([1, 0, 0, 0], 4).dtype
        torch.float32
    """
    if not isinstance(vector, torch.Tensor):
        try:
            vector = torch.as_tensor(vector)
        except Exception as error:  # noqa: BLE001 - any conversion failure is bad input
            raise InvalidInputError(f"steering_vector must be a tensor, got {type(vector).__name__}") from error
    if vector.is_complex():
        raise InvalidInputError("steering_vector is complex; pass a real-valued tensor.")
    if not vector.is_floating_point():
        vector = vector.float()
    require_hidden(vector, hidden_size, "steering_vector")
    require_finite(vector, "steering_vector")
    if factor is not None:
        require_factor(factor)
    return vector


def require_finite(tensor: torch.Tensor, name: str) -> None:
    """Raise `InvalidInputError` if ``tensor`` holds a NaN or an infinity (it would spread
    through every later activation and logit).

    Example:
        >>> require_finite(torch.tensor([1.0, float("nan")]), "steering_vector")
        Traceback (most recent call last):
        InvalidInputError: steering_vector holds 1 NaN/inf value(s) (first at index (1,)) ...
    """
    if not tensor.is_floating_point() and not tensor.is_complex():
        return
    bad = ~torch.isfinite(tensor.detach())
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise InvalidInputError(
            f"{name} holds {int(bad.sum())} NaN/inf value(s) (first at index {where}): they would "
            "make every later activation and logit NaN; pass a finite tensor (check how it was "
            "computed, e.g. a division by a zero norm)."
        )


def require_factor(factor: Any, name: str = "factor") -> float:
    """``factor`` as a finite real number, else `InvalidInputError`.

    Example:
        >>> require_factor(0.5)
        0.5
    """
    if isinstance(factor, torch.Tensor) and factor.numel() == 1:
        factor = factor.item()
    if isinstance(factor, bool) or not isinstance(factor, numbers.Real):
        raise InvalidInputError(f"{name} must be a real number, got {type(factor).__name__}")
    if not math.isfinite(float(factor)):
        raise InvalidInputError(
            f"{name} is {factor}: a NaN or infinite {name} makes every steered activation, and "
            "so every logit, NaN or infinite; pass a finite number."
        )
    return float(factor)


def require_broadcastable(tensor: torch.Tensor, shape: Sequence[int], name: str, target: str) -> None:
    """Raise `InvalidInputError` unless ``tensor`` broadcasts to ``shape`` (the slice it is
    added to, described by ``target``), naming ``name``.

    Example:
        >>> require_broadcastable(torch.ones(7, 16), (2, 3, 16), "steering_vector", "the steered tokens")
        Traceback (most recent call last):
        InvalidInputError: steering_vector has shape (7, 16) but is added to the steered tokens ...
    """
    try:
        broadcast = torch.broadcast_shapes(tuple(tensor.shape), tuple(shape))
    except RuntimeError:
        broadcast = None
    if broadcast != tuple(shape):
        raise InvalidInputError(
            f"{name} has shape {tuple(tensor.shape)} but is added to {target} of shape "
            f"{tuple(shape)} (rows, positions, hidden): pass a ({shape[-1]},) vector, or one "
            "shaped like that slice (or broadcastable to it)."
        )


def normalize_index(value: Any, size: int, name: str) -> int:
    """One index as a non-negative int within ``size``, Python-style negatives allowed.

    Raises:
        LayerIndexError: not an int, or outside ``range(-size, size)``.

    Example:
        >>> normalize_index(-1, 12, "layer")
        11
    """
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise LayerIndexError(f"{name} must be an int, got {value!r}") from None
    if not -size <= value < size:
        raise LayerIndexError(
            f"{name} {value} is out of range for a dimension of size {size}: use "
            f"0..{size - 1} (or -{size}..-1 from the end)."
        )
    return value % size


def index_list(indices: int | Sequence[int] | None, size: int, name: str) -> list[int] | None:
    """``indices`` as a list of non-negative ints within ``size`` (``None`` means all).

    Raises:
        InvalidInputError: an empty list.
        LayerIndexError: an index outside ``range(-size, size)``.
    """
    if indices is None:
        return None
    values = [indices] if isinstance(indices, int) else list(indices)
    if not values:
        raise InvalidInputError(f"{name} is empty: pass None to mean all, or at least one index.")
    return [normalize_index(value, size, name) for value in values]


def layer_indices(num_layers: int, layers: int | Sequence[int] | None, name: str = "layers") -> list[int]:
    """The one normaliser of a ``layers`` argument: ``None`` (every layer), an index, or
    several, as non-negative indices in the caller's order.

    Example:
        >>> layer_indices(12, [0, -1])
        [0, 11]
    """
    return index_list(layers, num_layers, name) or list(range(num_layers))


def prompt_list(prompts: Any, name: str = "prompts") -> list[str]:
    """The one normaliser of a text ``prompts`` argument: a prompt or a list of prompts, as
    a non-empty list of strings.

    Raises:
        InvalidInputError: not text, or an empty list.

    Example:
        >>> prompt_list("Hello")
        ['Hello']
    """
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise InvalidInputError(
            f"{name} must be a prompt or a list of prompts (strings), got {type(prompts).__name__}"
        )
    if not prompts:
        raise InvalidInputError(f"{name} is an empty list: pass at least one prompt.")
    return list(prompts)


#: The fix for each nnsight error users meet, by its class name.
_NNSIGHT_FIXES = {
    "OutOfOrderError": (
        "inside one trace, read modules in the order the forward computes them (layer 0 before "
        "layer 2; each layer's attention, then MLP, then output; logits last), or use two traces "
        "(docs: Concepts, Forward order)."
    ),
}

_OUTSIDE_TRACE_FIX = (
    "accessors and module .input/.output only hold values inside `with model.trace(...)`: read "
    "them in the trace body and keep them with .save() (e.g. `h = model.layers_output[0].save()` "
    "inside the trace, then use h after it)."
)


def nnsight_error(error: BaseException) -> TraceError | None:
    """The nnterp error for an nnsight error a user meets (out-of-order access, a value read
    outside a trace), keeping nnsight's message and adding the fix; ``None`` for any other
    error (it propagates unchanged).

    Example:
        >>> try:
        ...     with model.trace("Hi"):
        ...         later = model.layers_output[2].save()
        ...         earlier = model.layers_output[0].save()      # out of order
        ... except Exception as error:
        ...     converted = nnsight_error(error)                 # a TraceError, or None
    """
    if isinstance(error, TraceError):
        return None
    from_nnsight = type(error).__module__.startswith("nnsight")
    fix = _NNSIGHT_FIXES.get(type(error).__name__) if from_nnsight else None
    if fix is None and isinstance(error, ValueError) and "outside of interleaving" in str(error):
        fix = _OUTSIDE_TRACE_FIX
    if fix is None:
        return None
    return TraceError(f"{error} -- {fix}")


@contextlib.contextmanager
def nnsight_errors() -> Iterator[None]:
    """Re-raise, as `TraceError`, the nnsight errors users meet inside the block (see
    `nnsight_error`); every other error passes unchanged.

    Example:
        >>> with nnsight_errors():
        ...     run_the_trace()
    """
    try:
        yield
    except Exception as error:
        converted = nnsight_error(error)
        if converted is None:
            raise
        raise converted from error
