"""Small helpers shared by the real-model tests."""

from __future__ import annotations


def token_id(tokenizer, text: str) -> int:
    """The id of ``text``, which must be exactly one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens: {ids}"
    return ids[0]


def rank_of(scores, index: int) -> int:
    """0-based rank of ``index`` in the 1-D ``scores`` (0 = highest)."""
    return int((scores > scores[index]).sum())
