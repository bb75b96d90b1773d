"""Hyper-connection models (DeepSeek-V4, HunYuan-V4): the residual is several parallel streams,
exposed as ``streams_input``/``streams_output`` and read through the model's own ``hc_head`` by
the logit lens.

Expected values come from the plain HF model run with torch hooks on its native modules.
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import UnavailableComponentError
from nnterp.interventions import logit_lens
from nnterp.testing import tiny_model, tiny_tokenizer
from tests.research.reference import encode

PROMPTS = ["The capital of France is", "Hello world"]


@pytest.fixture(scope="module", params=["deepseek_v4", "hy_v4"])
def pair(request):
    hf_model = tiny_model(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return model, hf_model


def plain(hf_model, inputs, edit=None):
    """Each block's (input, output) and each attention's input, and the logits of a plain
    forward; ``edit(layer, input, output)`` may replace a block's output."""
    seen = {}

    def block_hook(module, args, output, layer):
        hidden = output[0] if isinstance(output, tuple) else output
        seen[("block", layer)] = (args[0].detach().clone(), hidden.detach().clone())
        if edit is not None:
            replaced = edit(layer, args[0], hidden)
            if replaced is not None:
                return (replaced, *output[1:]) if isinstance(output, tuple) else replaced
        return None

    handles = []
    for layer, block in enumerate(hf_model.model.layers):
        handles.append(block.register_forward_hook(lambda m, a, o, layer=layer: block_hook(m, a, o, layer)))
        handles.append(
            block.self_attn.register_forward_pre_hook(
                lambda m, args, kwargs, layer=layer: seen.__setitem__(
                    ("attn", layer), (args[0] if args else kwargs["hidden_states"]).detach().clone()
                ),
                with_kwargs=True,
            )
        )
    try:
        with torch.no_grad():
            logits = hf_model(**inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def test_streams_equal_the_blocks_inputs_and_outputs(pair):
    model, hf_model = pair
    seen, logits = plain(hf_model, encode(model.tokenizer, PROMPTS))
    streams = hf_model.config.hc_mult
    assert model.num_streams == streams and model.residual_sites == ("streams_input", "streams_output")
    entering, leaving, attention_inputs = [], [], []
    with torch.no_grad(), model.trace(PROMPTS):
        for layer in range(model.num_layers):
            entering.append(nnsight.save(model.streams_input[layer]))
            attention_inputs.append(nnsight.save(model.attentions_input[layer]))
            leaving.append(nnsight.save(model.streams_output[layer]))
        traced = nnsight.save(model.logits)
    for layer in range(model.num_layers):
        block_in, block_out = seen[("block", layer)]
        assert block_out.shape[2] == streams and block_out.dim() == 4
        torch.testing.assert_close(entering[layer], block_in, atol=0, rtol=0)
        torch.testing.assert_close(leaving[layer], block_out, atol=0, rtol=0)
        torch.testing.assert_close(attention_inputs[layer], seen[("attn", layer)], atol=0, rtol=0)
    torch.testing.assert_close(traced, logits, atol=0, rtol=0)


def test_the_lens_reads_streams_through_the_models_own_head(pair):
    model, hf_model = pair
    seen, logits = plain(hf_model, encode(model.tokenizer, PROMPTS))
    with torch.no_grad(), model.trace(PROMPTS):
        last = nnsight.save(model.project_on_vocab(model.streams_output[-1]))
    torch.testing.assert_close(last, logits, atol=1e-5, rtol=1e-5)
    # Layer 0's lens by hand: hc_head, the final norm and lm_head on the plain block output.
    with torch.no_grad():
        first_state = seen[("block", 0)][1]
        by_hand = hf_model.lm_head(hf_model.model.norm(hf_model.model.hc_head(first_state)))
    lens = logit_lens(model, PROMPTS, layers=[0, model.num_layers - 1], return_logits=True)
    torch.testing.assert_close(lens[:, 0], by_hand[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lens[:, 1], logits[:, -1], atol=1e-5, rtol=1e-5)


def test_writing_streams_equals_a_hooked_edit(pair):
    model, hf_model = pair
    _, expected = plain(hf_model, encode(model.tokenizer, PROMPTS), edit=lambda layer, entering, _out: entering if layer == 0 else None)
    with torch.no_grad(), model.trace(PROMPTS):
        model.streams_output[0] = model.streams_input[0]
        edited = nnsight.save(model.logits)
    torch.testing.assert_close(edited, expected, atol=0, rtol=0)


def test_single_stream_sites_say_why_and_one_stream_models_refuse_streams(pair):
    model, _ = pair
    support = model.support()
    for site in ("layers_input", "layers_output", "layers_mid", "attentions_output", "mlps_output"):
        reason = support[site]
        reason = next(iter(reason.values())) if isinstance(reason, dict) else reason
        assert "hyper-connections" in reason, (site, reason)
    assert support["streams_output"] is None
    with pytest.raises(UnavailableComponentError, match="streams_output"), model.trace(PROMPTS):
        model.layers_output[0].save()
    llama = StandardizedTransformer(tiny_model("llama"), tiny_tokenizer())
    assert "one residual stream" in llama.support()["streams_output"]
    with pytest.raises(UnavailableComponentError, match="one residual stream"), llama.trace(PROMPTS):
        llama.streams_output[0].save()
