"""Checks of user input at nnterp's API boundary, each raising a typed error that says the fix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nnterp.errors import InvalidInputError, LayerIndexError

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
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        causal_classes = {n for names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
                          for n in ([names] if isinstance(names, str) else names)}
        looks_causal = bool(causal_classes.intersection(lineage))
    if not looks_causal:
        raise InvalidInputError(
            f"{name} is not a causal language model (no next-token head): nnterp needs a "
            "*ForCausalLM / *LMHeadModel class. Load it with AutoModelForCausalLM."
        )


def check_prompts(model: Any, prompts: Any) -> None:
    """Reject empty prompt lists, empty prompts and prompts longer than the model allows."""
    if isinstance(prompts, str):
        texts: list[str] = [prompts]
    elif isinstance(prompts, (list, tuple)) and all(isinstance(p, str) for p in prompts):
        texts = list(prompts)
        if not texts:
            raise InvalidInputError("the prompt list is empty: pass at least one prompt.")
    else:
        return  # token ids, encodings, chats: nnsight validates those
    for index, text in enumerate(texts):
        if not text:
            raise InvalidInputError(
                f"prompt {index} is an empty string: a causal LM needs at least one token to "
                "predict from. Remove it or give it text."
            )
    limit = model.max_positions
    if limit is None:
        return
    for index, text in enumerate(texts):
        # A token covers at least one byte, so only long texts need tokenizing to be checked.
        if len(text.encode("utf-8")) + 4 <= limit:
            continue
        length = len(model.tokenizer(text)["input_ids"])
        if length > limit:
            raise InvalidInputError(
                f"prompt {index} is {length} tokens long but the model accepts at most {limit} "
                "positions: shorten or truncate it (e.g. tokenizer(..., truncation=True, "
                f"max_length={limit}))."
            )


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


def require_steering_vector(vector: Any, hidden_size: int) -> torch.Tensor:
    """A steering vector as a floating tensor of last dimension ``hidden_size``.

    Lists and numpy arrays are converted; integer tensors become float. Dtype and device are
    matched to the activations where it is applied.
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
    return vector


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
