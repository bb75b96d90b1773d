"""Shared fixtures: tiny offline models wrapped in StandardizedTransformer."""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from nnterp.testing import tiny_model, tiny_tokenizer

# Every load in the suite validates for real (tests/core/test_validation_cache.py turns the
# cache back on in a temporary directory); subprocesses such as the sweep inherit this.
os.environ["NNTERP_VALIDATION_CACHE"] = "0"
# Tests never record sweep results into this machine's user-local status registry.
os.environ["NNTERP_STATUS_REGISTRY"] = "0"

#: Architectures core covers itself, by transformers model type.
CORE_MODEL_TYPES = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"]


@pytest.fixture(scope="session")
def tokenizer():
    """The in-process BPE tokenizer (left padding, pad id 0)."""
    return tiny_tokenizer()


def make_model(model_type: str, **kwargs):
    """(StandardizedTransformer, plain HF model) for a tiny random ``model_type``."""
    from nnterp import StandardizedTransformer

    hf_model = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), **kwargs)
    return model, hf_model


@pytest.fixture(scope="session")
def llama():
    """A tiny Llama with attention probabilities enabled."""
    return make_model("llama", enable_attention_probs=True)[0]


@pytest.fixture(scope="session")
def gpt2():
    """A tiny GPT-2 with attention probabilities enabled."""
    return make_model("gpt2", enable_attention_probs=True)[0]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
