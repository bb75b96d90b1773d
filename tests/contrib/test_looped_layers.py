"""Unrolled stacks (nnterp.unrolled): Dory's and HRM-text's standard layers are their block calls.

Every value is checked against plain torch hooks on the HF model, which record every call of
a module (a recurrent block runs once per loop).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.contrib.families.looped import DORY, DORY_UNROLLED, HRM_TEXT
from nnterp.errors import UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer
from nnterp.unrolled import recorded_block_calls

PROMPT = "hello world foo bar"


def _dory(**overrides: object) -> torch.nn.Module:
    return tiny_model("dory", config_overrides={**DORY.tiny_config, **overrides})


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def dory(tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = _dory()
        model = StandardizedTransformer(hf, tokenizer=tokenizer, enable_attention_probs=True)
    return hf, model


def _hooked(hf, tokenizer, replace=None):
    """A plain HF forward recording every block call's (input, output), every attention call's
    output and every call of the final norm; ``replace=(block, call, fn)`` swaps that call's output."""
    blocks, attentions, norms, seen = [], [], [], {}

    def block_hook(index):
        def hook(module, args, output):
            call = seen.get(index, 0)
            seen[index] = call + 1
            if replace is not None and replace[:2] == (index, call):
                output = replace[2](output)
            blocks.append((index, args[0].clone(), output.clone()))
            return output
        return hook

    handles = [block.register_forward_hook(block_hook(i)) for i, block in enumerate(hf.model.layers)]
    handles += [block.self_attn.register_forward_hook(lambda m, a, o: attentions.append(o)) for block in hf.model.layers]
    handles.append(hf.model.norm.register_forward_hook(lambda m, a, o: norms.append(o.clone())))
    try:
        with torch.no_grad():
            logits = hf(**tokenizer(PROMPT, return_tensors="pt")).logits
    finally:
        for handle in handles:
            handle.remove()
    return blocks, attentions, norms, logits


@pytest.mark.parametrize("loops", [1, 2, 3])
def test_block_calls_are_the_forward_order(tokenizer, loops):
    hf = _dory(n_recurrent_loops=loops)
    recorded = recorded_block_calls(hf, "model.layers", **tokenizer(PROMPT, return_tensors="pt"))
    assert list(DORY_UNROLLED.block_calls(hf.config)) == recorded
    assert len(recorded) == 2 + 2 * loops


def test_layers_are_the_block_calls(dory, tokenizer):
    hf, model = dory
    blocks, _, _, logits = _hooked(hf, tokenizer)
    assert model.num_layers == len(blocks) == 6
    assert [model.layers[j].envoy._module for j in range(6)] == [hf.model.layers[b] for b, _, _ in blocks]
    ins, outs = [], []
    with torch.no_grad(), model.trace(PROMPT):
        for j in range(model.num_layers):
            ins.append(model.layers_input[j].save())
            outs.append(model.layers_output[j].save())
        read_logits = model.logits.save()
    for j, (_, expected_in, expected_out) in enumerate(blocks):
        assert torch.equal(ins[j], expected_in), j
        assert torch.equal(outs[j], expected_out), j
    assert torch.equal(read_logits, logits)
    # A loop restarts from norm(stream) + norm(prelude output): not the previous call's output.
    assert not torch.allclose(ins[3], outs[2])


def test_attention_sites_follow_the_call(dory, tokenizer):
    hf, model = dory
    _, attentions, norms, _ = _hooked(hf, tokenizer)
    attention_out, probabilities = [], []
    with torch.no_grad(), model.trace(PROMPT):
        for j in range(model.num_layers):
            probabilities.append(model.attention_probabilities[j].save())
            attention_out.append(model.layers[j].self_attn.output[0].save())
        final = model.ln_final.output.save()
    for j, (expected_out, expected_probabilities) in enumerate(attentions):
        assert torch.equal(attention_out[j], expected_out), j
        assert torch.equal(probabilities[j], expected_probabilities), j
    assert len(norms) == 1 + DORY.tiny_config["n_recurrent_loops"] + 1
    assert torch.equal(final, norms[-1])


@pytest.mark.parametrize(("layer", "block", "call"), [(1, 1, 0), (4, 2, 1)])
def test_writing_one_call_changes_what_follows(dory, tokenizer, layer, block, call):
    hf, model = dory
    blocks, _, _, logits = _hooked(hf, tokenizer, replace=(block, call, lambda out: out.flip(-1)))
    ins = []
    with torch.no_grad(), model.trace(PROMPT):
        model.layers_output[layer] = model.layers_output[layer].flip(-1)
        for j in range(layer + 1, model.num_layers):
            ins.append(model.layers_input[j].save())
        read_logits = model.logits.save()
    for offset, (_, expected_in, _) in enumerate(blocks[layer + 1:]):
        assert torch.equal(ins[offset], expected_in), layer + 1 + offset
    assert torch.equal(read_logits, logits)
    # (a rescaled stream would change nothing: every block starts with an L2 norm)
    plain = _hooked(hf, tokenizer)[3]
    assert not torch.allclose(read_logits, plain)


def test_contributions_are_refused_with_the_reason(dory):
    _, model = dory
    with pytest.raises(UnavailableComponentError, match="interpolate"), model.trace(PROMPT):
        model.attentions_output[3].save()


