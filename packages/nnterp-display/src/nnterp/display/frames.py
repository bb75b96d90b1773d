"""Prompts with target tokens as a pandas table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from nnterp.display._checks import tokenizer as require_tokenizer
from nnterp.display._tokens import decode_each
from nnterp.errors import InvalidInputError

_PROMPT_ATTRIBUTES = ("prompt", "target_strings", "target_tokens")


def prompts_to_df(prompts: Any, tokenizer: Any) -> pd.DataFrame:
    """One row per prompt: its text, and for each target category its strings and tokens.

    Columns: ``prompt``, then for every category (in order of first appearance)
    ``"{category}_strings"`` (the target strings, a list) and ``"{category}_tokens"`` (each
    target token id decoded with ``tokenizer``, a list). Where a prompt lacks a category, or
    has no target strings (a Prompt built from token ids), the cell is ``None``.

    Args:
        prompts: ``nnterp.prompt_utils.Prompt`` objects (a list, or one), or anything with
            attributes ``prompt`` (str), ``target_strings`` ({category: [str]} or None) and
            ``target_tokens`` ({category: [token id]}).
        tokenizer: decodes the target token ids (``model.tokenizer``).

    Raises:
        InvalidInputError: an item that is not a Prompt, or a tokenizer without ``.decode``. No
            prompts (``[]``) give an empty table.

    Example:
        >>> df = prompts_to_df(prompts, model.tokenizer)
        >>> df[["prompt", "target_tokens"]]
    """
    require_tokenizer(tokenizer)
    items = [prompts] if all(hasattr(prompts, name) for name in _PROMPT_ATTRIBUTES) else _as_list(prompts)
    rows = []
    for index, item in enumerate(items):
        missing = [name for name in _PROMPT_ATTRIBUTES if not hasattr(item, name)]
        if missing:
            raise InvalidInputError(
                f"prompts[{index}] is a {type(item).__name__} without {', '.join(missing)}: pass "
                "nnterp.prompt_utils.Prompt objects (e.g. Prompt.from_strings(text, targets, tokenizer))."
            )
        row: dict[str, Any] = {"prompt": item.prompt}
        strings_of = item.target_strings or {}  # None for a Prompt built from token ids
        tokens_of = item.target_tokens or {}
        for category in dict.fromkeys([*strings_of, *tokens_of]):
            strings = strings_of.get(category)
            row[f"{category}_strings"] = [strings] if isinstance(strings, str) else _optional_list(strings)
            tokens = tokens_of.get(category)
            row[f"{category}_tokens"] = None if tokens is None else decode_each(tokenizer, _ids(tokens))
        rows.append(row)
    columns = list(dict.fromkeys(column for row in rows for column in row))
    return pd.DataFrame([{column: row.get(column) for column in columns} for row in rows], columns=columns)


def _as_list(prompts: Any) -> list[Any]:
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Iterable):
        raise InvalidInputError(
            f"prompts must be Prompt objects (or a list of them), got {type(prompts).__name__}."
        )
    return list(prompts)


def _ids(tokens: Any) -> list[int]:
    """Target token ids as a list of ints (a single id, a list, or a tensor)."""
    if hasattr(tokens, "tolist"):
        tokens = tokens.tolist()
    return [int(tokens)] if isinstance(tokens, int) else [int(token) for token in tokens]


def _optional_list(values: Any) -> list[Any] | None:
    return None if values is None else list(values)
