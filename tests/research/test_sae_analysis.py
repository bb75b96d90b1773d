"""SAE features in caching, patching, attribution patching and DLA (issue 18 part 5), against
the SAE formulas written out in torch and the HF model run with torch hooks, never nnterp.

Families: tiny Llama (RMSNorm) and tiny GPT-2 (LayerNorm).
"""

from __future__ import annotations

import pytest
import torch
from nnterp.cache import cache_activations
from nnterp.errors import InvalidInputError, LayerIndexError, UnavailableComponentError
from nnterp.interventions.decomposition import logit_attribution
from nnterp.interventions.metrics import logit_difference
from nnterp.interventions.sae_analysis import (
    cache_features,
    feature_attribution_patching,
    feature_key,
    feature_logit_attribution,
    feature_patching,
)

from .conftest import shared
from .reference import capture, encode, first, hooks, native, replace_first
from .test_saes import PROMPTS, hand_decode, hand_encode, random_weights, saved_and_loaded

FAMILIES = ["llama", "gpt2"]
CLEAN, CORRUPTED = ["The cat sat on the mat"], ["The dog sat on the mat"]
GOOD, BAD = 11, 23
LAYER = 1


def hand_metric(logits: torch.Tensor) -> float:
    return float((logits[:, -1, GOOD] - logits[:, -1, BAD]).mean())


def mlp_outputs(model, hf_model, prompts, layer=LAYER):
    seen, logits = capture(hf_model, encode(model.tokenizer, prompts), {"x": (native(hf_model, "mlp", layer), "output")})
    return seen["x"], logits


