"""StandardizedTransformer on core's architectures: identical computation, accessors, edits."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import CORE_MODEL_TYPES, make_model

PROMPTS = ["The capital of France is", "Hello", "The cat sat on the mat and the dog"]


def hooked_forward(hf_model, model, prompts):
    """Plain HF forward of a left-padded batch, recording layer/attention/MLP outputs by hooks."""
    encoding = model.tokenizer(prompts, return_tensors="pt", padding=True)
    mask = encoding["attention_mask"]
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    layers = hf_model.get_submodule(model.paths["layers"])
    seen = {}
    handles = []
    for index, layer in enumerate(layers):
        attention_added, mlp_added = ADDED_BY.get(type(hf_model).__name__, (model.paths["self_attn"], model.paths["mlp"]))
        for name, module in (
            ("layer", layer),
            ("attn", layer.get_submodule(model.paths["self_attn"])),
            ("mlp", layer.get_submodule(model.paths["mlp"])),
            ("attn_added", layer.get_submodule(attention_added)),
            ("mlp_added", layer.get_submodule(mlp_added)),
        ):
            def hook(_module, args, kwargs, output, key=(name, index)):
                seen[key] = (args[0] if args else next(iter(kwargs.values())), output)

            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    with torch.no_grad():
        logits = hf_model(
            input_ids=encoding["input_ids"], attention_mask=mask, position_ids=position_ids
        ).logits
    for handle in handles:
        handle.remove()
    return seen, logits, mask


#: Where a block's sublayer contributions are added when it is not the module output, read in
#: transformers' forward (test data): Gemma-2/3 normalise each sublayer's output again first.
ADDED_BY = {
    "Gemma2ForCausalLM": ("post_attention_layernorm", "post_feedforward_layernorm"),
    "Gemma3ForCausalLM": ("post_attention_layernorm", "post_feedforward_layernorm"),
}


def first(value):
    return value[0] if isinstance(value, tuple) else value


@pytest.mark.parametrize("model_type", CORE_MODEL_TYPES)
def test_accessors_equal_plain_hooks_and_logits_bit_for_bit(model_type):
    model, hf_model = make_model(model_type)
    seen, expected_logits, _ = hooked_forward(hf_model, model, PROMPTS)
    got = {}
    with torch.no_grad(), model.trace(PROMPTS):
        for i in range(model.num_layers):
            got[("layer_in", i)] = model.layers_input[i].save()
            got[("attn_in", i)] = model.attentions_input[i].save()
            got[("attn", i)] = model.attentions_output[i].save()
            got[("mlp_in", i)] = model.mlps_input[i].save()
            got[("mlp", i)] = model.mlps_output[i].save()
            got[("layer", i)] = model.layers_output[i].save()
        logits = model.logits.save()
    for i in range(model.num_layers):
        assert torch.equal(got[("layer", i)], first(seen[("layer", i)][1]))
        assert torch.equal(got[("layer_in", i)], seen[("layer", i)][0])
        assert torch.equal(got[("attn", i)], first(seen[("attn_added", i)][1]))
        assert torch.equal(got[("attn_in", i)], seen[("attn", i)][0])
        assert torch.equal(got[("mlp", i)], first(seen[("mlp_added", i)][1]))
        assert torch.equal(got[("mlp_in", i)], seen[("mlp", i)][0])
    assert logits.dtype == expected_logits.dtype
    assert torch.equal(logits, expected_logits)


@pytest.mark.parametrize("model_type", CORE_MODEL_TYPES)
def test_batch_equals_one_by_one(model_type):
    model, _ = make_model(model_type)
    with torch.no_grad(), model.trace(PROMPTS):
        batch_layer = model.layers_output[0].save()
        batch_logits = model.logits.save()
        batch_probs = model.next_token_probs.save()
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad(), model.trace(prompt):
            layer = model.layers_output[0].save()
            logits = model.logits.save()
            probs = model.next_token_probs.save()
        length = logits.shape[1]
        torch.testing.assert_close(batch_logits[row, -length:], logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batch_layer[row, -length:], layer[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(batch_probs[row], probs[0], atol=1e-6, rtol=1e-4)


def test_standard_tree_points_at_the_hf_modules(gpt2, llama):
    assert gpt2.layers[1].self_attn._module is gpt2._module.transformer.h[1].attn
    assert gpt2.ln_final._module is gpt2._module.transformer.ln_f
    assert gpt2.embed_tokens._module is gpt2._module.transformer.wte
    assert llama.layers[0].mlp._module is llama._module.model.layers[0].mlp
    assert llama.lm_head._module is llama._module.lm_head
    assert [a._module for a in llama.attentions] == [layer.self_attn for layer in llama._module.model.layers]
    assert (llama.num_layers, llama.num_heads, llama.hidden_size, llama.vocab_size) == (2, 4, 64, 512)


def test_layer_output_assignment_changes_downstream_only(llama):
    with torch.no_grad(), llama.trace(PROMPTS[0]):
        clean = llama.logits.save()
    with torch.no_grad(), llama.trace(PROMPTS[0]):
        h = llama.layers_output[0]
        llama.layers_output[0] = h * 0
        zeroed_in = llama.layers_input[1].save()
        ablated = llama.logits.save()
    assert torch.count_nonzero(zeroed_in) == 0
    assert not torch.allclose(clean, ablated)


@pytest.mark.parametrize("fixture", ["llama", "gpt2"])
def test_attention_probabilities_sum_to_one_and_edits_propagate(fixture, request):
    model = request.getfixturevalue(fixture)
    with torch.no_grad(), model.trace(PROMPTS[0]):
        probs = model.attention_probabilities[1].save()
        clean = model.logits.save()
    assert probs.shape[:2] == (1, model.num_heads) and probs.shape[2] == probs.shape[3]
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert torch.equal(probs.triu(1), torch.zeros_like(probs))  # causal
    with torch.no_grad(), model.trace(PROMPTS[0]):
        p = model.attention_probabilities[1]
        p[:, :, 1:, 0] = 0
        p /= p.sum(dim=-1, keepdim=True)
        edited_probs = model.attention_probabilities[1].save()
        edited = model.logits.save()
    assert torch.equal(edited_probs[:, :, 1:, 0], torch.zeros_like(edited_probs[:, :, 1:, 0]))
    assert not torch.allclose(clean[:, 1:], edited[:, 1:])
    torch.testing.assert_close(clean[:, 0], edited[:, 0])  # the first query only sees token 0


def test_steer_changes_only_targeted_rows_and_positions(llama):
    vector = torch.randn(llama.hidden_size)
    prompts = [PROMPTS[0], PROMPTS[2]]
    with torch.no_grad(), llama.trace(prompts):
        clean = llama.layers_output[1].save()
    with torch.no_grad(), llama.trace(prompts):
        llama.steer(layers=1, steering_vector=vector, factor=2.0, token_positions=[-1], batch_index=1)
        steered = llama.layers_output[1].save()
    assert torch.equal(steered[0], clean[0])
    assert torch.equal(steered[1, :-1], clean[1, :-1])
    torch.testing.assert_close(steered[1, -1], clean[1, -1] + 2.0 * vector)


def test_steer_matches_a_hand_written_hook(gpt2):
    vector = torch.randn(gpt2.hidden_size)
    hf = gpt2._module
    ids = gpt2.tokenizer(PROMPTS[0], return_tensors="pt")
    handle = hf.transformer.h[0].register_forward_hook(lambda _m, _i, out: out + 0.5 * vector)
    with torch.no_grad():
        expected = hf(**ids).logits
    handle.remove()
    with torch.no_grad(), gpt2.trace(PROMPTS[0]):
        gpt2.steer(layers=[0], steering_vector=vector, factor=0.5)
        logits = gpt2.logits.save()
    torch.testing.assert_close(logits, expected)


def test_skip_layers_passes_the_residual_through(llama):
    with torch.no_grad(), llama.trace(PROMPTS[0]):
        entering = llama.layers_input[0].save()
        llama.skip_layers(0, 1)
        leaving = llama.layers_output[1].save()
        logits = llama.logits.save()
    assert torch.equal(entering, leaving)
    expected = llama.lm_head._module(llama.ln_final._module(entering))
    torch.testing.assert_close(logits, expected)


def test_skip_layer_with_replacement(gpt2):
    length = len(gpt2.tokenizer(PROMPTS[0])["input_ids"])
    replacement = torch.zeros(1, length, gpt2.hidden_size)
    with torch.no_grad(), gpt2.trace(PROMPTS[0]):
        gpt2.skip_layer(1, skip_with=replacement)
        out = gpt2.layers_output[1].save()
    assert torch.equal(out, replacement)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2"])
def test_project_on_vocab_of_last_layer_equals_logits(model_type):
    model, _ = make_model(model_type)
    with torch.no_grad(), model.trace(PROMPTS):
        projected = model.project_on_vocab(model.layers_output[-1]).save()
        logits = model.logits.save()
    torch.testing.assert_close(projected, logits, atol=1e-5, rtol=1e-5)


def test_topk_tokens_are_the_projection_argmax(llama):
    with torch.no_grad(), llama.trace(PROMPTS[0]):
        hidden = llama.layers_output[-1][:, -1]
        probs, ids = llama.topk_tokens(hidden, k=3)
        probs, ids = probs.save(), ids.save()
        last = hidden.save()
        next_probs = llama.next_token_probs.save()
    expected = next_probs.topk(3, dim=-1)
    torch.testing.assert_close(probs, expected.values)
    assert torch.equal(ids, expected.indices)
    # nnterp 1.x's form: {token: probability} for one state, a list of them for a batch.
    names = llama.tokenizer.convert_ids_to_tokens(expected.indices[0].tolist())
    one = llama.get_topk_closest_tokens(last[0], k=3)
    assert list(one) == names
    torch.testing.assert_close(torch.tensor(list(one.values())), expected.values[0])
    assert llama.get_topk_closest_tokens(last, k=3) == [one]


def test_input_ids_and_attention_mask_are_the_left_padded_batch(llama):
    with torch.no_grad(), llama.trace(["Hello", PROMPTS[0]]):
        ids = llama.input_ids.save()
        mask = llama.attention_mask.save()
    expected = llama.tokenizer(["Hello", PROMPTS[0]], return_tensors="pt", padding=True)
    assert torch.equal(ids, expected["input_ids"])
    assert torch.equal(mask, expected["attention_mask"])
    assert mask[0, 0] == 0 and mask[0, -1] == 1


def test_token_embeddings_are_the_embedding_output(gpt2):
    with torch.no_grad(), gpt2.trace(PROMPTS[0]):
        ids = gpt2.input_ids.save()
        embeddings = gpt2.token_embeddings.save()
    assert torch.equal(embeddings, gpt2._module.transformer.wte(ids))


def test_user_tokenizer_is_not_modified(tokenizer):
    from nnterp import StandardizedTransformer
    from nnterp.testing import tiny_model, tiny_tokenizer

    right = tiny_tokenizer(padding_side="right")
    model = StandardizedTransformer(tiny_model("llama"), right)
    assert right.padding_side == "right"
    assert model.tokenizer.padding_side == "left"
