"""`cache_activations`: tensors per site, equal to plain HF hooks, sliced as asked."""

from __future__ import annotations

import pytest
import torch
from nnterp.cache import (
    ActivationCache,
    cache_activations,
    parse_sites,
    position_columns,
)
from nnterp.errors import InvalidInputError, LayerIndexError, TokenPositionError

from .reference import capture, encode, native

PROMPTS = ["The cat sat on the mat", "Hello world"]


def test_sites_equal_native_hooks(pair):
    model, hf_model = pair
    taps = {}
    for layer in range(model.num_layers):
        taps[f"layers_output.{layer}"] = (native(hf_model, "layer", layer), "output")
        taps[f"attentions_output.{layer}"] = (native(hf_model, "attn", layer), "output")
        taps[f"mlps_input.{layer}"] = (native(hf_model, "mlp", layer), "input")
    seen, logits = capture(hf_model, encode(model.tokenizer, PROMPTS), taps)

    cache = cache_activations(model, PROMPTS, ["logits", "mlps_input", "layers_output", "attentions_output"])
    assert isinstance(cache, ActivationCache)
    assert set(cache) == set(taps) | {"logits"}
    for key, expected in seen.items():
        torch.testing.assert_close(cache[key], expected, msg=key)
    torch.testing.assert_close(cache["logits"], logits)
    assert all(not value.requires_grad for value in cache.values())
    torch.testing.assert_close(cache.stack("layers_output"), torch.stack([seen["layers_output.0"], seen["layers_output.1"]]))
    torch.testing.assert_close(cache["layers_output.-1"], seen["layers_output.1"])


def test_heads_and_probabilities_equal_accessors(pair):
    model, _ = pair
    with model.trace(PROMPTS):
        z = model.heads_output[0].save()
        q = model.queries[1].save()
        probs = model.attention_probabilities[1].save()
    cache = cache_activations(model, PROMPTS, ["queries.1", "attention_probabilities.1", "heads_output.0"])
    torch.testing.assert_close(cache["heads_output.0"], z)
    torch.testing.assert_close(cache["attention_probabilities.1"], probs)
    torch.testing.assert_close(cache["queries.1"], q)


def test_positions_count_from_each_prompts_tokens(llama):
    # Batched with left padding, position 0 is each prompt's first token and -1 its last:
    # the same rows as running each prompt alone.
    sites = ["layers_output.0", "attention_probabilities.1", "heads_output.1"]
    batched = cache_activations(llama, PROMPTS, sites, positions=[0, -1])
    for row, prompt in enumerate(PROMPTS):
        alone = cache_activations(llama, [prompt], sites)
        hidden = alone["layers_output.0"][0]
        torch.testing.assert_close(batched["layers_output.0"][row], hidden[[0, -1]], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched["heads_output.1"][row], alone["heads_output.1"][0][[0, -1]], atol=1e-5, rtol=1e-5)
        # Query positions of the probabilities (keys stay the padded batch's).
        probs = batched["attention_probabilities.1"][row]
        expected = alone["attention_probabilities.1"][0][:, [0, -1]]
        torch.testing.assert_close(probs[..., -expected.shape[-1] :], expected, atol=1e-5, rtol=1e-5)
    one = cache_activations(llama, PROMPTS, "layers_output.0", positions=-1)
    assert one["layers_output.0"].shape == (2, llama.hidden_size)
    torch.testing.assert_close(one["layers_output.0"], batched["layers_output.0"][:, 1])


def test_device_and_dtype(llama):
    cache = cache_activations(llama, PROMPTS, ["mlps_output.1"], positions=-1, dtype=torch.float16)
    full = cache_activations(llama, PROMPTS, ["mlps_output.1"], positions=-1)
    assert cache["mlps_output.1"].dtype == torch.float16
    assert cache["mlps_output.1"].device.type == "cpu"
    torch.testing.assert_close(cache["mlps_output.1"], full["mlps_output.1"].half())


def test_sites_sort_in_forward_order(llama):
    sites = parse_sites(llama, ["logits", "mlps_output.0", "heads_output.0", "queries.0", "layers_input.1", "token_embeddings"])
    assert [site.key for site in sites] == [
        "token_embeddings", "queries.0", "heads_output.0", "mlps_output.0", "layers_input.1", "logits",
    ]


def test_position_columns():
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])
    assert position_columns(mask, [0, 1, -1]).tolist() == [[0, 1, 3], [2, 3, 3]]
    with pytest.raises(TokenPositionError, match="positions 2 is outside prompt 1, which has 2 tokens"):
        position_columns(mask, [2])


@pytest.mark.parametrize(
    ("sites", "error", "match"),
    [
        (["layer_output.0"], InvalidInputError, "unknown site"),
        (["layers_output.2"], LayerIndexError, "out of range"),
        (["logits.0"], InvalidInputError, "has no layers"),
        (["layers_output.x"], InvalidInputError, "integer"),
        ([], InvalidInputError, "no sites"),
    ],
)
def test_bad_sites(llama, sites, error, match):
    with pytest.raises(error, match=match):
        cache_activations(llama, "Hello", sites)


def test_missing_key_lists_cached_sites(llama):
    cache = cache_activations(llama, "Hello", "layers_output.0")
    with pytest.raises(KeyError, match="layers_output.0"):
        cache["mlps_output.0"]
