"""logit_lens against hand computations on the plain HF model."""

from __future__ import annotations

import pytest
import torch

from nnterp.errors import InvalidInputError, LayerIndexError, TokenPositionError
from nnterp.interventions import logit_lens


def test_last_layer_is_the_models_own_distribution(pair, hf_run, prompts):
    model, hf_model = pair
    probs = logit_lens(model, prompts)
    assert probs.shape == (len(prompts), model.num_layers, model.vocab_size)
    for row, prompt in enumerate(prompts):
        expected = hf_run(hf_model, prompt).logits[-1].softmax(-1)
        torch.testing.assert_close(probs[row, -1], expected, atol=1e-5, rtol=0)


def test_every_layer_matches_a_hand_unembedding(pair, hf_run, unembed, prompts):
    model, hf_model = pair
    logits = logit_lens(model, prompts, return_logits=True)
    probs = logit_lens(model, prompts)
    for row, prompt in enumerate(prompts):
        run = hf_run(hf_model, prompt)
        with torch.no_grad():
            expected = torch.stack([unembed(hf_model, h[-1]) for h in run.layer_outputs])
        torch.testing.assert_close(logits[row], expected, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(probs[row], expected.softmax(-1), atol=1e-5, rtol=0)


def test_layer_subset_keeps_the_requested_order(model, prompts):
    # All layers are unembedded in one matmul, so a different layer count may round differently.
    full = logit_lens(model, prompts)
    subset = logit_lens(model, prompts, layers=[1, 0])
    assert subset.shape == (len(prompts), 2, model.vocab_size)
    assert not torch.allclose(full[:, 0], full[:, 1], atol=1e-4)
    torch.testing.assert_close(subset[:, 0], full[:, 1], atol=1e-7, rtol=0)
    torch.testing.assert_close(subset[:, 1], full[:, 0], atol=1e-7, rtol=0)
    torch.testing.assert_close(logit_lens(model, prompts, layers=-1)[:, 0], full[:, -1], atol=1e-7, rtol=0)


def test_positions_count_within_each_prompt(pair, hf_run, unembed, prompts):
    model, hf_model = pair
    logits = logit_lens(model, prompts, idx=[0, -1, -2], return_logits=True)
    assert logits.shape == (len(prompts), model.num_layers, 3, model.vocab_size)
    for row, prompt in enumerate(prompts):
        run = hf_run(hf_model, prompt)
        with torch.no_grad():
            for layer, hidden in enumerate(run.layer_outputs):
                expected = unembed(hf_model, hidden[[0, -1, -2]])
                torch.testing.assert_close(logits[row, layer], expected, atol=1e-4, rtol=1e-5)


def test_batch_equals_each_prompt_alone(model, prompts):
    batch = logit_lens(model, prompts, idx=[0, -1])
    for row, prompt in enumerate(prompts):
        alone = logit_lens(model, prompt, idx=[0, -1])
        torch.testing.assert_close(batch[row], alone[0], atol=1e-5, rtol=0)


def test_bad_arguments_raise_typed_errors(model, prompts):
    with pytest.raises(LayerIndexError, match="layers 7"):
        logit_lens(model, prompts, layers=[7])
    # "Hello" is two tokens: position 2 does not exist in it.
    with pytest.raises(TokenPositionError, match="idx 2 is outside prompt 1, which has 2 tokens"):
        logit_lens(model, prompts, idx=2)
    with pytest.raises(InvalidInputError, match="idx is empty"):
        logit_lens(model, prompts, idx=[])
