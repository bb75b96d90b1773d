"""Fixtures for the interventions tests: tiny wrapped models and hand computations on the plain
HF model (forward hooks, no nnterp), which the interventions are compared against."""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Callable

import pytest
import torch

from nnterp.testing import tiny_model, tiny_tokenizer

MODEL_TYPES = ["llama", "gpt2", "qwen2", "gemma2"]

#: Prompts of different lengths (1 to 7 tokens), so batches carry padding.
PROMPTS = ["The capital of France is", "Hello", "The cat sat on the mat"]

LayerEdit = Callable[[int, torch.Tensor], torch.Tensor]


@lru_cache(maxsize=None)
def wrapped(model_type: str):
    """(StandardizedTransformer, plain HF model sharing its weights) for a tiny ``model_type``."""
    from nnterp import StandardizedTransformer

    hf_model = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return model, hf_model


@pytest.fixture(params=MODEL_TYPES)
def pair(request):
    """(StandardizedTransformer, HF model) for each architecture covered here."""
    return wrapped(request.param)


@pytest.fixture
def tiny_llama():
    """The tiny Llama alone, for tests that need one architecture."""
    return wrapped("llama")[0]


@pytest.fixture
def model(pair):
    return pair[0]


def hf_layers(hf_model) -> list[torch.nn.Module]:
    base = getattr(hf_model, "model", None) or hf_model.transformer
    return list(base.layers if hasattr(base, "layers") else base.h)


def hf_unembed(hf_model, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of a residual-stream state, by hand: final norm, lm_head, Gemma-2 softcap."""
    base = getattr(hf_model, "model", None) or hf_model.transformer
    norm = base.norm if hasattr(base, "norm") else base.ln_f
    logits = hf_model.lm_head(norm(hidden))
    cap = getattr(hf_model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


class HFRun:
    """One plain HF forward of a single prompt (no padding), with optional layer-output edits.

    Attributes:
        ids: (1, seq) input ids.
        logits: (seq, vocab) output logits.
        layer_outputs: per layer, the (seq, hidden) output after any edit.
    """

    def __init__(self, hf_model, prompt: str, edit: LayerEdit | None = None, steps: int = 0) -> None:
        self.layer_outputs: list[torch.Tensor] = []
        handles = [
            layer.register_forward_hook(self._hook(index, edit))
            for index, layer in enumerate(hf_layers(hf_model))
        ]
        encoding = tiny_tokenizer()(prompt, return_tensors="pt")
        self.ids = encoding["input_ids"]
        self._prompt_length = self.ids.shape[1]
        try:
            with torch.no_grad():
                self.logits = hf_model(**encoding).logits[0]
                if steps:
                    generated = hf_model.generate(
                        **encoding, max_new_tokens=steps, do_sample=False, pad_token_id=0
                    )
                    self.generated = generated[0, self._prompt_length :]
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, index: int, edit: LayerEdit | None):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            # Edits apply to the prompt's forward only, not to generation's later steps.
            if edit is not None and hidden.shape[1] == self._prompt_length:
                hidden = edit(index, hidden.clone())
            if hidden.shape[1] == self._prompt_length and len(self.layer_outputs) <= index:
                self.layer_outputs.append(hidden[0])
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook


@pytest.fixture
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture
def hf_run() -> type[HFRun]:
    return HFRun


@pytest.fixture
def unembed() -> Callable[..., torch.Tensor]:
    return hf_unembed
