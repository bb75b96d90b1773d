"""Token strings as figures show them: visible whitespace, literal HTML, decoding and checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnterp.display import visible_token
from nnterp.display._tokens import label_grid, position_labels, token_label, token_strings
from nnterp.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (" Paris", "␣Paris"),
        ("\n", "\\n"),
        ("a b\tc\r\n", "a␣b\\tc\\r\\n"),
        ("", "∅"),
        ("\xa0x", "\\xa0x"),
        ("\x03", "\\x03"),
        ("é漢", "é漢"),
    ],
)
def test_visible_token_shows_whitespace_and_control_characters(text, shown):
    assert visible_token(text) == shown


def test_token_label_escapes_plotly_markup():
    assert token_label(" <b>&") == "␣&lt;b&gt;&amp;"


def test_label_grid_decodes_each_id_in_place(tokenizer):
    paris, newline, london = 436, 202, 434
    assert tokenizer.decode([paris]) == " Paris" and tokenizer.decode([newline]) == "\n"
    grid = label_grid(tokenizer, np.array([[paris, newline], [london, paris]]))
    assert grid.tolist() == [["␣Paris", "\\n"], ["␣London", "␣Paris"]]


def test_token_strings_accepts_prompt_strings_and_ids(tokenizer):
    ids = tokenizer("The capital of France is")["input_ids"]
    expected = [tokenizer.decode([i]) for i in ids]
    assert expected[1] == " capital"
    assert token_strings("The capital of France is", len(ids), tokenizer) == expected
    assert token_strings(torch.tensor([ids]), len(ids), tokenizer) == expected
    assert token_strings(np.array(ids), len(ids), tokenizer) == expected
    assert token_strings(expected, len(ids)) == expected
    assert token_strings(None, 3) is None
    assert position_labels(["a", " b"], 2) == ["0 a", "1 ␣b"]
    assert position_labels(None, 2) == ["0", "1"]


def test_token_strings_rejects_wrong_length_and_missing_tokenizer(tokenizer):
    with pytest.raises(InvalidInputError, match="has 2 tokens but the data has 3 positions"):
        token_strings(["a", "b"], 3)
    with pytest.raises(InvalidInputError, match="pass tokenizer="):
        token_strings([1, 2, 3], 3)
    with pytest.raises(InvalidInputError, match="prompt string"):
        token_strings("abc", 3)
    with pytest.raises(InvalidInputError, match=r"\.decode"):
        token_strings([1, 2], 2, tokenizer=object())
