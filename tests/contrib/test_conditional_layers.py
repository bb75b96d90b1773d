"""Blocks a model runs only with some input (the spec's ``conditional_layers``): Mllama's
cross-attention layers, which text-only inputs skip.

Expected values come from the plain HF model run with torch hooks on its native blocks.
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer
from tests.research.reference import encode

PROMPTS = ["The capital of France is", "Hello world"]


@pytest.fixture(scope="module")
def mllama():
    # Three layers, the middle one cross-attention (the last one too in a second model).
    hf_model = tiny_model("mllama", config_overrides={"cross_attention_layers": [1], "num_hidden_layers": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return model, hf_model


def hooked(hf_model, inputs):
    """Each block's output (only the blocks that ran) and the logits of a plain forward."""
    seen = {}
    handles = [
        block.register_forward_hook(lambda _m, _a, out, i=i: seen.__setitem__(i, out[0] if isinstance(out, tuple) else out))
        for i, block in enumerate(hf_model.model.layers)
    ]
    try:
        with torch.no_grad():
            logits = hf_model(**inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def test_text_only_runs_skip_the_cross_attention_layer_and_say_so(mllama):
    model, hf_model = mllama
    seen, logits = hooked(hf_model, encode(model.tokenizer, PROMPTS))
    assert sorted(seen) == [0, 2]  # the plain model skips layer 1
    with torch.no_grad(), model.trace(PROMPTS):
        first = nnsight.save(model.layers_output[0])
        last = nnsight.save(model.layers_output[2])
        traced_logits = nnsight.save(model.logits)
    torch.testing.assert_close(first, seen[0], atol=0, rtol=0)
    torch.testing.assert_close(last, seen[2], atol=0, rtol=0)
    torch.testing.assert_close(traced_logits, logits, atol=0, rtol=0)
    for read in (lambda: model.layers_output[1], lambda: model.attentions_input[1], lambda: model.mlps_output[-2]):
        with pytest.raises(UnavailableComponentError, match="cross_attention_states"), model.trace(PROMPTS):
            read().save()


def test_with_cross_attention_states_the_layer_runs_and_equals_its_hook(mllama):
    model, hf_model = mllama
    encoding = encode(model.tokenizer, PROMPTS)
    states = torch.randn(len(PROMPTS), 4, model.hidden_size, generator=torch.Generator().manual_seed(0))
    inputs = {**encoding, "cross_attention_states": states}
    seen, logits = hooked(hf_model, inputs)
    assert sorted(seen) == [0, 1, 2]
    with torch.no_grad(), model.trace(**inputs):
        middle = nnsight.save(model.layers_output[1])
        traced_logits = nnsight.save(model.logits)
    torch.testing.assert_close(middle, seen[1], atol=0, rtol=0)
    torch.testing.assert_close(traced_logits, logits, atol=0, rtol=0)


def test_a_conditional_last_layer_is_left_out_of_load_validation():
    hf_model = tiny_model("mllama", config_overrides={"cross_attention_layers": [2], "num_hidden_layers": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    assert model.layer_structure.required_inputs == (None, None, "cross_attention_states")
