"""Token strings for figures: decoding, visible whitespace, and escaping for plotly's HTML-like text."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from nnterp.display._arrays import to_numpy
from nnterp.display._checks import tokenizer as require_tokenizer
from nnterp.errors import InvalidInputError

_WHITESPACE = {" ": "␣", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
EMPTY_TOKEN = "∅"


def visible_token(text: str) -> str:
    """``text`` with its whitespace and control characters made visible.

    Spaces become ``␣``, newlines ``\\n``, tabs ``\\t``, carriage returns ``\\r``, other
    non-printable characters their escape (``\\xa0``); the empty string becomes ``∅``.

    Example:
        >>> visible_token(" Paris\\n")
        '␣Paris\\\\n'
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            f"text must be a string (one decoded token), got {type(text).__name__}: decode ids first, "
            "e.g. visible_token(tokenizer.decode([token_id]))."
        )
    if text == "":
        return EMPTY_TOKEN
    parts = []
    for character in text:
        if character in _WHITESPACE:
            parts.append(_WHITESPACE[character])
        elif character.isprintable():
            parts.append(character)
        else:
            parts.append(character.encode("unicode_escape").decode("ascii"))
    return "".join(parts)


def token_label(text: str) -> str:
    """``visible_token(text)`` escaped so that plotly shows it literally (``<b>`` is not bold)."""
    return html.escape(visible_token(text), quote=False)


def decode_each(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token id decoded on its own: ``[tokenizer.decode([i]) for i in ids]``."""
    require_tokenizer(tokenizer)
    return [tokenizer.decode([int(token_id)]) for token_id in ids]


def label_grid(tokenizer: Any, ids: Any) -> np.ndarray:
    """Plotly labels (`token_label`) of an integer array of token ids, as an object array of its shape."""
    ids = np.asarray(ids)
    labels = [token_label(text) for text in decode_each(tokenizer, ids.ravel().tolist())]
    return np.array(labels, dtype=object).reshape(ids.shape)


def token_strings(tokens: Any, count: int, tokenizer: Any = None, name: str = "tokens") -> list[str] | None:
    """The ``count`` token strings that label a position axis, or ``None`` when ``tokens`` is ``None``.

    ``tokens`` is a prompt (tokenized with ``tokenizer`` the way ``model.trace`` does), a list of
    token strings, or token ids (a list, tensor or array; decoded with ``tokenizer``).
    """
    if tokens is None:
        return None
    if isinstance(tokens, str):
        if tokenizer is None:
            raise InvalidInputError(
                f"{name} is a prompt string: also pass tokenizer= to split it into tokens."
            )
        require_tokenizer(tokenizer, splits_text=True)
        strings = decode_each(tokenizer, tokenizer(tokens)["input_ids"])
    elif isinstance(tokens, (list, tuple)) and all(isinstance(token, str) for token in tokens):
        strings = list(tokens)
    else:
        ids = to_numpy(tokens, name)
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1:
            raise InvalidInputError(f"{name} must be one prompt's tokens, got shape {tuple(ids.shape)}.")
        if not np.all(np.isfinite(ids)) or not np.all(ids == np.round(ids)) or np.any(ids < 0):
            raise InvalidInputError(
                f"{name} must be token strings or token ids (whole numbers >= 0), got a "
                f"{type(tokens).__name__} holding other values (e.g. NaN, 1.5 or -1)."
            )
        if tokenizer is None:
            raise InvalidInputError(f"{name} holds token ids: also pass tokenizer= to decode them.")
        strings = decode_each(tokenizer, ids.astype(int).tolist())
    if len(strings) != count:
        raise InvalidInputError(
            f"{name} has {len(strings)} tokens but the data has {count} positions: pass the tokens "
            "of the prompt that produced it."
        )
    return strings


def position_labels(tokens: Sequence[str] | None, count: int) -> list[str]:
    """Names of ``count`` positions for hover text: ``"3 ␣cat"``, or ``"3"`` without tokens."""
    if tokens is None:
        return [str(position) for position in range(count)]
    return [f"{position} {token_label(token)}" for position, token in enumerate(tokens)]