def test_layer_module_is_the_block_each_call_runs(dory, tokenizer):
    hf, model = dory
    blocks, _, _, _ = _hooked(hf, tokenizer)
    assert [model.layer_module(j) for j in range(model.num_layers)] == [hf.model.layers[b] for b, _, _ in blocks]
    calls = [sum(b == block for b, _, _ in blocks[:j]) for j, (block, _, _) in enumerate(blocks)]
    assert [model.layer_call(j) for j in range(model.num_layers)] == calls
    assert [model.block_index(j) for j in range(model.num_layers)] == [b for b, _, _ in blocks]


def test_lens_of_the_last_call_is_the_logits(dory, tokenizer):
    hf, model = dory
    blocks, _, norms, logits = _hooked(hf, tokenizer)
    with torch.no_grad(), model.trace(PROMPT):
        lens = model.project_on_vocab(model.layers_output[-1]).save()
        scale_input = model.ln_final.input.save()
    # The final norm's last call reads the coda's output and feeds lm_head.
    assert torch.equal(scale_input, blocks[-1][2])
    torch.testing.assert_close(lens, logits)
    assert len(norms) > 1


def test_cache_reads_every_block_call(dory, tokenizer):
    from nnterp.cache import cache_activations

    hf, model = dory
    blocks, _, _, _ = _hooked(hf, tokenizer)
    cache = cache_activations(model, PROMPT, ["layers_output"])
    for j, (_, _, expected) in enumerate(blocks):
        assert torch.equal(cache["layers_output", j], expected), j


def test_generation_is_refused_with_a_typed_error(dory):
    _, model = dory
    with pytest.raises(UnavailableComponentError, match="generation is not supported on an unrolled stack"):
        model.generate(PROMPT, max_new_tokens=2)
    with pytest.raises(UnavailableComponentError, match="model.trace"), model.generate(PROMPT, max_new_tokens=2):
        model.layers_output[0].save()


def test_segments_naming_missing_blocks_are_refused(tokenizer):
    import dataclasses

    from nnterp.errors import RenamingError
    from nnterp.spec import Segment, Unrolled

    segments = (Segment(start=0, length="num_hidden_layers"), Segment(start=3, length=2))
    wrong = dataclasses.replace(DORY, unrolled=Unrolled(segments=segments))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RenamingError, match="no block \\[4\\]"):
            StandardizedTransformer(_dory(), tokenizer=tokenizer, spec=wrong)


def _hrm(stack_size: int) -> torch.nn.Module:
    config = HRM_TEXT.tiny_config
    passes = config["H_cycles"] * (config["L_cycles"] + 1)
    return tiny_model("hrm_text", config_overrides={
        **config, "num_layers_per_stack": stack_size, "num_hidden_layers": stack_size * passes,
    })


def _hooked_stacks(hf, tokenizer):
    """A plain HRM forward recording every block call of both stacks, in order: (module,
    input, output), and the H stack's final-norm calls."""
    calls, norms = [], []
    blocks = [*hf.model.L_module.layers, *hf.model.H_module.layers]
    handles = [
        block.register_forward_hook(lambda module, args, output: calls.append((module, args[0].clone(), output.clone())))
        for block in blocks
    ]
    handles.append(hf.model.H_module.final_norm.register_forward_hook(lambda m, a, o: norms.append((a[0].clone(), o))))
    try:
        with torch.no_grad():
            logits = hf(**tokenizer(PROMPT, return_tensors="pt")).logits
    finally:
        for handle in handles:
            handle.remove()
    return calls, norms, logits


@pytest.mark.parametrize("stack_size", [1, 2])
def test_hrm_layers_are_the_calls_of_both_stacks(tokenizer, stack_size):
    hf = _hrm(stack_size)
    calls, norms, logits = _hooked_stacks(hf, tokenizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf, tokenizer=tokenizer)
    config = hf.config
    assert model.num_layers == len(calls) == stack_size * config.H_cycles * (config.L_cycles + 1)
    assert [model.layer_module(j) for j in range(model.num_layers)] == [module for module, _, _ in calls]
    ins, outs, parts = [], [], []
    with torch.no_grad(), model.trace(PROMPT):
        for j in range(model.num_layers):
            ins.append(model.layers_input[j].save())
            parts.append((model.attentions_output[j].save(), model.mlps_output[j].save()))
            outs.append(model.layers_output[j].save())
        lens = model.project_on_vocab(model.layers_output[-1]).save()
        read_logits = model.logits.save()
    for j, (_, expected_in, expected_out) in enumerate(calls):
        assert torch.equal(ins[j], expected_in), j
        assert torch.equal(outs[j], expected_out), j
        attention, mlp = parts[j]
        torch.testing.assert_close(expected_in + attention + mlp, expected_out)
    assert torch.equal(read_logits, logits)
    assert torch.equal(norms[-1][0], calls[-1][2])
    torch.testing.assert_close(lens, logits)


def test_hrm_writing_an_l_call_reaches_the_h_stack(tokenizer):
    hf = _hrm(1)
    seen = {"n": 0}

    def replace(module, args, output):
        seen["n"] += 1
        return output.flip(-1) if seen["n"] == 2 else output  # the L stack's second call

    handle = hf.model.L_module.layers[0].register_forward_hook(replace)
    try:
        with torch.no_grad():
            expected = hf(**tokenizer(PROMPT, return_tensors="pt")).logits
    finally:
        handle.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf, tokenizer=tokenizer)
    with torch.no_grad(), model.trace(PROMPT):
        model.layers_output[1] = model.layers_output[1].flip(-1)
        logits = model.logits.save()
    assert torch.equal(logits, expected)
    assert not torch.allclose(logits, _hooked_stacks(hf, tokenizer)[2])
