"""Residual streams packed other ways than (batch, seq, streams, hidden): Qwen4-Exp holds its
``hc_count`` hyper-connection streams flattened, (batch, seq, hc_count * hidden) (the spec's
``streams_packing="flattened"``). nnterp's ``streams_input``/``streams_output`` read and write
(batch, seq, streams, hidden) views, and the logit lens collapses them through the model's own
final ``hyper_connection_mixer``.

Expected values come from the plain HF model run with torch hooks on its native modules; the
stream view is rebuilt here by hand (stream ``s`` is features ``s * hidden:(s + 1) * hidden``).
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.interventions import logit_lens
from nnterp.testing import tiny_model, tiny_tokenizer

from tests.research.reference import encode

PROMPTS = ["The capital of France is", "Hello world"]


@pytest.fixture(scope="module")
def pair():
    hf_model = tiny_model("qwen4_exp_text")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return model, hf_model


def by_hand(flat: torch.Tensor, streams: int) -> torch.Tensor:
    """(batch, seq, streams * hidden) as (batch, seq, streams, hidden), stream by stream."""
    width = flat.shape[-1] // streams
    return torch.stack([flat[..., s * width : (s + 1) * width] for s in range(streams)], dim=-2)


def plain(hf_model, inputs, edit=None):
    """Each block's raw (input, output), each token mixer's input, and the logits of a plain
    forward; ``edit(layer, input, output)`` may replace a block's raw output."""
    seen = {}

    def block_hook(module, args, kwargs, output, layer):
        entering = args[0] if args else kwargs["hidden_states"]
        seen[("block", layer)] = (entering.detach().clone(), output.detach().clone())
        return None if edit is None else edit(layer, entering, output)

    def mixer_hook(module, args, kwargs, layer):
        seen[("mixer", layer)] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handles = []
    for layer, block in enumerate(hf_model.model.layers):
        mixer = block.self_attn if block.layer_type != "linear_attention" else block.linear_attn
        handles.append(
            block.register_forward_hook(lambda m, a, k, o, layer=layer: block_hook(m, a, k, o, layer), with_kwargs=True)
        )
        handles.append(
            mixer.register_forward_pre_hook(lambda m, a, k, layer=layer: mixer_hook(m, a, k, layer), with_kwargs=True)
        )
    try:
        with torch.no_grad():
            logits = hf_model(**inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def test_the_tiny_model_has_flattened_streams_and_an_ngram_layer(pair):
    _, hf_model = pair
    config = hf_model.config
    assert config.hc_count == 4 and config.ple_layer_ids == [1]
    assert hf_model.model.layers[0].ple is not None and hf_model.model.layers[1].ple is None
    assert [block.layer_type for block in hf_model.model.layers] == ["linear_attention", "indexed_attention"]


def test_streams_are_the_blocks_flattened_inputs_and_outputs_unflattened(pair):
    model, hf_model = pair
    streams = hf_model.config.hc_count
    seen, logits = plain(hf_model, encode(model.tokenizer, PROMPTS))
    assert model.num_streams == streams and model.residual_sites == ("streams_input", "streams_output")
    entering, leaving, mixer_inputs = [], [], []
    with torch.no_grad(), model.trace(PROMPTS):
        for layer in range(model.num_layers):
            entering.append(nnsight.save(model.streams_input[layer]))
            mixer_inputs.append(nnsight.save(model.mixers_input[layer]))
            leaving.append(nnsight.save(model.streams_output[layer]))
        traced = nnsight.save(model.logits)
    batch, seq = logits.shape[:2]
    for layer in range(model.num_layers):
        block_in, block_out = seen[("block", layer)]
        assert block_out.shape == (batch, seq, streams * model.hidden_size)
        assert entering[layer].shape == (batch, seq, streams, model.hidden_size)
        torch.testing.assert_close(entering[layer], by_hand(block_in, streams), atol=0, rtol=0)
        torch.testing.assert_close(leaving[layer], by_hand(block_out, streams), atol=0, rtol=0)
        torch.testing.assert_close(mixer_inputs[layer], seen[("mixer", layer)], atol=0, rtol=0)
    # The embeddings enter every stream.
    embeddings = hf_model.model.embed_tokens(encode(model.tokenizer, PROMPTS)["input_ids"])
    for stream in range(streams):
        torch.testing.assert_close(entering[0][:, :, stream], embeddings, atol=0, rtol=0)
    torch.testing.assert_close(traced, logits, atol=0, rtol=0)


def test_the_lens_collapses_streams_through_the_models_mixer(pair):
    model, hf_model = pair
    seen, logits = plain(hf_model, encode(model.tokenizer, PROMPTS))
    with torch.no_grad(), model.trace(PROMPTS):
        last = nnsight.save(model.project_on_vocab(model.streams_output[-1]))
    torch.testing.assert_close(last, logits, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        first = hf_model.lm_head(hf_model.model.hyper_connection_mixer(seen[("block", 0)][1]))
    lens = logit_lens(model, PROMPTS, layers=[0, model.num_layers - 1], return_logits=True)
    torch.testing.assert_close(lens[:, 0], first[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lens[:, 1], logits[:, -1], atol=1e-5, rtol=1e-5)
    # nnterp 1.x's inverse logits, lm_head(-ln_final(h)), go through the same collapse.
    with torch.no_grad():
        inverse = hf_model.lm_head(-hf_model.model.hyper_connection_mixer(seen[("block", 0)][1]))
    _, inverse_lens = logit_lens(model, PROMPTS, layers=[0], return_logits=True, return_inv_logits=True)
    torch.testing.assert_close(inverse_lens[:, 0], inverse[:, -1], atol=1e-5, rtol=1e-5)


def test_writing_one_stream_equals_a_hooked_edit_of_its_features(pair):
    model, hf_model = pair
    hidden = model.hidden_size

    def zero_stream_two(layer, entering, output):
        if layer != 0:
            return None
        edited = output.clone()
        edited[..., 2 * hidden : 3 * hidden] = 0
        return edited

    _, expected = plain(hf_model, encode(model.tokenizer, PROMPTS), edit=zero_stream_two)
    with torch.no_grad(), model.trace(PROMPTS):
        edited = model.streams_output[0].clone()
        edited[:, :, 2] = 0
        model.streams_output[0] = edited
        traced = nnsight.save(model.logits)
    torch.testing.assert_close(traced, expected, atol=0, rtol=0)
    with torch.no_grad(), model.trace(PROMPTS):
        clean = nnsight.save(model.logits)
    assert not torch.allclose(clean, expected)


def test_skipping_a_layer_equals_a_hooked_identity_block(pair):
    model, hf_model = pair
    _, expected = plain(
        hf_model, encode(model.tokenizer, PROMPTS), edit=lambda layer, entering, _out: entering if layer == 0 else None
    )
    with torch.no_grad(), model.trace(PROMPTS):
        model.skip_layer(0)
        skipped = nnsight.save(model.logits)
    torch.testing.assert_close(skipped, expected, atol=0, rtol=0)
    with torch.no_grad(), model.trace(PROMPTS):
        model.streams_output[0] = model.streams_input[0]
        written = nnsight.save(model.logits)
    torch.testing.assert_close(written, expected, atol=0, rtol=0)


def test_what_the_streams_cannot_offer_says_why(pair):
    model, _ = pair
    support = model.support()
    for site in ("layers_input", "layers_output", "layers_mid", "mixers_output", "mlps_output"):
        reason = support[site]
        reason = next(iter(reason.values())) if isinstance(reason, dict) else reason
        assert "hyper-connections" in reason and "flattened" in reason, (site, reason)
    for site in ("ln_final_scale", "mlps_norm_scale"):
        assert "hyper_connection" in str(support[site]), (site, support[site])
    assert support["streams_output"] is None and support["streams_input"] is None
    with pytest.raises(UnavailableComponentError, match="flattened"), model.trace(PROMPTS):
        model.layers_output[0].save()
    with pytest.raises(InvalidInputError, match="streams"), model.trace(PROMPTS):
        model.streams_output[0] = torch.zeros(2, 1, model.hidden_size)
    with pytest.raises(InvalidInputError, match="streams"):
        model.project_on_vocab(torch.zeros(1, 3, model.hidden_size))
