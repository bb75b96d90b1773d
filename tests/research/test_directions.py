"""Attribution toward any direction, per-prompt positions, and stacks of residual states
(`accumulated_resid`, `apply_ln_to_stack`), against hand computations on hooked HF runs."""

from __future__ import annotations

import pytest
import torch
from nnterp.errors import InvalidInputError
from nnterp.interventions import (
    accumulated_resid,
    apply_ln_to_stack,
    decompose_residual,
    freeze_final_norm,
    logit_attribution,
)

from .reference import capture, encode, native

PROMPTS = ["The cat sat on the mat", "Hello world"]


def hooked(model, hf_model):
    """Every layer's input and output, the final norm's output and the logits, by HF hooks."""
    taps = {
        ("out", layer): (native(hf_model, "layer", layer), "output")
        for layer in range(model.num_layers)
    }
    taps[("in", 0)] = (native(hf_model, "layer", 0), "input")
    taps["normed"] = (native(hf_model, "norm"), "output")
    inputs = encode(model.tokenizer, PROMPTS)
    seen, logits = capture(hf_model, inputs, taps)
    return seen, logits, inputs


def columns(inputs, positions):
    """Padded-batch columns of per-prompt positions (left padding, counted per prompt)."""
    seq = inputs["input_ids"].shape[1]
    lengths = inputs["attention_mask"].sum(-1).tolist()
    return [
        [seq - lengths[row] + p if p >= 0 else seq + p for p in row_positions]
        for row, row_positions in enumerate(positions)
    ]


