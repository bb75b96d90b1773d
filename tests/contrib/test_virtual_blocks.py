"""Virtual blocks (nnterp.virtual_blocks): XLM's layers are groups of four module lists.

Every value is checked against plain torch hooks on the HF model's own modules
(``transformer.attentions[i]``, ``transformer.layer_norm2[i]``, ``transformer.layer_norm_emb``),
never against nnterp.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import LayerIndexError, UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "hello world foo bar"
PROMPTS = ["hello world", "the capital of france is paris"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _load(tokenizer, **overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = tiny_model("xlm", config_overrides={"causal": True, "n_layers": 3, **overrides})
        model = StandardizedTransformer(hf, tokenizer=tokenizer, enable_attention_probs=True)
    return hf, model


@pytest.fixture(scope="module")
def xlm(tokenizer):
    return _load(tokenizer)


def _hooked(hf, encoding, replace=None):
    """A plain forward recording each attention's input, each layer_norm2 output, each attention's
    weights and the logits; ``replace=(module, fn)`` swaps that module's output."""
    base, seen = hf.transformer, {"in": [], "out": []}
    handles = [a.register_forward_pre_hook(lambda m, args: seen["in"].append(args[0].clone())) for a in base.attentions]
    handles += [n.register_forward_hook(lambda m, a, out: seen["out"].append(out.clone())) for n in base.layer_norm2]
    if replace is not None:
        handles.append(replace[0].register_forward_hook(lambda m, a, out: replace[1](out)))
    try:
        with torch.no_grad():
            result = hf(**encoding, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    return seen["in"], seen["out"], result.attentions, result.logits


def test_layers_read_the_streams_between_the_lists(xlm, tokenizer):
    hf, model = xlm
    entering, leaving, weights, logits = _hooked(hf, tokenizer(PROMPT, return_tensors="pt"))
    assert model.num_layers == 3
    ins, probs, outs = [], [], []
    with torch.no_grad(), model.trace(PROMPT):
        for i in range(3):  # in forward order: the stream entering, the attention, the stream leaving
            ins.append(model.layers_input[i].save())
            probs.append(model.attention_probabilities[i].save())
            outs.append(model.layers_output[i].save())
        final = model.logits.save()
    for i in range(3):
        torch.testing.assert_close(ins[i], entering[i], rtol=0, atol=0)
        torch.testing.assert_close(outs[i], leaving[i], rtol=0, atol=0)
        torch.testing.assert_close(probs[i], weights[i], rtol=0, atol=0)
    torch.testing.assert_close(final, logits, rtol=0, atol=0)


def test_the_standard_parts_are_the_lists_modules(xlm):
    hf, model = xlm
    base = hf.transformer
    for i in range(3):
        block = model.layer_module(i)
        assert block.self_attn is base.attentions[i]
        assert block.mlp is base.ffns[i]
        assert model.layers[i].self_attn._module is base.attentions[i]
        assert model.layers[i].mlp._module is base.ffns[i]
    with pytest.raises(LayerIndexError):
        model.layers[3]


def test_the_model_module_tree_and_state_dict_are_unchanged(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = tiny_model("xlm", config_overrides={"causal": True})
        names, keys = [name for name, _ in hf.named_modules()], list(hf.state_dict())
        model = StandardizedTransformer(hf, tokenizer=tokenizer)
    assert [name for name, _ in hf.named_modules()] == names
    assert list(hf.state_dict()) == keys
    with pytest.raises(UnavailableComponentError):
        model.layer_module(0)(torch.zeros(1, 2, hf.config.emb_dim))


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_writing_a_layer_input_changes_the_stream_the_whole_block_sees(xlm, tokenizer, layer):
    hf, model = xlm
    base = hf.transformer
    # The stream entering layer i is computed by layer_norm_emb (layer 0) or layer_norm2[i - 1].
    source = base.layer_norm_emb if layer == 0 else base.layer_norm2[layer - 1]
    _, leaving, _, expected = _hooked(hf, tokenizer(PROMPT, return_tensors="pt"), replace=(source, lambda out: out * 0.5 + 1.0))
    with torch.no_grad(), model.trace(PROMPT):
        model.layers_input[layer] = model.layers_input[layer] * 0.5 + 1.0
        out = model.layers_output[layer].save()
        logits = model.logits.save()
    torch.testing.assert_close(out, leaving[layer], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_writing_a_layer_output_and_skipping_a_layer(xlm, tokenizer):
    hf, model = xlm
    encoding = tokenizer(PROMPT, return_tensors="pt")
    entering, _, _, _ = _hooked(hf, encoding)
    _, _, _, steered = _hooked(hf, encoding, replace=(hf.transformer.layer_norm2[1], lambda out: out + 2.0))
    with torch.no_grad(), model.trace(PROMPT):
        model.layers_output[1] = model.layers_output[1] + 2.0
        logits = model.logits.save()
    torch.testing.assert_close(logits, steered, rtol=0, atol=1e-5)
    # Skipping layer 1: its output is its input, as if the block were the identity.
    _, _, _, skipped = _hooked(hf, encoding, replace=(hf.transformer.layer_norm2[1], lambda out: entering[1]))
    with torch.no_grad(), model.trace(PROMPT):
        model.skip_layer(1)
        logits = model.logits.save()
    torch.testing.assert_close(logits, skipped, rtol=0, atol=1e-5)


def test_the_block_hooks_are_the_parts_hooks(xlm, tokenizer):
    hf, model = xlm
    encoding = tokenizer(PROMPT, return_tensors="pt")
    entering, leaving, _, _ = _hooked(hf, encoding)
    seen = {}
    handle = model.layer_module(1).register_forward_hook(
        lambda m, args, kwargs, out: seen.update(args=args, kwargs=kwargs, out=out.clone()), with_kwargs=True
    )
    try:
        with torch.no_grad():
            hf(**encoding)
    finally:
        handle.remove()
    torch.testing.assert_close(seen["args"][0], entering[1], rtol=0, atol=0)
    torch.testing.assert_close(seen["out"], leaving[1], rtol=0, atol=0)
    assert seen["kwargs"] == {}
    # A pre-hook's new input is the stream block 1 receives: as replacing layer_norm2[0]'s output.
    _, _, _, expected = _hooked(hf, encoding, replace=(hf.transformer.layer_norm2[0], lambda out: out * 3.0))
    handle = model.layer_module(1).register_forward_pre_hook(lambda m, args: (args[0] * 3.0,))
    try:
        with torch.no_grad():
            logits = hf(**encoding).logits
    finally:
        handle.remove()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_a_batch_gives_each_prompt_what_it_gets_alone(tokenizer, causal):
    # XLM's causal mask ignores padding keys, so nnterp pads it on the right (positions from 0).
    hf, model = _load(tokenizer, causal=causal)
    assert model.tokenizer.padding_side == "right"
    outs = []
    with torch.no_grad(), model.trace(PROMPTS):
        for i in range(3):
            outs.append(model.layers_output[i].save())
        logits = model.logits.save()
    for row, prompt in enumerate(PROMPTS):
        encoding = tokenizer(prompt, return_tensors="pt")
        _, leaving, _, alone = _hooked(hf, encoding)
        length = encoding.input_ids.shape[1]
        for i in range(3):
            torch.testing.assert_close(outs[i][row, :length], leaving[i][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(logits[row, :length], alone[0], rtol=0, atol=1e-5)


def test_source_of_a_virtual_block_names_its_parts(xlm):
    _, model = xlm
    with pytest.raises(UnavailableComponentError, match="self_attn"):
        model.layers[0].source


def test_a_written_tensor_is_not_edited_by_the_forward(xlm, tokenizer):
    # XLM multiplies the stream by the padding mask in place after layer_norm2: what a caller
    # writes there is copied first, so its own tensor keeps its padding rows.
    hf, model = xlm
    with torch.no_grad(), model.trace(PROMPTS):
        shape = model.layers_output[0].shape.save()
    written = torch.ones(tuple(shape))
    leaf = torch.ones(tuple(shape), requires_grad=True)
    with torch.no_grad(), model.trace(PROMPTS):
        model.layers_output[0] = written
        model.layers_output[1] = model.layers_output[1] * 0 + leaf.detach()
    assert bool((written == 1).all())
    with model.trace(PROMPTS):
        model.layers_output[0] = leaf
        loss = model.logits.sum().save()
    loss.backward()
    assert leaf.grad is not None and bool((leaf.grad != 0).any())
    assert bool((leaf == 1).all())


def test_print_names_the_lists_a_block_is_made_of(xlm):
    _, model = xlm
    text = repr(model)
    assert "VirtualBlock of transformer.attentions[i], transformer.layer_norm1[i], transformer.ffns[i]" in text
