"""`compute_gradients` against plain PyTorch autograd on the HF model with hooks."""

from __future__ import annotations

import pytest
import torch
from nnterp.errors import InvalidInputError
from nnterp.interventions.gradients import compute_gradients
from nnterp.interventions.metrics import logit_difference, token_logit

from .reference import encode, first, hooks, native

PROMPTS = ["The cat sat on the mat", "Hello world"]
CORRECT, WRONG = [17, 40], [9, 9]


def autograd_reference(model, hf_model, taps):
    """Gradients of the same metric by plain autograd: hooks keep each tapped tensor and
    ``retain_grad`` on it, then ``metric.backward()``."""
    kept = {}

    def keep(name):
        def hook(module, args, output=None):
            tensor = args[0] if output is None else first(output)
            tensor.retain_grad()
            kept[name] = tensor

        return hook

    handles = []
    for name, (module, side) in taps.items():
        if side == "input":
            handles.append(module.register_forward_pre_hook(keep(name)))
        else:
            handles.append(module.register_forward_hook(keep(name)))
    with hooks(*handles):
        logits = hf_model(**encode(model.tokenizer, PROMPTS)).logits
    metric = logit_difference(CORRECT, WRONG)(logits)
    metric.backward()
    grads = {name: tensor.grad.detach().clone() for name, tensor in kept.items()}
    hf_model.zero_grad(set_to_none=True)
    return metric.detach(), grads


def test_gradients_equal_plain_autograd(pair):
    model, hf_model = pair
    heads = model.num_heads
    taps = {
        "token_embeddings": (native(hf_model, "embed"), "output"),
        "heads_output.0": (native(hf_model, "o", 0), "input"),
        "mlps_input.0": (native(hf_model, "mlp", 0), "input"),
        "attentions_output.1": (native(hf_model, "attn", 1), "output"),
        "mlps_output.1": (native(hf_model, "mlp", 1), "output"),
    }
    for layer in range(model.num_layers):
        taps[f"layers_output.{layer}"] = (native(hf_model, "layer", layer), "output")
    expected_metric, expected = autograd_reference(model, hf_model, taps)

    sites = ["layers_output", "attentions_output.1", "mlps_output.1", "mlps_input.0", "heads_output.0",
             "token_embeddings", "layers_input.1"]
    result = compute_gradients(model, PROMPTS, logit_difference(CORRECT, WRONG), sites)

    torch.testing.assert_close(result.metric, expected_metric)
    for name, grad in expected.items():
        if name == "heads_output.0":
            grad = grad.view(*grad.shape[:-1], heads, -1)
        torch.testing.assert_close(result.gradients[name], grad, msg=name)
        assert result.gradients[name].abs().sum() > 0, name
    # The input of layer 1 is the output of layer 0: one tensor, one gradient.
    torch.testing.assert_close(result.gradients["layers_input.1"], expected["layers_output.0"])
    # Activations come back with their gradients.
    with model.trace(PROMPTS):
        h = model.layers_output[0].save()
    torch.testing.assert_close(result.activations["layers_output.0"], h)


def test_parameters_are_left_alone(llama):
    flags = [p.requires_grad for p in llama._module.parameters()]
    compute_gradients(llama, PROMPTS, token_logit(17), "layers_output.0")
    assert [p.requires_grad for p in llama._module.parameters()] == flags
    assert all(p.grad is None for p in llama._module.parameters())


def test_frozen_model_still_gets_activation_gradients():
    from .conftest import build

    model, hf_model = build("gpt2")
    hf_model.requires_grad_(False)
    result = compute_gradients(model, PROMPTS, token_logit(17), ["layers_output.0", "queries.1"])
    assert not any(p.requires_grad for p in hf_model.parameters())
    seq = encode(model.tokenizer, PROMPTS)["input_ids"].shape[1]
    assert result.gradients["queries.1"].shape == (2, seq, 4, 16)
    assert result.gradients["layers_output.0"].abs().sum() > 0
    # The gradient predicts the metric's change under a small move of the activation.
    h = result.activations["layers_output.0"]
    direction = torch.randn_like(h) * 1e-3
    with model.trace(PROMPTS):
        model.layers_output[0] = model.layers_output[0] + direction
        moved = token_logit(17)(model.logits).save()
    with model.trace(PROMPTS):
        base = token_logit(17)(model.logits).save()
    predicted = (result.gradients["layers_output.0"] * direction).sum()
    torch.testing.assert_close(moved - base, predicted, atol=2e-5, rtol=5e-2)


def test_positions_slice_the_gradients(llama):
    full = compute_gradients(llama, PROMPTS, token_logit(17), "layers_output.0")
    last = compute_gradients(llama, PROMPTS, token_logit(17), "layers_output.0", positions=-1)
    torch.testing.assert_close(last.gradients["layers_output.0"], full.gradients["layers_output.0"][:, -1])
    torch.testing.assert_close(last.activations["layers_output.0"], full.activations["layers_output.0"][:, -1])


def test_metric_must_be_scalar(llama):
    with pytest.raises(InvalidInputError, match="scalar"):
        compute_gradients(llama, PROMPTS, lambda logits: logits[:, -1, 5], "layers_output.0")


def test_per_head_results_get_the_output_projections_gradient(pair):
    model, hf_model = pair
    o_proj = native(hf_model, "o", 1)
    taps = {"o_in": (o_proj, "input"), "o_out": (o_proj, "output")}
    _, expected = autograd_reference(model, hf_model, taps)
    result = compute_gradients(model, PROMPTS, logit_difference(CORRECT, WRONG), "heads_result.1")
    heads = model.num_heads
    gradient = result.gradients["heads_result.1"]
    assert gradient.shape == (*expected["o_out"].shape[:-1], heads, expected["o_out"].shape[-1])
    for head in range(heads):  # o_proj's output is the heads' sum: each head gets its gradient
        torch.testing.assert_close(gradient[:, :, head], expected["o_out"])
    # The activations: each head's slice of o_proj's input through its columns of the weight.
    hidden_in = _o_proj_input(model, hf_model, o_proj)
    # (in, out) for every output projection: nn.Linear stores (out, in), GPT-2's Conv1D (in, out).
    weight = o_proj.weight.detach() if type(o_proj).__name__ == "Conv1D" else o_proj.weight.detach().T
    head_dim = weight.shape[0] // heads
    manual = torch.stack(
        [hidden_in[..., h * head_dim : (h + 1) * head_dim] @ weight[h * head_dim : (h + 1) * head_dim] for h in range(heads)],
        dim=-2,
    )
    torch.testing.assert_close(result.activations["heads_result.1"], manual, rtol=1e-5, atol=1e-6)


def _o_proj_input(model, hf_model, o_proj):
    seen = []
    handle = o_proj.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with hooks(handle), torch.no_grad():
        hf_model(**encode(model.tokenizer, PROMPTS))
    return seen[0]


def test_read_only_sites_have_no_gradient(llama):
    with pytest.raises(InvalidInputError, match="read-only"):
        compute_gradients(llama, PROMPTS, token_logit(17), "ln_final_scale")
