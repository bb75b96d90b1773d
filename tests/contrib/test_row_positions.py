"""BART-family decoders count positions 0..seq-1 per row whatever the left padding; nnterp gives
each row its own positions, so a prompt in a padded batch gets what it gets alone. The reference
is the plain HF model run on each prompt alone, without nnterp."""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPTS = ["The cat sat on the mat and the dog", "Hello world", "The capital of France is"]


def _wrap(model_type):
    hf_model = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StandardizedTransformer(hf_model, tiny_tokenizer()), hf_model


@pytest.mark.parametrize("model_type", ["bart", "pegasus", "marian", "blenderbot", "trocr"])
def test_each_row_of_a_padded_batch_equals_the_prompt_alone(model_type):
    model, hf_model = _wrap(model_type)
    tokenizer = model.tokenizer
    with torch.no_grad(), model.trace(PROMPTS):
        batch_layer = nnsight.save(model.layers_output[0])
        batch_logits = nnsight.save(model.logits)
    for row, prompt in enumerate(PROMPTS):
        alone = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            expected = hf_model(**alone, output_hidden_states=True)
        length = alone["input_ids"].shape[1]
        torch.testing.assert_close(batch_logits[row, -length:], expected.logits[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(batch_layer[row, -length:], expected.hidden_states[1][0], rtol=1e-4, atol=1e-5)


def test_the_plain_model_is_untouched_outside_nnterp_traces():
    model, hf_model = _wrap("bart")
    batch = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        hooked = hf_model(**batch).logits
    for handle in hf_model.__dict__["_nnterp_position_hooks"].values():
        handle.remove()
    with torch.no_grad():
        plain = hf_model(**batch).logits
    assert torch.equal(hooked, plain)
