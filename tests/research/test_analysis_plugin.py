"""The analyses are registered as named interventions and run in the CLI's calling form."""

from __future__ import annotations

import pytest
import torch
from nnterp.errors import InvalidInputError
from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.decomposition import logit_attribution
from nnterp.interventions.metrics import logit_difference
from nnterp.interventions.patching import activation_patching
from nnterp.plugins import get_registry

PAIR = ["The capital of France is", "The capital of Spain is"]
NAMES = ["activation_patching", "head_patching", "attribution_patching", "direct_logit_attribution"]


def test_registered_by_the_analysis_plugin():
    registry = get_registry()
    for name in NAMES:
        intervention = registry.interventions[name]
        assert intervention.plugin.name == "interventions-analysis"
        assert intervention.description
        assert intervention.render is not None


def _top(model, prompt):
    with model.trace(prompt):
        top = model.logits[0, -1].argmax().save()
    return int(top)


def test_cli_form_of_patching_uses_the_top_tokens_logit_difference(llama):
    registry = get_registry()
    metric = logit_difference(_top(llama, PAIR[0]), _top(llama, PAIR[1]))
    grid = registry.interventions["activation_patching"].function(llama, PAIR)
    torch.testing.assert_close(grid, activation_patching(llama, PAIR[:1], PAIR[1:], metric))
    estimate = registry.interventions["attribution_patching"].function(llama, PAIR)
    torch.testing.assert_close(estimate, attribution_patching(llama, PAIR[:1], PAIR[1:], metric))
    text = registry.interventions["activation_patching"].render(llama, PAIR, grid)
    lines = text.splitlines()
    first_token = llama.tokenizer.decode(llama.tokenizer(PAIR[0])["input_ids"][0])
    assert lines[1].split()[0] == "layer" and f"0 {first_token!r}" in lines[1]  # columns: position, token
    for layer in range(llama.num_layers):  # rows under the header and its rule: one per layer
        assert lines[3 + layer].split() == [str(layer), *(f"{value:+.3f}" for value in grid[layer].tolist())]
    with pytest.raises(InvalidInputError, match="clean prompts then"):
        registry.interventions["head_patching"].function(llama, PAIR[:1])


def test_cli_form_of_logit_attribution(llama):
    intervention = get_registry().interventions["direct_logit_attribution"]
    result = intervention.function(llama, PAIR[:1])
    expected = logit_attribution(llama, PAIR[:1], _top(llama, PAIR[0]))
    torch.testing.assert_close(result.contributions, expected.contributions)
    text = intervention.render(llama, PAIR[:1], result, top_k=2)
    lines = text.splitlines()
    assert lines[0] == f"{PAIR[0]!r}: logit {float(expected.total[0]):.3f}"
    strongest = expected.labels[int(expected.contributions[0].abs().argmax())]
    assert lines[1].split(":")[0].strip() == strongest
    assert len(lines) == 3
