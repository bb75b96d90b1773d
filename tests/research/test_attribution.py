"""Attribution patching: equal to gradient x activation difference by plain autograd, and
correlated with real activation patching on tiny models."""

from __future__ import annotations

import pytest
import torch
from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.metrics import evaluate_metric, logit_difference
from nnterp.interventions.patching import activation_patching

from .reference import capture, encode, first, hooks, native

CLEAN = ["The capital of France is", "The cat sat on the"]
CORRUPTED = ["The capital of Spain is", "The dog sat on the"]
METRIC = logit_difference([30, 40], [50, 60])


def test_estimate_is_gradient_times_difference(pair):
    model, hf_model = pair
    modules = [native(hf_model, "layer", layer) for layer in range(model.num_layers)]
    clean_seen, _ = capture(hf_model, encode(model.tokenizer, CLEAN), {i: (m, "output") for i, m in enumerate(modules)})
    kept = {}

    def keep(layer):
        def hook(module, args, output):
            first(output).retain_grad()
            kept[layer] = first(output)

        return hook

    handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]
    with hooks(*handles):
        metric = METRIC(hf_model(**encode(model.tokenizer, CORRUPTED)).logits)
    metric.backward()
    hf_model.zero_grad(set_to_none=True)
    expected = torch.stack(
        [
            metric.detach() + ((clean_seen[i] - kept[i].detach()) * kept[i].grad).sum(dim=(0, 2))
            for i in range(model.num_layers)
        ]
    )
    estimate = attribution_patching(model, CLEAN, CORRUPTED, METRIC)
    torch.testing.assert_close(estimate, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("site", ["layers_output", "attentions_output", "mlps_output", "heads_output"])
def test_estimate_correlates_with_real_patching(pair, site):
    model, _ = pair
    exact = activation_patching(model, CLEAN, CORRUPTED, METRIC, site=site)
    estimate = attribution_patching(model, CLEAN, CORRUPTED, METRIC, site=site)
    assert estimate.shape == exact.shape
    baseline = evaluate_metric(model, CORRUPTED, METRIC)
    effects = torch.stack([(exact - baseline).flatten(), (estimate - baseline).flatten()])
    correlation = torch.corrcoef(effects)[0, 1]
    # Measured with this metric: 0.76 (Llama residual stream, where swapping a whole token's
    # residual is far from a small change) to 1.0 (per-head outputs); 0.86-1.0 off the
    # residual stream.
    floor = 0.7 if site == "layers_output" else 0.8
    assert correlation > floor, f"{model.spec.name} {site}: correlation {float(correlation):.3f}"
    # Cells where clean and corrupted activations agree have no estimated effect.
    if site != "heads_output":
        torch.testing.assert_close(estimate[:, 0], baseline.expand(model.num_layers), atol=1e-6, rtol=0)


def test_head_selection_and_positions(llama):
    every = attribution_patching(llama, CLEAN, CORRUPTED, METRIC, site="heads_output")
    chosen = attribution_patching(llama, CLEAN, CORRUPTED, METRIC, site="heads_output", heads=[3, 1], layers=[1])
    torch.testing.assert_close(chosen, every[1:, [3, 1]])
    # Summing over positions: the estimate over all positions is the sum of per-position effects.
    baseline = evaluate_metric(llama, CORRUPTED, METRIC)
    per_position = [
        attribution_patching(llama, CLEAN, CORRUPTED, METRIC, site="heads_output", positions=[p]) - baseline
        for p in range(5)
    ]
    torch.testing.assert_close(sum(per_position) + baseline, every, atol=1e-5, rtol=1e-4)
