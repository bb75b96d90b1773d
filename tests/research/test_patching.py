"""Activation patching against the same patches made with plain HF hooks."""

from __future__ import annotations

import pytest
import torch
from nnterp.cache import cache_activations
from nnterp.errors import InvalidInputError
from nnterp.interventions.metrics import evaluate_metric, logit_difference
from nnterp.interventions.patching import (
    activation_patching,
    head_patching,
    run_with_patches,
)

from .reference import capture, encode, native, patched_logits

CLEAN = ["The capital of France is", "The cat sat on the"]
CORRUPTED = ["The capital of Spain is", "The dog sat on the"]
METRIC = logit_difference([30, 40], [50, 60])
NATIVE_SITE = {"layers_output": "layer", "attentions_output": "attn", "mlps_output": "mlp"}


def test_patching_the_whole_clean_residual_restores_clean_logits(pair):
    model, _ = pair
    with model.trace(CLEAN):
        clean_logits = model.logits.save()
    for layer in range(model.num_layers):
        clean = cache_activations(model, CLEAN, f"layers_output.{layer}")
        logits = run_with_patches(model, CORRUPTED, clean)
        torch.testing.assert_close(logits, clean_logits, msg=f"layer {layer}")
    with model.trace(CORRUPTED):
        corrupted_logits = model.logits.save()
    assert not torch.allclose(corrupted_logits, clean_logits)


@pytest.mark.parametrize("site", ["layers_output", "attentions_output", "mlps_output"])
def test_grid_equals_native_hook_patching(pair, site):
    model, hf_model = pair
    grid = activation_patching(model, CLEAN, CORRUPTED, METRIC, site=site)
    seq = encode(model.tokenizer, CLEAN)["input_ids"].shape[1]
    assert grid.shape == (model.num_layers, seq)
    clean_inputs, corrupted_inputs = encode(model.tokenizer, CLEAN), encode(model.tokenizer, CORRUPTED)
    for layer in range(model.num_layers):
        module = native(hf_model, NATIVE_SITE[site], layer)
        clean_seen, _ = capture(hf_model, clean_inputs, {"clean": (module, "output")})
        for position in range(seq):
            def patch(x, position=position, clean=clean_seen["clean"]):
                x = x.clone()
                x[:, position] = clean[:, position]
                return x

            expected = METRIC(patched_logits(hf_model, corrupted_inputs, module, "output", patch))
            torch.testing.assert_close(grid[layer, position], expected, atol=1e-5, rtol=1e-4)


def test_grid_landmarks(llama):
    grid = activation_patching(llama, CLEAN, CORRUPTED, METRIC)
    clean_metric = evaluate_metric(llama, CLEAN, METRIC)
    corrupted_metric = evaluate_metric(llama, CORRUPTED, METRIC)
    # Position 0 ('The') is the same token in both runs of every pair and sees nothing else:
    # patching it changes nothing.
    torch.testing.assert_close(grid[:, :1], corrupted_metric.expand(2, 1))
    # The last layer's last position is all the final logits read: the clean metric.
    torch.testing.assert_close(grid[-1, -1], clean_metric, atol=1e-5, rtol=1e-4)
    assert not torch.isclose(clean_metric, corrupted_metric)


def test_head_patching_equals_native_hook(pair):
    model, hf_model = pair
    grid = head_patching(model, CLEAN, CORRUPTED, METRIC, positions=[-1, -2])
    heads = model.num_heads
    assert grid.shape == (model.num_layers, heads)
    clean_inputs, corrupted_inputs = encode(model.tokenizer, CLEAN), encode(model.tokenizer, CORRUPTED)
    d = model.heads_output.layout.head_dim
    for layer in range(model.num_layers):
        o_proj = native(hf_model, "o", layer)
        clean_seen, _ = capture(hf_model, clean_inputs, {"z": (o_proj, "input")})
        for head in range(heads):
            def patch(x, head=head, clean=clean_seen["z"]):
                x = x.clone()
                cols = slice(head * d, (head + 1) * d)
                x[:, -2:, cols] = clean[:, -2:, cols]
                return x

            expected = METRIC(patched_logits(hf_model, corrupted_inputs, o_proj, "input", patch))
            torch.testing.assert_close(grid[layer, head], expected, atol=1e-5, rtol=1e-4)


def test_batch_size_does_not_change_results(llama):
    together = activation_patching(llama, CLEAN, CORRUPTED, METRIC, batch_size=64)
    one_by_one = activation_patching(llama, CLEAN, CORRUPTED, METRIC, batch_size=1, layers=[1], positions=[3, -1])
    torch.testing.assert_close(one_by_one, together[1:, [3, -1]], atol=1e-5, rtol=1e-4)
    heads = head_patching(llama, CLEAN, CORRUPTED, METRIC, heads=[2, 0], layers=0, batch_size=1)
    torch.testing.assert_close(heads, head_patching(llama, CLEAN, CORRUPTED, METRIC)[:1, [2, 0]], atol=1e-5, rtol=1e-4)


def test_bad_inputs(llama):
    with pytest.raises(InvalidInputError, match="same number of tokens"):
        activation_patching(llama, "The capital of France is", "The capital of the United Kingdom is", METRIC)
    with pytest.raises(InvalidInputError, match="pair each clean prompt"):
        activation_patching(llama, CLEAN, CORRUPTED[:1], METRIC)
    with pytest.raises(InvalidInputError, match="cannot patch site"):
        activation_patching(llama, CLEAN, CORRUPTED, METRIC, site="logits")
    with pytest.raises(InvalidInputError, match="shape"):
        run_with_patches(llama, CORRUPTED, {"layers_output.0": torch.zeros(1, 2, 64)})
