"""Sub-blocks (nnterp.spec.SubBlocks): each LongCat-Flash decoder layer is two standard layers.

Every value is checked against plain torch hooks on the HF model's own modules; the stream
between the two sub-blocks (a variable of the layer's forward) is the first argument of the
second sub-block's ``input_layernorm[1]``, and a plain-torch write of it edits that tensor in
place (the variable and the norm's argument are one tensor).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "hello world foo bar"


@pytest.fixture(scope="module")
def longcat():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = tiny_model("longcat_flash")
        model = StandardizedTransformer(hf, tokenizer=tiny_tokenizer(), enable_attention_probs=True)
    return hf, model


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _hooked(hf, encoding, shift_middle=None):
    """A plain forward recording, per decoder layer, its input, the stream between its
    sub-blocks, its output and each sublayer's output; ``shift_middle=(layer, delta)`` adds
    ``delta`` in place to that layer's middle stream."""
    seen: dict = {}
    handles = []

    def record(key, clone=True):
        return lambda module, args, output: seen.__setitem__(key, _first(output).clone())

    for m, layer in enumerate(hf.model.layers):
        handles.append(layer.register_forward_pre_hook(lambda mod, args, m=m: seen.__setitem__(("in", m), args[0].clone())))
        handles.append(layer.register_forward_hook(record(("out", m))))

        def middle(module, args, m=m):
            if shift_middle is not None and shift_middle[0] == m:
                args[0].add_(shift_middle[1])  # the variable and this argument are one tensor
            seen[("mid", m)] = args[0].clone()

        handles.append(layer.input_layernorm[1].register_forward_pre_hook(middle))
        for k in (0, 1):
            handles.append(layer.self_attn[k].register_forward_hook(record(("attn", m, k))))
            handles.append(layer.mlps[k].register_forward_hook(record(("mlp", m, k))))
        handles.append(layer.mlp.register_forward_hook(record(("shortcut", m))))
    try:
        with torch.no_grad():
            logits = hf(**encoding).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def test_each_decoder_layer_is_two_layers(longcat):
    hf, model = longcat
    seen, logits = _hooked(hf, model.tokenizer(PROMPT, return_tensors="pt"))
    assert model.num_layers == 2 * len(hf.model.layers)
    ins, outs = [], []
    with torch.no_grad(), model.trace(PROMPT):
        for layer in range(model.num_layers):
            ins.append(model.layers_input[layer].save())
            outs.append(model.layers_output[layer].save())
        final = model.logits.save()
    for m in range(len(hf.model.layers)):
        torch.testing.assert_close(ins[2 * m], seen[("in", m)], rtol=0, atol=0)
        torch.testing.assert_close(outs[2 * m], seen[("mid", m)], rtol=0, atol=0)
        torch.testing.assert_close(ins[2 * m + 1], seen[("mid", m)], rtol=0, atol=0)
        torch.testing.assert_close(outs[2 * m + 1], seen[("out", m)], rtol=0, atol=0)
    torch.testing.assert_close(final, logits, rtol=0, atol=0)


def test_the_sub_blocks_parts_are_the_layers_indexed_modules(longcat):
    hf, model = longcat
    for m, layer in enumerate(hf.model.layers):
        for k in (0, 1):
            block = model.layer_module(2 * m + k)
            assert block.self_attn is layer.self_attn[k]
            assert block.mlp is layer.mlps[k]
            assert model.layers[2 * m + k].self_attn._module is layer.self_attn[k]
        assert model.layer_module(2 * m).shortcut_mlp is layer.mlp


def test_contributions_add_up_to_each_sub_blocks_update(longcat):
    hf, model = longcat
    seen, _ = _hooked(hf, model.tokenizer(PROMPT, return_tensors="pt"))
    even = []
    with torch.no_grad(), model.trace(PROMPT):
        even.append(model.attentions_output[0].save())
        even.append(model.mlps_output[0].save())
    torch.testing.assert_close(even[0], seen[("attn", 0, 0)], rtol=0, atol=0)
    torch.testing.assert_close(even[1], seen[("mlp", 0, 0)], rtol=0, atol=0)
    torch.testing.assert_close(seen[("in", 0)] + even[0] + even[1], seen[("mid", 0)], rtol=0, atol=1e-6)
    # The second sub-block adds its MLP's output and the shortcut MoE's: no one MLP contribution.
    torch.testing.assert_close(
        seen[("mid", 0)] + seen[("attn", 0, 1)] + seen[("mlp", 0, 1)] + seen[("shortcut", 0)], seen[("out", 0)],
        rtol=0, atol=1e-6,
    )
    with pytest.raises(UnavailableComponentError, match="shortcut"), model.trace(PROMPT):
        model.mlps_output[1].save()


def test_writing_the_stream_between_sub_blocks_reaches_the_residual_add(longcat):
    hf, model = longcat
    encoding = model.tokenizer(PROMPT, return_tensors="pt")
    seen, expected = _hooked(hf, encoding, shift_middle=(0, 1.0))
    with torch.no_grad(), model.trace(PROMPT):
        model.layers_output[0] = model.layers_output[0] + 1.0
        out = model.layers_output[1].save()
        logits = model.logits.save()
    torch.testing.assert_close(out, seen[("out", 0)], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    # Through layers_input of the second sub-block, the same stream.
    with torch.no_grad(), model.trace(PROMPT):
        model.layers_input[1] = model.layers_input[1] + 1.0
        logits = model.logits.save()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_skipping_a_sub_block(longcat):
    hf, model = longcat
    encoding = model.tokenizer(PROMPT, return_tensors="pt")
    seen, _ = _hooked(hf, encoding)
    # Skipping sub-block 0 of layer 0: the middle stream is the layer's input.
    shifted, expected = _hooked(hf, encoding, shift_middle=(0, seen[("in", 0)] - seen[("mid", 0)]))
    with torch.no_grad(), model.trace(PROMPT):
        model.skip_layer(0)
        middle = model.layers_output[0].save()
        logits = model.logits.save()
    torch.testing.assert_close(middle, seen[("in", 0)], rtol=0, atol=1e-6)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_a_plain_hook_cannot_replace_the_stream_between_sub_blocks(longcat):
    hf, model = longcat
    encoding = model.tokenizer(PROMPT, return_tensors="pt")
    seen, _ = _hooked(hf, encoding)
    recorded = {}
    handle = model.layer_module(0).register_forward_hook(lambda m, args, out: recorded.update(args=args, out=out.clone()))
    try:
        with torch.no_grad():
            hf(**encoding)
    finally:
        handle.remove()
    torch.testing.assert_close(recorded["args"][0], seen[("in", 0)], rtol=0, atol=0)
    torch.testing.assert_close(recorded["out"], seen[("mid", 0)], rtol=0, atol=0)
    handle = model.layer_module(0).register_forward_hook(lambda m, args, out: out * 2)
    try:
        with pytest.raises(UnavailableComponentError, match="hidden_states_4"), torch.no_grad():
            hf(**encoding)
    finally:
        handle.remove()


def test_print_names_the_block_modules_the_sub_blocks_come_from(longcat):
    _, model = longcat
    assert "sub-block i % 2 of model.layers[i // 2]" in repr(model)