def frozen_readout(hf_model, residual: torch.Tensor, unembedding: torch.Tensor):
    """``c -> share of c`` for (..., rows, hidden) c: the final norm frozen at ``residual``
    (rows, hidden), written out for LayerNorm and RMSNorm, dotted with ``unembedding``."""
    norm = native(hf_model, "norm")
    if isinstance(norm, torch.nn.LayerNorm):
        scale = (residual.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        return lambda c: (((c - c.mean(-1, keepdim=True)) / scale) * norm.weight * unembedding).sum(-1)
    scale = (residual.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
    return lambda c: ((c / scale) * norm.weight * unembedding).sum(-1)


# -- caching ----------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_features_equal_the_encoder_on_hf_activations(tmp_path, family):
    model, hf_model = shared(family)
    weights_mlp, weights_res = random_weights(model.hidden_size, 1), random_weights(model.hidden_size, 2)
    mlp_sae = saved_and_loaded(tmp_path, weights_mlp, f"blocks.{LAYER}.hook_mlp_out")
    res_sae = saved_and_loaded(tmp_path, weights_res, "blocks.0.hook_resid_post", "jumprelu")
    inputs = encode(model.tokenizer, PROMPTS)
    seen, logits = capture(
        hf_model, inputs, {"mlp": (native(hf_model, "mlp", LAYER), "output"), "res": (native(hf_model, "layer", 0), "output")}
    )
    mask = inputs["attention_mask"]
    first_real = (mask == 0).sum(-1)
    rows = torch.arange(len(PROMPTS))

    cache = cache_features(model, PROMPTS, [mlp_sae, res_sae], sites=["logits", "layers_output.0"], positions=[[0, -1]] * 2)
    assert set(cache) == {"logits", "layers_output.0", "sae:mlps_output.1", "sae:layers_output.0"}
    for key, x, weights, architecture in [
        ("sae:mlps_output.1", seen["mlp"], weights_mlp, "standard"),
        ("sae:layers_output.0", seen["res"], weights_res, "jumprelu"),
    ]:
        expected = torch.stack([x[rows, first_real], x[:, -1]], dim=1)
        torch.testing.assert_close(cache[key], hand_encode(weights, expected, architecture))
    torch.testing.assert_close(cache["logits"][:, 1], logits[:, -1])
    torch.testing.assert_close(cache["layers_output", 0][:, 0], seen["res"][rows, first_real])

    named = cache_features(model, PROMPTS, {"a": mlp_sae, "b": mlp_sae}, positions=-1)
    torch.testing.assert_close(named["sae:a"], hand_encode(weights_mlp, seen["mlp"][:, -1]))
    torch.testing.assert_close(named["sae:a"], named["sae:b"])
    assert feature_key(model, mlp_sae) == "sae:mlps_output.1"


def test_two_saes_on_one_site_need_names_and_derived_keys_cannot_be_site_names(tmp_path):
    model, _ = shared("llama")
    sae = saved_and_loaded(tmp_path, random_weights(model.hidden_size), "blocks.1.hook_mlp_out")
    with pytest.raises(InvalidInputError, match="give them names"):
        cache_features(model, PROMPTS, [sae, sae])
    with pytest.raises(InvalidInputError, match="saes"):
        cache_features(model, PROMPTS, [])
    with pytest.raises(InvalidInputError, match="prefix it"):
        cache_activations(model, PROMPTS, (), derived={"layers_output.1": ("layers_output.1", torch.relu)})
    with pytest.raises(InvalidInputError, match="several layers"):
        cache_activations(model, PROMPTS, (), derived={"x": ("layers_output", torch.relu)})
    with pytest.raises(InvalidInputError, match="pair"):
        cache_activations(model, PROMPTS, (), derived={"x": "layers_output.1"})


# -- patching -------------------------------------------------------------------------------


def hooked_feature_patch(model, hf_model, weights, feature, positions, delta):
    """HF metric of the corrupted run with ``delta[:, p] * W_dec[feature]`` added to the MLP
    output at each position ``p`` of ``positions``."""

    def edit(output):
        output = output.clone()
        for position in positions:
            output[:, position] += delta[:, position, None] * weights["W_dec"][feature]
        return output

    handle = native(hf_model, "mlp", LAYER).register_forward_hook(lambda m, a, out: replace_first(out, edit(first(out))))
    with hooks(handle), torch.no_grad():
        return hand_metric(hf_model(**encode(model.tokenizer, CORRUPTED)).logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_patching_equals_hooked_hf_runs(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size, 3)
    sae = saved_and_loaded(tmp_path, weights, f"blocks.{LAYER}.hook_mlp_out")
    clean_x, _ = mlp_outputs(model, hf_model, CLEAN)
    corrupted_x, corrupted_logits = mlp_outputs(model, hf_model, CORRUPTED)
    delta = hand_encode(weights, clean_x) - hand_encode(weights, corrupted_x)  # (1, seq, d_sae)
    features, length = list(range(0, 48, 4)), clean_x.shape[1]
    metric = logit_difference(GOOD, BAD)

    grid = feature_patching(model, CLEAN, CORRUPTED, metric, sae, features=features, batch_size=5)
    expected = torch.tensor(
        [[hooked_feature_patch(model, hf_model, weights, f, [p], delta[..., f]) for p in range(length)] for f in features]
    )
    assert grid.shape == (len(features), length)
    torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-4)
    assert (grid - hand_metric(corrupted_logits)).abs().max() > 1e-4

    together = feature_patching(model, CLEAN, CORRUPTED, metric, sae, features=features, positions=[-2, -1], by_position=False)
    expected = torch.tensor(
        [hooked_feature_patch(model, hf_model, weights, f, [length - 2, length - 1], delta[..., f]) for f in features]
    )
    torch.testing.assert_close(together, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_attribution_patching_is_gradient_times_difference(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size, 4)
    sae = saved_and_loaded(tmp_path, weights, f"blocks.{LAYER}.hook_mlp_out", "jumprelu")
    clean_x, _ = mlp_outputs(model, hf_model, CLEAN)
    seen = {}

    def keep(module, args, output):
        first(output).retain_grad()
        seen["x"] = first(output)

    handle = native(hf_model, "mlp", LAYER).register_forward_hook(keep)
    with hooks(handle):
        logits = hf_model(**encode(model.tokenizer, CORRUPTED)).logits
        value = (logits[:, -1, GOOD] - logits[:, -1, BAD]).mean()
        value.backward()
    hf_model.zero_grad(set_to_none=True)
    value = float(value.detach())
    feature_grad = seen["x"].grad @ weights["W_dec"].T
    difference = hand_encode(weights, clean_x, "jumprelu") - hand_encode(weights, seen["x"].detach(), "jumprelu")
    cells = (difference * feature_grad).sum(0).T  # (d_sae, seq)

    estimate = feature_attribution_patching(model, CLEAN, CORRUPTED, logit_difference(GOOD, BAD), sae)
    torch.testing.assert_close(estimate, value + cells, atol=1e-5, rtol=1e-4)
    summed = feature_attribution_patching(
        model, CLEAN, CORRUPTED, logit_difference(GOOD, BAD), sae, features=[1, 5], positions=[-1, -3], by_position=False
    )
    expected = value + cells[[1, 5]][:, [-1, -3]].sum(-1)
    torch.testing.assert_close(summed, expected, atol=1e-5, rtol=1e-4)


# -- direct logit attribution ---------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_dla_is_each_feature_through_the_frozen_final_norm(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size, 5)
    sae = saved_and_loaded(tmp_path, weights, f"blocks.{LAYER}.hook_mlp_out")
    last = native(hf_model, "layer", model.num_layers - 1)
    seen, logits = capture(
        hf_model,
        encode(model.tokenizer, PROMPTS),
        {"x": (native(hf_model, "mlp", LAYER), "output"), "residual": (last, "output")},
    )
    x, residual = seen["x"][:, -1], seen["residual"][:, -1]
    unembedding = hf_model.get_output_embeddings().weight
    share = frozen_readout(hf_model, residual, unembedding[GOOD] - unembedding[BAD])
    features = hand_encode(weights, x)
    with torch.no_grad():
        by_hand = features * share(weights["W_dec"][:, None].expand(-1, len(PROMPTS), -1)).T
        error = share(x - hand_decode(weights, features))

    dla = feature_logit_attribution(model, PROMPTS, sae, GOOD, baseline=BAD)
    assert dla.site == "mlps_output.1" and dla.component == "mlp.1"
    torch.testing.assert_close(dla.features, features)
    torch.testing.assert_close(dla.contributions, by_hand, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dla.error, error, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dla.site_total, share(x), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dla.contributions.sum(-1) + dla.error + dla.decoder_bias, dla.site_total, atol=1e-5, rtol=1e-4)
    components = logit_attribution(model, PROMPTS, GOOD, baseline=BAD)
    torch.testing.assert_close(dla.site_total, components.contributions[:, components.labels.index("mlp.1")], atol=1e-5, rtol=1e-4)
    best, value = dla.top(1, prompt=1)[0]
    assert value == pytest.approx(float(by_hand[1].max()), abs=1e-5) and by_hand[1, best] == by_hand[1].max()

    final = saved_and_loaded(tmp_path, weights, f"blocks.{model.num_layers - 1}.hook_resid_post")
    whole = feature_logit_attribution(model, PROMPTS, final, GOOD, baseline=BAD)
    torch.testing.assert_close(whole.site_total + whole.bias, logits[:, -1, GOOD] - logits[:, -1, BAD], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_dla_toward_a_direction_on_the_raw_stream_at_several_positions(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size, 6)
    sae = saved_and_loaded(tmp_path, weights, "blocks.0.hook_resid_post")
    direction = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(9))
    seen, _ = capture(hf_model, encode(model.tokenizer, PROMPTS), {"x": (native(hf_model, "layer", 0), "output")})
    x = seen["x"][:, -2:]
    features = hand_encode(weights, x)
    dla = feature_logit_attribution(model, PROMPTS, sae, direction=direction, apply_final_norm=False, position=[[-2, -1]] * 2)
    assert dla.component is None and dla.contributions.shape == (2, 2, 48)
    torch.testing.assert_close(dla.contributions, features * (weights["W_dec"] @ direction), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dla.site_total, x @ direction, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dla.decoder_bias, (weights["b_dec"] @ direction).expand(2, 2), atol=1e-5, rtol=1e-4)


def test_bad_arguments_raise_typed_errors(tmp_path):
    model, _ = shared("llama")
    sae = saved_and_loaded(tmp_path, random_weights(model.hidden_size), "blocks.1.hook_mlp_out")
    heads = saved_and_loaded(tmp_path, random_weights(model.hidden_size), "blocks.1.attn.hook_z")
    metric = logit_difference(GOOD, BAD)
    with pytest.raises(UnavailableComponentError, match="feature_attribution_patching"):
        feature_logit_attribution(model, PROMPTS, heads, GOOD)
    with pytest.raises(InvalidInputError, match="batch_size"):
        feature_patching(model, CLEAN, CORRUPTED, metric, sae, batch_size=0)
    with pytest.raises(InvalidInputError, match="token count|same number of tokens|tokens"):
        feature_patching(model, CLEAN, ["The cat ran on the mat"], metric, sae)
    with pytest.raises(InvalidInputError, match="either target"):
        feature_logit_attribution(model, PROMPTS, sae)
    with pytest.raises(LayerIndexError, match="features"):
        feature_patching(model, CLEAN, CORRUPTED, metric, sae, features=[48])
