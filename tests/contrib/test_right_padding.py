"""Recurrent models whose state ignores the attention mask (RWKV, xLSTM) are padded on the right,
and every position-based function still counts 0 as each prompt's first real token.

Expected values come from the plain HF model run on each prompt alone, with torch hooks on its
native blocks; nothing goes through nnterp.
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.cache import cache_activations
from nnterp.errors import InvalidInputError
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPTS = ["The capital of France is", "Hello world", "The cat sat"]
#: Each family's block list (test data; the library reads it from the spec).
BLOCKS = {"rwkv": "rwkv.blocks", "xlstm": "backbone.blocks"}


@pytest.fixture(scope="module", params=sorted(BLOCKS))
def pair(request):
    hf_model = tiny_model(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return request.param, model, hf_model


def alone(kind, hf_model, prompt, layer=1):
    """(logits, block ``layer``'s output) of the plain model on one prompt."""
    seen = {}
    block = hf_model.get_submodule(BLOCKS[kind])[layer]
    handle = block.register_forward_hook(
        lambda module, args, output: seen.__setitem__("h", (output[0] if isinstance(output, tuple) else output).detach())
    )
    try:
        with torch.no_grad():
            ids = tiny_tokenizer()(prompt, return_tensors="pt")["input_ids"]
            logits = hf_model(input_ids=ids).logits
    finally:
        handle.remove()
    return logits[0], seen["h"][0]


def test_the_batch_is_padded_on_the_right_and_the_callers_tokenizer_is_untouched(pair):
    kind, model, hf_model = pair
    caller = tiny_tokenizer(padding_side="right")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StandardizedTransformer(hf_model, caller)
    assert caller.padding_side == "right"
    left = tiny_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = StandardizedTransformer(hf_model, left)
    assert left.padding_side == "left" and again.tokenizer.padding_side == "right"
    mask = model.tokenizer(PROMPTS, padding=True, return_tensors="pt")["attention_mask"]
    assert bool(mask[:, 0].all()) and not bool(mask[:, -1].all())


def test_each_prompt_of_a_batch_gets_what_it_gets_alone(pair):
    kind, model, hf_model = pair
    with torch.no_grad(), model.trace(PROMPTS):
        hidden = nnsight.save(model.layers_output[1])
        logits = nnsight.save(model.logits)
        probs = nnsight.save(model.next_token_probs)
    for row, prompt in enumerate(PROMPTS):
        expected_logits, expected_hidden = alone(kind, hf_model, prompt)
        length = expected_logits.shape[0]
        torch.testing.assert_close(logits[row, :length], expected_logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(hidden[row, :length], expected_hidden, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(probs[row], expected_logits[-1].softmax(-1), atol=1e-6, rtol=1e-4)


def test_positions_count_from_each_prompts_first_real_token(pair):
    kind, model, hf_model = pair
    cache = cache_activations(model, PROMPTS, ["layers_output.1", "logits"], positions=[0, -1])
    for row, prompt in enumerate(PROMPTS):
        expected_logits, expected_hidden = alone(kind, hf_model, prompt)
        torch.testing.assert_close(cache["logits"][row], expected_logits[[0, -1]], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cache["layers_output.1"][row], expected_hidden[[0, -1]], atol=1e-5, rtol=1e-4)


def test_steering_the_last_token_of_each_prompt_equals_a_hooked_run(pair):
    kind, model, hf_model = pair
    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), model.trace(PROMPTS):
        model.steer(layers=0, steering_vector=vector, factor=2.0, token_positions=-1)
        logits = nnsight.save(model.logits)
    block = hf_model.get_submodule(BLOCKS[kind])[0]

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        hidden[:, -1] += 2.0 * vector
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    for row, prompt in enumerate(PROMPTS):
        handle = block.register_forward_hook(add)
        try:
            with torch.no_grad():
                ids = tiny_tokenizer()(prompt, return_tensors="pt")["input_ids"]
                expected = hf_model(input_ids=ids).logits[0]
        finally:
            handle.remove()
        torch.testing.assert_close(logits[row, : expected.shape[0]], expected, atol=1e-5, rtol=1e-4)


def test_generating_a_padded_batch_is_refused_and_equal_lengths_work(pair):
    kind, model, hf_model = pair
    with pytest.raises(InvalidInputError, match="pads batches on the right"):
        model.generate(["The capital of France is", "Hello"], max_new_tokens=2)
    prompts = ["The cat sat on", "The dog sat on"]
    out = model.generate(prompts, max_new_tokens=2, do_sample=False)
    ids = tiny_tokenizer()(prompts, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = hf_model.generate(input_ids=ids, max_new_tokens=2, do_sample=False)
    assert torch.equal(out.cpu(), expected)
