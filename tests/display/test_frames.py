"""prompts_to_df: one row per prompt with each category's target strings and decoded tokens."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pytest
import torch

from nnterp.display import prompts_to_df
from nnterp.errors import InvalidInputError

PARIS = 436


@dataclass
class Prompt:
    """The attributes of nnterp.prompt_utils.Prompt that prompts_to_df reads."""

    prompt: str
    target_strings: dict[str, list[str]] | None
    target_tokens: dict[str, list[int]]


def test_rows_and_columns(tokenizer):
    paris = tokenizer(" Paris")["input_ids"][0]
    london = tokenizer(" London")["input_ids"][0]
    newline = tokenizer("\n")["input_ids"][0]
    prompts = [
        Prompt("The capital of France is", {"target": ["Paris"], "traps": ["London"]},
               {"target": [paris], "traps": torch.tensor([london, newline])}),
        Prompt("Le chat", {"target": "cat"}, {"target": [london]}),
    ]
    df = prompts_to_df(prompts, tokenizer)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["prompt", "target_strings", "target_tokens", "traps_strings", "traps_tokens"]
    assert df["prompt"].tolist() == ["The capital of France is", "Le chat"]
    assert df.loc[0, "target_strings"] == ["Paris"]
    assert df.loc[0, "target_tokens"] == [" Paris"]
    assert df.loc[0, "traps_tokens"] == [" London", "\n"]
    assert df.loc[1, "target_strings"] == ["cat"]
    assert df.loc[1, "target_tokens"] == [" London"]
    assert df.loc[1, "traps_strings"] is None and df.loc[1, "traps_tokens"] is None


def test_prompt_built_from_token_ids_has_no_strings(tokenizer):
    df = prompts_to_df([Prompt("a", None, {"target": [PARIS]})], tokenizer)
    assert df.to_dict("records") == [{"prompt": "a", "target_strings": None, "target_tokens": [" Paris"]}]


def test_single_prompt_and_bad_input(tokenizer):
    df = prompts_to_df(Prompt("a", {"x": ["b"]}, {"x": [PARIS]}), tokenizer)
    assert df.to_dict("records") == [{"prompt": "a", "x_strings": ["b"], "x_tokens": [" Paris"]}]
    with pytest.raises(InvalidInputError, match=r"prompts\[1\] is a str without prompt"):
        prompts_to_df([Prompt("a", {}, {}), "b"], tokenizer)
    with pytest.raises(InvalidInputError, match="got str"):
        prompts_to_df("The capital", tokenizer)
    assert prompts_to_df([], tokenizer).empty
