"""steer(): only the targeted rows and positions change, exactly as a hand-written HF hook."""

from __future__ import annotations

import pytest
import torch

from nnterp.errors import InvalidInputError, LayerIndexError, TokenPositionError
from nnterp.interventions import steer
from nnterp.testing import tiny_tokenizer

from .conftest import hf_layers


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
        before = model.layers_output[0].save()
    with torch.no_grad(), model.trace(prompts):
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


def hf_batch_logits(hf_model, prompts, layer, columns, delta):
    """Plain HF forward of the left-padded batch, adding ``delta`` to ``layer``'s output at
    ``(row, columns[row])``; position ids count from each row's first real token."""
    encoding = tiny_tokenizer()(prompts, padding=True, return_tensors="pt")
    position_ids = (encoding["attention_mask"].cumsum(-1) - 1).clamp(min=0)

    def add_at_columns(module, args, output):
        hidden = (output[0] if isinstance(output, tuple) else output).clone()
        hidden[torch.arange(len(prompts)), columns] += delta
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = hf_layers(hf_model)[layer].register_forward_hook(add_at_columns)
    try:
        with torch.no_grad():
            logits = hf_model(**encoding, position_ids=position_ids).logits
    finally:
        handle.remove()
    return logits, encoding["attention_mask"].bool()


@pytest.mark.parametrize("position", [0, 1, -1])
def test_a_position_is_counted_within_each_prompt(pair, hf_run, prompts, position):
    model, hf_model = pair
    vector = torch.randn(model.hidden_size)
    batched = steered_logits(model, prompts, layers=0, steering_vector=vector, factor=2.0, token_positions=position)
    lengths = [len(model.tokenizer(prompt)["input_ids"]) for prompt in prompts]
    width = max(lengths)

    def add_at_position(layer, hidden):
        if layer == 0:
            hidden[0, position] = hidden[0, position] + 2.0 * vector
        return hidden

    for row, prompt in enumerate(prompts):
        alone = steered_logits(model, prompt, layers=0, steering_vector=vector, factor=2.0, token_positions=position)
        expected = hf_run(hf_model, prompt, add_at_position).logits
        assert not torch.allclose(expected, hf_run(hf_model, prompt).logits), "the steering must show"
        torch.testing.assert_close(alone[0], expected, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(batched[row, width - lengths[row]:], expected, atol=1e-4, rtol=1e-5)

    # The same, by a hook on the HF layer adding the vector at each row's column, by hand.
    columns = torch.tensor([width - n + position if position >= 0 else width + position for n in lengths])
    by_hook, real = hf_batch_logits(hf_model, prompts, 0, columns, 2.0 * vector)
    torch.testing.assert_close(batched[real], by_hook[real], atol=1e-4, rtol=1e-5)


def test_positions_outside_a_prompt_raise_naming_it(model, prompts):
    vector = torch.ones(model.hidden_size)
    # "Hello" (prompt 1) is two tokens; the others are longer.
    assert len(model.tokenizer(prompts[1])["input_ids"]) == 2
    for position in (2, -3):
        with pytest.raises(TokenPositionError, match=rf"token_positions {position} is outside prompt 1, which has 2 tokens"):
            steered_logits(model, prompts, layers=0, steering_vector=vector, token_positions=[0, position])
    # Code catching the builtin or the older nnterp type still catches it.
    with pytest.raises(IndexError):
        steered_logits(model, prompts, layers=0, steering_vector=vector, token_positions=2)
    with pytest.raises(InvalidInputError):
        steered_logits(model, prompts, layers=0, steering_vector=vector, token_positions=2)
    # Only the steered prompts need the position: prompt 1 is left alone.
    batched = steered_logits(model, prompts, layers=0, steering_vector=vector, token_positions=2, batch_index=[0, 2])
    plain = steered_logits(model, prompts)
    assert torch.equal(batched[1], plain[1])
    for row in (0, 2):
        alone = steered_logits(model, prompts[row], layers=0, steering_vector=vector, token_positions=2)
        torch.testing.assert_close(batched[row, -alone.shape[1]:], alone[0], atol=1e-4, rtol=1e-5)


def test_positions_may_follow_other_reads_in_a_single_invoke_trace(tiny_llama, prompts):
    vector = torch.ones(tiny_llama.hidden_size)
    steered_first = steered_logits(tiny_llama, prompts, layers=1, steering_vector=vector, token_positions=[0, -1])
    with torch.no_grad(), tiny_llama.trace(prompts):
        early = tiny_llama.layers_output[0].save()
        steer(tiny_llama, layers=1, steering_vector=vector, token_positions=[0, -1])
        logits = tiny_llama.logits.save()
    assert early.shape[0] == len(prompts)
    assert torch.equal(logits, steered_first)
    assert not torch.equal(logits, steered_logits(tiny_llama, prompts))
    # Without positions steer reads no mask at all.
    with torch.no_grad(), tiny_llama.trace(prompts):
        before = tiny_llama.layers_output[-1].clone().save()
        steer(tiny_llama, layers=-1, steering_vector=vector)
        logits = tiny_llama.logits.save()
    with torch.no_grad():
        expected = tiny_llama.project_on_vocab(before + vector)
    torch.testing.assert_close(logits, expected)


def test_positions_after_a_read_in_a_trace_with_several_invokes_are_refused(tiny_llama, prompts):
    vector = torch.ones(tiny_llama.hidden_size)
    with pytest.raises(InvalidInputError, match="several invokes"), torch.no_grad():  # noqa: SIM117 - NNsight runs the body
        with tiny_llama.trace() as tracer:
            with tracer.invoke(prompts[0]):
                tiny_llama.layers_output[0].save()
                steer(tiny_llama, layers=1, steering_vector=vector, token_positions=-1)
            with tracer.invoke(prompts[1]):
                tiny_llama.layers_output[0].save()


def test_positions_in_a_later_generation_step_are_refused(tiny_llama, prompts):
    vector = torch.ones(tiny_llama.hidden_size)
    with pytest.raises(InvalidInputError, match="later generation step"), torch.no_grad():  # noqa: SIM117 - NNsight runs the body
        with tiny_llama.generate(prompts, max_new_tokens=2) as tracer:
            for _ in tracer.iter[1]:
                steer(tiny_llama, layers=0, steering_vector=vector, token_positions=0)
