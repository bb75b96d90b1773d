"""steer(): only the targeted rows and positions change, exactly as a hand-written HF hook."""

from __future__ import annotations

import pytest
import torch

from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.interventions import steer


def steered_logits(model, prompts, **kwargs):
    with torch.no_grad(), model.trace(prompts):
        if kwargs:
            steer(model, **kwargs)
        logits = model.logits.save()
    return logits


def test_only_the_targeted_row_and_position_change(model, prompts):
    vector = torch.randn(model.hidden_size)
    plain = steered_logits(model, prompts)
    steered = steered_logits(
        model, prompts, layers=0, steering_vector=vector, factor=2.0, token_positions=-1, batch_index=[1]
    )
    # Padding positions are left out: a fully masked query attends to every key, steered ones included.
    untouched = model.tokenizer(prompts, padding=True, return_tensors="pt")["attention_mask"].bool()
    untouched[1, -1] = False
    assert torch.equal(steered[untouched], plain[untouched])
    assert (steered[1, -1] - plain[1, -1]).abs().max() > 1e-3


def test_layer_output_moves_by_factor_times_vector(model, prompts):
    vector = torch.randn(model.hidden_size)
    with torch.no_grad(), model.trace(prompts):
        before = model.layers_output[0].clone().save()
        steer(model, layers=[0], steering_vector=vector, factor=0.5, token_positions=[-1, -2])
        after = model.layers_input[1].save()
    expected = before.clone()
    expected[:, -2:] += 0.5 * vector
    assert torch.equal(after, expected)


def test_equals_a_forward_hook_on_the_hf_model(pair, hf_run, prompts):
    model, hf_model = pair
    vector = torch.randn(model.hidden_size)
    steered = steered_logits(model, prompts, layers=[0, 1], steering_vector=vector, factor=1.5, token_positions=-1)

    def add_vector(layer, hidden):
        hidden[0, -1] = hidden[0, -1] + 1.5 * vector
        return hidden

    for row, prompt in enumerate(prompts):
        expected = hf_run(hf_model, prompt, add_vector).logits[-1]
        torch.testing.assert_close(steered[row, -1], expected, atol=1e-4, rtol=1e-5)


def test_same_as_the_model_method(model, prompts):
    vector = torch.randn(model.hidden_size)
    by_function = steered_logits(model, prompts, layers=[1], steering_vector=vector, factor=3, batch_index=0)
    with torch.no_grad(), model.trace(prompts):
        model.steer(layers=[1], steering_vector=vector, factor=3, batch_index=0)
        by_method = model.logits.save()
    assert torch.equal(by_function, by_method)


def test_bad_arguments_raise_typed_errors(model, prompts):
    with pytest.raises(InvalidInputError, match="hidden size"):
        steered_logits(model, prompts, layers=0, steering_vector=torch.ones(3))
    with pytest.raises(LayerIndexError):
        steered_logits(model, prompts, layers=9, steering_vector=torch.ones(model.hidden_size))
