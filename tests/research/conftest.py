"""Tiny Llama, GPT-2 and GPT-NeoX models for the research-tool tests, with their plain HF twins.

GPT-NeoX is not in core; its spec is given here explicitly (``spec=``), with the fused
``query_key_value`` projection split head by head.
"""

from __future__ import annotations

import functools
import warnings

import pytest
from nnterp import StandardizedTransformer
from nnterp.testing import tiny_model, tiny_tokenizer

#: The three families every tool is tested on.
MODEL_TYPES = ["llama", "gpt2", "gpt_neox"]


def build(model_type: str, **kwargs):
    """(StandardizedTransformer, the same HF model object) for a tiny ``model_type``."""
    hf_model = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), **kwargs)
    return model, hf_model


@functools.cache
def shared(model_type: str, enable_attention_probs: bool = True):
    """`build`, once per session and arguments (tests must not change the model)."""
    return build(model_type, enable_attention_probs=enable_attention_probs)


@pytest.fixture(scope="session", params=MODEL_TYPES)
def pair(request):
    """(model, hf_model) for each of the three families, with attention probabilities."""
    return shared(request.param)
