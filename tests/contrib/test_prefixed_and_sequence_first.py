"""CPM-Ant (prompt positions prepended inside the model) and XLNet (a sequence-first stream):
the standard sites are (batch, seq, ...) over the input tokens, checked against plain HF
forward hooks, the HF model's own ``output_hidden_states``/``output_attentions`` (which drop
CPM-Ant's prompt positions and put XLNet's batch first themselves), writes seen by the next
module's hook, and gradients from plain autograd on the HF model.
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.interventions.gradients import compute_gradients
from nnterp.testing import tiny_model, tiny_tokenizer

from tests.research.reference import capture, first, hooks

PROMPTS = ["The capital of France is", "Hello world"]


def _load(model_type: str) -> tuple[torch.nn.Module, StandardizedTransformer]:
    hf = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf, tokenizer=tiny_tokenizer(), enable_attention_probs=True)
    return hf, model


def _padded(model: StandardizedTransformer) -> dict[str, torch.Tensor]:
    batch = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


@pytest.fixture(scope="module")
def cpmant() -> tuple[torch.nn.Module, StandardizedTransformer]:
    return _load("cpmant")


@pytest.fixture(scope="module")
def xlnet() -> tuple[torch.nn.Module, StandardizedTransformer]:
    return _load("xlnet")


def _read_sites(model: StandardizedTransformer, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    read: dict[str, torch.Tensor] = {}
    with torch.no_grad(), model.trace(inputs):
        read["embeddings"] = nnsight.save(model.token_embeddings)
        for layer in range(model.num_layers):
            read[f"attn_in{layer}"] = nnsight.save(model.attentions_input[layer])
            read[f"probs{layer}"] = nnsight.save(model.attention_probabilities[layer])
            read[f"mlp_in{layer}"] = nnsight.save(model.mlps_input[layer])
            read[f"out{layer}"] = nnsight.save(model.layers_output[layer])
        read["logits"] = nnsight.save(model.logits)
    return read


# -- CPM-Ant -------------------------------------------------------------------------------


def test_cpmant_sites_drop_the_prompt_positions(cpmant):
    hf, model = cpmant
    prompt = hf.config.prompt_length
    inputs = _padded(model)
    blocks = hf.cpmant.encoder.layers
    taps = {"embeddings": (hf.cpmant.input_embedding, "output")}
    for layer, block in enumerate(blocks):
        taps[f"attn_in{layer}"] = (block.self_att.self_attention, "input")
        taps[f"mlp_in{layer}"] = (block.ffn.ffn, "input")
        taps[f"out{layer}"] = (block, "output")
    seen, logits = capture(hf, inputs, taps)
    with torch.no_grad():
        plain = hf(**inputs, output_attentions=True)
    read = _read_sites(model, inputs)
    assert seen["out0"].shape[1] == inputs["input_ids"].shape[1] + prompt
    for name, hooked in seen.items():
        assert torch.equal(read[name], hooked[:, prompt:]), name
    for layer in range(model.num_layers):
        # HF's own attentions drop the prompt rows and columns too.
        assert torch.equal(read[f"probs{layer}"], plain.attentions[layer])
        sums = read[f"probs{layer}"][inputs["attention_mask"].bool()[:, None, :].expand(-1, model.num_heads, -1)].sum(-1)
        assert bool((sums <= 1 + 1e-5).all()) and bool((sums > 0).all())
    assert torch.equal(read["logits"], logits)


def test_cpmant_contributions_add_up_to_the_hooked_layer_update(cpmant):
    hf, model = cpmant
    prompt = hf.config.prompt_length
    inputs = _padded(model)
    block = hf.cpmant.encoder.layers[1]
    seen, _ = capture(hf, inputs, {"in": (block, "input"), "out": (block, "output")})
    with torch.no_grad(), model.trace(inputs):
        attention = nnsight.save(model.attentions_output[1])
        mlp = nnsight.save(model.mlps_output[1])
    torch.testing.assert_close(seen["in"][:, prompt:] + attention + mlp, seen["out"][:, prompt:])


def test_cpmant_writes_keep_the_prompt_positions(cpmant):
    hf, model = cpmant
    prompt = hf.config.prompt_length
    inputs = _padded(model)
    next_block = hf.cpmant.encoder.layers[1]
    clean, _ = capture(hf, inputs, {"in": (next_block, "input")})
    received: dict[str, torch.Tensor] = {}
    handle = next_block.register_forward_pre_hook(lambda m, args: received.__setitem__("in", args[0].detach().clone()))
    with hooks(handle), torch.no_grad(), model.trace(inputs):
        model.layers_output[0] = torch.ones_like(model.layers_output[0])
    assert torch.equal(received["in"][:, :prompt], clean["in"][:, :prompt])
    assert bool((received["in"][:, prompt:] == 1).all())


def test_cpmant_gradient_of_a_layer_output_matches_autograd(cpmant):
    hf, model = cpmant
    prompt = hf.config.prompt_length
    inputs = _padded(model)
    kept: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        first(output).retain_grad()
        kept["out"] = first(output)

    handle = hf.cpmant.encoder.layers[0].register_forward_hook(keep)
    with hooks(handle):
        hf(**inputs).logits[:, -1, 7].sum().backward()
    hf.zero_grad(set_to_none=True)
    result = compute_gradients(model, PROMPTS, lambda logits: logits[:, -1, 7].sum(), "layers_output.0")
    torch.testing.assert_close(result.gradients["layers_output.0"], kept["out"].grad[:, prompt:])


def test_cpmant_generation_steps_read_the_new_positions(cpmant):
    # The prompt positions are prepended to the forward that fills the cache only; later steps
    # run their new token alone.
    hf, model = cpmant
    prompt = hf.config.prompt_length
    encoding = model.tokenizer(["Hello world"], return_tensors="pt")
    seen: list[torch.Tensor] = []
    handle = hf.cpmant.encoder.layers[0].register_forward_hook(lambda m, a, out: seen.append(first(out).detach().clone()))
    with hooks(handle), torch.no_grad():
        expected_tokens = hf.generate(**encoding, max_new_tokens=3, do_sample=False)
    with model.generate("Hello world", max_new_tokens=3, do_sample=False) as tracer:
        steps = nnsight.save([])
        with tracer.all():
            steps.append(model.layers_output[0])
        tokens = nnsight.save(model.generator.output)
    assert torch.equal(tokens, expected_tokens)
    assert [tuple(step.shape[:2]) for step in steps] == [(1, encoding["input_ids"].shape[1]), (1, 1), (1, 1)]
    assert torch.equal(steps[0], seen[0][:, prompt:])
    for step, hooked in zip(steps[1:], seen[1:]):
        assert torch.equal(step, hooked)


# -- XLNet ---------------------------------------------------------------------------------


def test_xlnet_sites_are_batch_first(xlnet):
    hf, model = xlnet
    inputs = _padded(model)
    blocks = hf.transformer.layer
    taps = {"embeddings": (hf.transformer.word_embedding, "output")}
    for layer, block in enumerate(blocks):
        taps[f"attn_in{layer}"] = (block.rel_attn, "input")
        taps[f"mlp_in{layer}"] = (block.ff, "input")
        taps[f"out{layer}"] = (block, "output")
    seen, logits = capture(hf, inputs, taps)
    with torch.no_grad():
        plain = hf(**inputs, output_attentions=True, output_hidden_states=True)
    read = _read_sites(model, inputs)
    batch, seq = inputs["input_ids"].shape
    assert seen["out0"].shape[:2] == (seq, batch)
    for name, hooked in seen.items():
        assert torch.equal(read[name], hooked.transpose(0, 1)), name
    for layer in range(model.num_layers):
        assert torch.equal(read[f"out{layer}"], plain.hidden_states[layer + 1])
        assert torch.equal(read[f"probs{layer}"], plain.attentions[layer])
    assert torch.equal(read["logits"], logits)


def test_xlnet_write_reaches_the_next_block_sequence_first(xlnet):
    hf, model = xlnet
    inputs = _padded(model)
    received: dict[str, torch.Tensor] = {}
    handle = hf.transformer.layer[1].register_forward_pre_hook(
        lambda m, args: received.__setitem__("in", args[0].detach().clone())
    )
    row = torch.arange(model.hidden_size, dtype=torch.float32)
    with hooks(handle), torch.no_grad(), model.trace(inputs):
        steered = model.layers_output[0].clone()
        steered[1] = row  # every position of prompt 1
        model.layers_output[0] = steered
    assert torch.equal(received["in"][:, 1], row.expand(inputs["input_ids"].shape[1], -1))
    assert not torch.equal(received["in"][:, 0], row.expand(inputs["input_ids"].shape[1], -1))


def test_xlnet_attention_edit_changes_the_logits_like_a_hooked_edit(xlnet):
    hf, model = xlnet
    inputs = _padded(model)
    attention = hf.transformer.layer[0].rel_attn
    with torch.no_grad(), model.trace(inputs):
        model.attentions_input[0] = model.attentions_input[0] * 0.5
        edited = nnsight.save(model.logits)
    handle = attention.register_forward_pre_hook(lambda m, args: (args[0] * 0.5, *args[1:]))
    with hooks(handle), torch.no_grad():
        expected = hf(**inputs).logits
    torch.testing.assert_close(edited, expected)


def test_xlnet_gradient_of_a_layer_input_matches_autograd(xlnet):
    hf, model = xlnet
    inputs = _padded(model)
    kept: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        first(output).retain_grad()
        kept["out"] = first(output)

    handle = hf.transformer.layer[0].register_forward_hook(keep)
    with hooks(handle):
        hf(**inputs).logits[:, -1, 3].sum().backward()
    hf.zero_grad(set_to_none=True)
    result = compute_gradients(model, PROMPTS, lambda logits: logits[:, -1, 3].sum(), "layers_input.1")
    torch.testing.assert_close(result.gradients["layers_input.1"], kept["out"].grad.transpose(0, 1))


def test_xlnet_generation_is_refused_with_the_reason(xlnet):
    from nnterp.errors import UnavailableComponentError

    _, model = xlnet
    with pytest.raises(UnavailableComponentError, match="two-stream mode"):
        with model.generate("Hello world", max_new_tokens=2):
            pass
