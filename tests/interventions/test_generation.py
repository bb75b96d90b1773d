"""Generation with interventions (`steer_generate`, `generate_with`) against HF's own greedy
``generate`` with plain forward hooks doing the same edit, token for token."""

from __future__ import annotations

import nnterp
import pytest
import torch
from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.interventions.generation import generate_with, steer_generate
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPTS = ["The capital of France is", "Hi there"]
STEPS = 6


@pytest.fixture(scope="module")
def pair():
    hf_model = tiny_model("llama")
    return hf_model, nnterp.StandardizedTransformer(hf_model, tiny_tokenizer())


def _hooked_generate(hf_model, tokenizer, prompts, hooks, steps=STEPS, **kwargs):
    """HF greedy generate with ``hooks``: [(module, fn(call_index, output) -> output)]."""
    handles = []
    for module, edit in hooks:
        calls = [0]

        def hook(_module, _args, output, edit=edit, calls=calls):
            hidden = output[0] if isinstance(output, tuple) else output
            edited = edit(calls[0], hidden)
            calls[0] += 1
            return (edited, *output[1:]) if isinstance(output, tuple) else edited

        handles.append(module.register_forward_hook(hook))
    try:
        encoded = tokenizer(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            return hf_model.generate(**encoded, max_new_tokens=steps, do_sample=False, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def test_steering_every_token_equals_a_hook_on_every_step(pair):
    hf_model, model = pair
    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(1)) * 4
    out = steer_generate(model, PROMPTS, layers=[0, 1], steering_vector=vector, factor=1.5, max_new_tokens=STEPS)
    add = lambda _call, hidden: hidden + 1.5 * vector  # noqa: E731
    expected = _hooked_generate(hf_model, model.tokenizer, PROMPTS, [(hf_model.model.layers[0], add), (hf_model.model.layers[1], add)])
    assert torch.equal(out.token_ids, expected)
    plain = _hooked_generate(hf_model, model.tokenizer, PROMPTS, [])
    assert not torch.equal(expected, plain)  # the steering changes what is generated
    assert out.new_token_ids == expected[:, out.prompt_length :].tolist()
    assert out.text == [model.tokenizer.decode(row, skip_special_tokens=True) for row in out.new_token_ids]


def test_steering_the_last_prompt_token_only(pair):
    hf_model, model = pair
    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(2)) * 8
    out = steer_generate(
        model, PROMPTS, layers=1, steering_vector=vector, token_positions=-1, steer_new_tokens=False, max_new_tokens=STEPS
    )

    def last_prompt_token(call, hidden):
        if call > 0:
            return hidden
        hidden = hidden.clone()
        hidden[:, -1] += vector  # left padding: every prompt's last token is the last column
        return hidden

    expected = _hooked_generate(hf_model, model.tokenizer, PROMPTS, [(hf_model.model.layers[1], last_prompt_token)])
    assert torch.equal(out.token_ids, expected)


def test_patchscope_style_write_into_the_prompt(pair):
    hf_model, model = pair
    source = torch.randn(len(PROMPTS), model.hidden_size, generator=torch.Generator().manual_seed(3)) * 5
    out = generate_with(model, PROMPTS, {"layers_output.0": source}, token_positions=-1, max_new_tokens=STEPS)

    def replace(call, hidden):
        if call > 0:
            return hidden
        hidden = hidden.clone()
        hidden[:, -1] = source
        return hidden

    expected = _hooked_generate(hf_model, model.tokenizer, PROMPTS, [(hf_model.model.layers[0], replace)])
    assert torch.equal(out.token_ids, expected)


def test_a_function_edits_every_step(pair):
    hf_model, model = pair
    steps_seen = []

    def halve(activation, step):
        steps_seen.append(step)
        return activation * 0.25

    out = generate_with(model, PROMPTS, {("mlps_output", 1): halve}, max_new_tokens=STEPS)
    expected = _hooked_generate(hf_model, model.tokenizer, PROMPTS, [(hf_model.model.layers[1].mlp, lambda _c, h: h * 0.25)])
    assert torch.equal(out.token_ids, expected)
    assert steps_seen == list(range(STEPS))


def test_a_generation_that_ends_early_returns_its_tokens(pair):
    hf_model, model = pair
    plain = _hooked_generate(hf_model, model.tokenizer, PROMPTS[:1], [])
    prompt_length = model.tokenizer(PROMPTS[:1], return_tensors="pt")["input_ids"].shape[1]
    end = int(plain[0, prompt_length + 1])  # the second generated token ends this generation
    vector = torch.zeros(model.hidden_size)
    out = steer_generate(model, PROMPTS[0], layers=0, steering_vector=vector, max_new_tokens=STEPS, eos_token_id=end)
    expected = _hooked_generate(hf_model, model.tokenizer, PROMPTS[:1], [], eos_token_id=end)
    assert torch.equal(out.token_ids, expected)
    assert out.new_token_ids == [plain[0, prompt_length : prompt_length + 2].tolist()]


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda m: steer_generate(m, "Hi", 0, torch.zeros(m.hidden_size), max_new_tokens=0), InvalidInputError, "max_new_tokens"),
        (lambda m: steer_generate(m, "Hi", 0, torch.full((m.hidden_size,), float("nan"))), InvalidInputError, "steering_vector"),
        (lambda m: steer_generate(m, "Hi", 9, torch.zeros(m.hidden_size)), LayerIndexError, "layers"),
        (lambda m: steer_generate(m, "Hi", 0, torch.zeros(3)), InvalidInputError, "steering_vector"),
        (lambda m: generate_with(m, "Hi", {}), InvalidInputError, "patches"),
        (lambda m: generate_with(m, "Hi", {"layers_outptu.0": torch.zeros(4)}), InvalidInputError, "layers_outptu"),
        (lambda m: generate_with(m, "Hi", {"layers_output.0": "x"}), InvalidInputError, "tensor or a function"),
        (lambda m: generate_with(m, "Hi", {"layers_output.0": torch.tensor([float("inf")])}), InvalidInputError, "patches"),
        (lambda m: generate_with(m, [], {"layers_output.0": torch.zeros(4)}), InvalidInputError, "prompts"),
    ],
)
def test_bad_inputs_are_named(pair, call, error, words):
    _hf_model, model = pair
    with pytest.raises(error, match=words):
        call(model)