def by_hand_norm(norm, residual):
    """(centre, scale, offset) of the final norm frozen at ``residual``, written out."""
    if isinstance(norm, torch.nn.LayerNorm):

        def centre(x):
            return x - x.mean(-1, keepdim=True)

        scale = (residual.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        return centre, scale, norm.bias.detach()
    scale = (residual.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
    return (lambda x: x), scale, torch.zeros(residual.shape[-1])


def test_attribution_toward_a_direction(pair):
    model, hf_model = pair
    seen, _, _ = hooked(model, hf_model)
    torch.manual_seed(1)
    direction = torch.randn(model.hidden_size)
    dla = logit_attribution(model, PROMPTS, direction=direction, per_head=True)
    parts = decompose_residual(model, PROMPTS, per_head=True)
    norm = native(hf_model, "norm")
    centre, scale, offset = by_hand_norm(
        norm, seen[("out", model.num_layers - 1)][:, -1]
    )
    with torch.no_grad():
        expected = ((centre(parts.components) / scale * norm.weight) @ direction).T
    torch.testing.assert_close(dla.contributions, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        dla.bias, (offset @ direction).expand(2), atol=1e-6, rtol=1e-5
    )
    # The whole: the final norm's real output (hooked) along the direction.
    along = seen["normed"][:, -1] @ direction
    torch.testing.assert_close(dla.logits, along, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dla.total, along, atol=1e-4, rtol=1e-4)
    # Heads split the attention shares, as for logits.
    rebuilt = dla.head_contributions.sum(-1) + dla.attention_bias_contributions
    torch.testing.assert_close(
        rebuilt, dla.contributions[:, 1::2], atol=1e-5, rtol=1e-4
    )


def test_attribution_without_the_final_norm(pair):
    model, hf_model = pair
    seen, _, _ = hooked(model, hf_model)
    direction = torch.linspace(-1, 1, model.hidden_size)
    dla = logit_attribution(model, PROMPTS, direction=direction, apply_final_norm=False)
    parts = decompose_residual(model, PROMPTS)
    torch.testing.assert_close(
        dla.contributions, (parts.components @ direction).T, atol=1e-5, rtol=1e-5
    )
    assert torch.equal(dla.bias, torch.zeros(2))
    residual = seen[("out", model.num_layers - 1)][:, -1]
    torch.testing.assert_close(dla.logits, residual @ direction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dla.total, residual @ direction, atol=1e-4, rtol=1e-4)


def test_per_prompt_directions_and_positions(pair):
    model, hf_model = pair
    seen, logits, inputs = hooked(model, hf_model)
    torch.manual_seed(2)
    directions = torch.randn(2, model.hidden_size)
    # One position per prompt: prompt 0 at its 3rd token, prompt 1 at its last.
    one_each = logit_attribution(model, PROMPTS, direction=directions, position=[2, -1])
    cols = [c[0] for c in columns(inputs, [[2], [-1]])]
    normed = seen["normed"][torch.arange(2), cols]
    torch.testing.assert_close(
        one_each.logits, (normed * directions).sum(-1), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(one_each.total, one_each.logits, atol=1e-4, rtol=1e-4)
    assert one_each.contributions.shape == (2, 1 + 2 * model.num_layers)
    # One list per prompt: a position dimension after the batch.
    lists = [[0, -1], [1, -2]]
    several = logit_attribution(model, PROMPTS, direction=directions, position=lists)
    assert several.contributions.shape == (2, 2, 1 + 2 * model.num_layers)
    for row, row_columns in enumerate(columns(inputs, lists)):
        expected = seen["normed"][row, row_columns] @ directions[row]
        torch.testing.assert_close(several.logits[row], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(several.total[row], expected, atol=1e-4, rtol=1e-4)
    assert several.as_dict(1, 1)["bias"] == pytest.approx(float(several.bias[1, 1]))
    # Token ids at per-prompt positions: the model's logits there.
    tokens = logit_attribution(model, PROMPTS, [17, 40], baseline=9, position=lists)
    for row, row_columns in enumerate(columns(inputs, lists)):
        expected = logits[row, row_columns, [17, 40][row]] - logits[row, row_columns, 9]
        torch.testing.assert_close(tokens.total[row], expected, atol=1e-4, rtol=1e-4)
    parts = decompose_residual(model, PROMPTS, position=lists)
    assert parts.components.shape == (1 + 2 * model.num_layers, 2, 2, model.hidden_size)
    for row, row_columns in enumerate(columns(inputs, lists)):
        torch.testing.assert_close(
            parts.residual[row], seen[("out", model.num_layers - 1)][row, row_columns]
        )
    torch.testing.assert_close(
        parts.components.sum(0), parts.residual, atol=1e-5, rtol=1e-5
    )


def test_direction_errors(llama):
    hidden = llama.hidden_size
    with pytest.raises(InvalidInputError, match=f"give a \\({hidden},\\) vector"):
        logit_attribution(llama, PROMPTS, direction=torch.ones(hidden + 1))
    with pytest.raises(InvalidInputError, match="3 rows for 2 prompts"):
        logit_attribution(llama, PROMPTS, direction=torch.ones(3, hidden))
    bad = torch.ones(hidden)
    bad[5] = float("nan")
    with pytest.raises(InvalidInputError, match="NaN"):
        logit_attribution(llama, PROMPTS, direction=bad)
    with pytest.raises(InvalidInputError, match="either target"):
        logit_attribution(llama, PROMPTS)
    with pytest.raises(InvalidInputError, match="either target"):
        logit_attribution(llama, PROMPTS, 3, direction=torch.ones(hidden))
    with pytest.raises(InvalidInputError, match="baseline"):
        logit_attribution(llama, PROMPTS, baseline=4, direction=torch.ones(hidden))
    with pytest.raises(InvalidInputError, match="3 positions for 2 prompts"):
        logit_attribution(llama, PROMPTS, 3, position=[0, 1, 2])
    with pytest.raises(InvalidInputError, match="same number"):
        logit_attribution(llama, PROMPTS, 3, position=[[0], [1, 2]])


def test_accumulated_resid_equals_hooked_states(pair):
    model, hf_model = pair
    seen, _, _ = hooked(model, hf_model)
    stack, labels = accumulated_resid(model, PROMPTS, return_labels=True)
    assert labels == ["layers_input.0"] + [
        f"layers_output.{layer}" for layer in range(model.num_layers)
    ]
    expected = torch.stack(
        [seen[("in", 0)]] + [seen[("out", layer)] for layer in range(model.num_layers)]
    )
    torch.testing.assert_close(stack, expected)
    last = accumulated_resid(model, PROMPTS, positions=-1)
    assert last.shape == (model.num_layers + 1, 2, model.hidden_size)
    torch.testing.assert_close(last, expected[:, :, -1])


def test_apply_ln_to_stack_gives_the_logits_and_the_hand_formula(pair):
    model, hf_model = pair
    seen, logits, _ = hooked(model, hf_model)
    stack = accumulated_resid(model, PROMPTS)
    normed = apply_ln_to_stack(model, stack)
    unembedding = hf_model.get_output_embeddings().weight.detach()
    # The last state through the frozen norm is the final norm's output; times W_U, the logits.
    torch.testing.assert_close(normed[-1], seen["normed"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(normed[-1] @ unembedding.T, logits, atol=1e-4, rtol=1e-4)
    # Earlier states: centred, over the *final* residual's scale, times the weight, plus the bias.
    norm = native(hf_model, "norm")
    centre, scale, offset = by_hand_norm(norm, stack[-1])
    with torch.no_grad():
        expected = centre(stack) / scale * norm.weight + offset
    torch.testing.assert_close(normed, expected, atol=1e-5, rtol=1e-5)
    # Recomputed: the norm module on each state, its own scale (a logit lens).
    with torch.no_grad():
        lens = norm(stack)
    torch.testing.assert_close(
        apply_ln_to_stack(model, stack, frozen=False), lens, atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(
        apply_ln_to_stack(model, stack, frozen=False, include_bias=False),
        lens - offset,
        atol=1e-6,
        rtol=1e-5,
    )


def test_apply_ln_to_a_stack_of_components_sums_to_the_normed_residual(pair):
    model, hf_model = pair
    seen, logits, _ = hooked(model, hf_model)
    parts = decompose_residual(model, PROMPTS, per_head=True)
    shares = apply_ln_to_stack(
        model, parts.components, residual=parts.residual, include_bias=False
    )
    offset = freeze_final_norm(model, parts.residual).offset
    torch.testing.assert_close(
        shares.sum(0) + offset, seen["normed"][:, -1], atol=1e-5, rtol=1e-5
    )
    # Per head too: (layers, heads, batch, hidden) against the same final residual.
    heads = apply_ln_to_stack(
        model, parts.head_components, residual=parts.residual, include_bias=False
    )
    biases = apply_ln_to_stack(
        model, parts.attention_biases, residual=parts.residual, include_bias=False
    )
    for index, layer in enumerate(parts.head_layers):
        attention = shares[parts.labels.index(f"attn.{layer}")]
        torch.testing.assert_close(
            heads[index].sum(0) + biases[index], attention, atol=1e-5, rtol=1e-5
        )
    # And through the unembedding, the shares are direct logit attribution.
    unembedding = hf_model.get_output_embeddings().weight.detach()
    dla = logit_attribution(model, PROMPTS, [17, 40])
    torch.testing.assert_close(
        dla.contributions,
        (shares * unembedding[[17, 40]]).sum(-1).T,
        atol=1e-5,
        rtol=1e-4,
    )
    torch.testing.assert_close(
        dla.total, logits[torch.arange(2), -1, [17, 40]], atol=1e-4, rtol=1e-4
    )


def test_stack_errors(llama):
    stack = accumulated_resid(llama, PROMPTS, positions=-1)
    with pytest.raises(InvalidInputError, match="hidden size"):
        apply_ln_to_stack(llama, stack[..., :-1])
    with pytest.raises(InvalidInputError, match="shaped like one element"):
        apply_ln_to_stack(llama, stack, residual=stack[-1, :1])
    with pytest.raises(InvalidInputError, match="frozen=False"):
        apply_ln_to_stack(llama, stack, residual=stack[-1], frozen=False)
    bad = stack.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(InvalidInputError, match="NaN/inf"):
        apply_ln_to_stack(llama, bad)
