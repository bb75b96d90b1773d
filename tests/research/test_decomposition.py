"""Residual decomposition and direct logit attribution: the parts sum to the direct
computation, and each part equals the documented formula computed by hand."""

from __future__ import annotations

import pytest
import torch
from nnterp.errors import InvalidInputError
from nnterp.interventions.decomposition import (
    decompose_residual,
    freeze_final_norm,
    logit_attribution,
)

from .reference import capture, encode, native

PROMPTS = ["The cat sat on the mat", "Hello world"]
TARGET, BASELINE = [17, 40], 9


def test_components_sum_to_the_final_residual(pair):
    model, hf_model = pair
    last = native(hf_model, "layer", model.num_layers - 1)
    seen, _ = capture(hf_model, encode(model.tokenizer, PROMPTS), {"residual": (last, "output")})
    parts = decompose_residual(model, PROMPTS, per_head=True)
    assert parts.labels == ["embed", "attn.0", "mlp.0", "attn.1", "mlp.1"]
    assert parts.components.shape == (5, 2, model.hidden_size)
    torch.testing.assert_close(parts.residual, seen["residual"][:, -1])
    torch.testing.assert_close(parts.components.sum(0), parts.residual, atol=1e-5, rtol=1e-5)
    # Per head: every head's share plus the output-projection bias is the attention output.
    assert parts.head_components.shape == (2, model.num_heads, 2, model.hidden_size)
    for layer in range(2):
        attention = parts.components[parts.labels.index(f"attn.{layer}")]
        rebuilt = parts.head_components[layer].sum(0) + parts.attention_biases[layer]
        torch.testing.assert_close(rebuilt, attention, atol=1e-5, rtol=1e-5)


def test_logit_attribution_sums_to_the_logits(pair):
    model, hf_model = pair
    with torch.no_grad():
        logits = hf_model(**encode(model.tokenizer, PROMPTS)).logits[:, -1]
    rows = torch.arange(2)
    single = logit_attribution(model, PROMPTS, TARGET, per_head=True)
    torch.testing.assert_close(single.total, logits[rows, TARGET], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(single.logits, logits[rows, TARGET])
    torch.testing.assert_close(single.contributions.sum(-1) + single.bias, single.total)

    difference = logit_attribution(model, PROMPTS, TARGET, BASELINE, per_head=True)
    expected = logits[rows, TARGET] - logits[rows, BASELINE]
    torch.testing.assert_close(difference.total, expected, atol=1e-4, rtol=1e-4)
    attention = difference.contributions[:, 1::2]
    rebuilt = difference.head_contributions.sum(-1) + difference.attention_bias_contributions
    torch.testing.assert_close(rebuilt, attention, atol=1e-5, rtol=1e-4)
    assert difference.as_dict(1)["bias"] == pytest.approx(float(difference.bias[1]))


def test_each_contribution_is_the_documented_formula(pair):
    # Hand computation: the final norm's scale is that of the full residual stream; each
    # component is centred (LayerNorm) or not (RMSNorm), divided by it, multiplied by the
    # norm's weight and dotted with the unembedding row.
    model, hf_model = pair
    parts = decompose_residual(model, PROMPTS)
    dla = logit_attribution(model, PROMPTS, TARGET)
    norm = native(hf_model, "norm")
    residual = parts.residual
    if isinstance(norm, torch.nn.LayerNorm):
        centre = lambda x: x - x.mean(-1, keepdim=True)
        scale = (residual.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        offset = norm.bias
    else:
        centre = lambda x: x
        scale = (residual.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
        offset = torch.zeros(model.hidden_size)
    unembedding = hf_model.get_output_embeddings().weight[TARGET]
    with torch.no_grad():
        by_hand = ((centre(parts.components) / scale) * norm.weight * unembedding).sum(-1).T
        bias = (offset * unembedding).sum(-1)
    torch.testing.assert_close(dla.contributions, by_hand, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dla.bias, bias, atol=1e-5, rtol=1e-4)
    frozen = freeze_final_norm(model, residual)
    assert frozen.centered is isinstance(norm, torch.nn.LayerNorm)


def test_bad_arguments(llama):
    with pytest.raises(InvalidInputError, match="per_head"):
        decompose_residual(llama, PROMPTS, split="layer", per_head=True)
    with pytest.raises(InvalidInputError, match="token ids"):
        logit_attribution(llama, PROMPTS, 100_000)
    with pytest.raises(InvalidInputError, match="one per prompt"):
        logit_attribution(llama, PROMPTS, [1, 2, 3])
    with pytest.raises(InvalidInputError, match="split"):
        decompose_residual(llama, PROMPTS, split="heads")
