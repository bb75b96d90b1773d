"""Zamba / Zamba2: attention probabilities and scores of the shared attention block.

Zamba's hybrid layers run a shared transformer block (softmax attention and its own MLP)
before their Mamba mixer and add its projected output to the mixer's *input*; the spec names
it as a ``side_attention``. Expected values come from the plain HF model: forward hooks on the
native attention modules, ``output_attentions=True``, and an attention function of this file
registered with transformers for the edit.
"""

from __future__ import annotations

import copy
import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer
from tests.research.reference import encode, hooks

PROMPTS = ["The capital of France is", "Hello"]
#: A Mamba layer, then two hybrid layers (each with its own shared-block call).
LAYERS = {"num_hidden_layers": 3, "layers_block_type": ["mamba", "hybrid", "hybrid"], "hybrid_layer_ids": [1, 2]}
#: Native path of the shared block's attention in a hybrid layer, per model type.
SHARED_ATTENTION = {"zamba": "shared_transf.self_attn", "zamba2": "shared_transformer.self_attn"}
#: Zamba2 with rotary positions in its shared attention, so left padding needs position ids.
OVERRIDES = {"zamba": LAYERS, "zamba2": {**LAYERS, "use_mem_rope": True}}
HYBRID = [1, 2]


@pytest.fixture(scope="module", params=["zamba", "zamba2"])
def zamba(request):
    hf_model = tiny_model(request.param, config_overrides=OVERRIDES[request.param])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Load-time validation is tested on its own below; these tests check the accessors.
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True, check_renaming=False)
    return model, hf_model, request.param


@pytest.mark.parametrize("model_type", ["zamba", "zamba2"])
def test_loads_with_probabilities_and_validation(model_type):
    hf_model = tiny_model(model_type, config_overrides=OVERRIDES[model_type])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)
    inputs = encode(model.tokenizer, PROMPTS[:1])
    expected, _ = hooked_probabilities(hf_model, model_type, inputs)
    torch.testing.assert_close(read_probabilities(model, PROMPTS[:1])[2], expected[2], atol=0, rtol=0)


def native_attention(hf_model, model_type, layer):
    """The HF attention module of layer ``layer``'s shared block."""
    return hf_model.model.layers[layer].get_submodule(SHARED_ATTENTION[model_type])


def hooked_probabilities(hf_model, model_type, inputs):
    """Per hybrid layer, the weights its shared attention returns in a plain forward, and the
    ``output_attentions`` tuple of the same forward."""
    seen = {}
    handles = [
        native_attention(hf_model, model_type, layer).register_forward_hook(
            lambda _m, _a, out, i=layer: seen.__setitem__(i, out[1])
        )
        for layer in HYBRID
    ]
    with hooks(*handles), torch.no_grad():
        attentions = hf_model(**inputs, output_attentions=True).attentions
    return seen, attentions


def read_probabilities(model, prompts):
    probabilities = {}
    with torch.no_grad(), model.trace(prompts):
        for layer in HYBRID:
            probabilities[layer] = nnsight.save(model.attention_probabilities[layer])
    return probabilities


def test_single_prompt_probabilities_equal_the_hf_attention_weights(zamba):
    model, hf_model, model_type = zamba
    inputs = encode(model.tokenizer, PROMPTS[:1])
    expected, attentions = hooked_probabilities(hf_model, model_type, inputs)
    read = read_probabilities(model, PROMPTS[:1])
    seq = inputs["input_ids"].shape[1]
    for position, layer in enumerate(HYBRID):
        assert read[layer].shape == (1, hf_model.config.num_attention_heads, seq, seq)
        torch.testing.assert_close(read[layer], expected[layer], atol=0, rtol=0)
        torch.testing.assert_close(read[layer], attentions[position], atol=0, rtol=0)
    # The two hybrid layers' shared blocks see different streams: each read is its own call.
    assert not torch.equal(read[1], read[2])


def test_left_padded_batch_probabilities_equal_hf_and_the_single_prompt(zamba):
    model, hf_model, model_type = zamba
    inputs = encode(model.tokenizer, PROMPTS)
    assert not bool(inputs["attention_mask"].all()), "the prompts must differ in length"
    expected, _ = hooked_probabilities(hf_model, model_type, inputs)
    read = read_probabilities(model, PROMPTS)
    single, _ = hooked_probabilities(hf_model, model_type, encode(model.tokenizer, PROMPTS[1:]))
    real = int(inputs["attention_mask"][1].sum())
    for layer in HYBRID:
        torch.testing.assert_close(read[layer], expected[layer], atol=0, rtol=0)
        # The padded row, over its real positions, is the prompt's own attention pattern.
        torch.testing.assert_close(read[layer][1, :, -real:, -real:], single[layer][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(read[layer][1, :, -real:, :-real].sum(), torch.tensor(0.0), atol=1e-6, rtol=0)


def test_scores_softmax_to_the_hf_attention_weights(zamba):
    model, hf_model, model_type = zamba
    inputs = encode(model.tokenizer, PROMPTS)
    expected, _ = hooked_probabilities(hf_model, model_type, inputs)
    scores = {}
    with torch.no_grad(), model.trace(PROMPTS):
        for layer in HYBRID:
            scores[layer] = nnsight.save(model.attention_scores[layer])
    for layer in HYBRID:
        assert scores[layer].shape == expected[layer].shape
        torch.testing.assert_close(scores[layer].float().softmax(-1), expected[layer], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("site", ["attention_probabilities", "attention_scores"])
def test_mamba_layers_raise_naming_the_layers_with_attention(zamba, site):
    model, _, _ = zamba
    assert model.layer_kinds == ("mamba", "mamba", "mamba")
    with pytest.raises(UnavailableComponentError, match=r"\[1, 2\]"), model.trace(PROMPTS[0]):
        getattr(model, site)[0]
    report = model.support()[site]
    assert report[1] is None and report[2] is None and "[1, 2]" in report[0]


def test_the_shared_block_is_no_additive_contribution(zamba):
    """Plain hooks: a hybrid layer's output is its input plus its Mamba mixer's output, with
    the shared block already inside the mixer's input; nnterp offers no attentions_output."""
    model, hf_model, _ = zamba
    inputs = encode(model.tokenizer, PROMPTS)
    block = hf_model.model.layers[1]
    seen = {}
    handles = [
        block.register_forward_hook(lambda _m, args, out: seen.update(layer_in=args[0], layer_out=out)),
        block.mamba_decoder.mamba.register_forward_hook(lambda _m, _a, out: seen.update(mamba=out)),
        block.linear.register_forward_hook(lambda _m, _a, out: seen.update(shared=out)),
    ]
    with hooks(*handles), torch.no_grad():
        hf_model(**inputs)
    torch.testing.assert_close(seen["layer_in"] + seen["mamba"], seen["layer_out"], atol=1e-5, rtol=1e-5)
    assert float(seen["shared"].abs().max()) > 0  # the block ran and fed the mixer
    with torch.no_grad(), model.trace(PROMPTS):
        update = nnsight.save(model.mixers_output[1])
    torch.testing.assert_close(update, seen["mamba"], atol=0, rtol=0)
    for layer in HYBRID:
        with pytest.raises(UnavailableComponentError), model.trace(PROMPTS):
            model.attentions_output[layer]


def editing_attention(target: torch.nn.Module):
    """An eager attention function that removes every query's attention to the first key (rows
    renormalised) in module ``target`` only."""

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        weights = torch.matmul(query, key.transpose(2, 3)) * scaling
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = torch.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
        if module is target:
            weights = weights.clone()
            weights[:, :, 1:, 0] = 0
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    return attention


def test_writing_probabilities_equals_the_same_edit_in_hf(zamba):
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    model, hf_model, model_type = zamba
    inputs = encode(model.tokenizer, PROMPTS[:1])
    edited = copy.deepcopy(hf_model)
    AttentionInterface.register("nnterp_test_edit", editing_attention(native_attention(edited, model_type, 1)))
    AttentionMaskInterface.register("nnterp_test_edit", eager_mask)  # the additive mask eager attention gets
    edited.set_attn_implementation("nnterp_test_edit")
    with torch.no_grad():
        expected = edited(**inputs).logits
        plain = hf_model(**inputs).logits
    with torch.no_grad(), model.trace(PROMPTS[:1]):
        probabilities = model.attention_probabilities[1].clone()
        probabilities[:, :, 1:, 0] = 0
        model.attention_probabilities[1] = probabilities / probabilities.sum(dim=-1, keepdim=True)
        logits = nnsight.save(model.logits)
    assert not torch.allclose(expected, plain)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
