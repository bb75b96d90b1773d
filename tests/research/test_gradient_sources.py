"""Gradients of sites whose value is computed from the forward's tensor rather than being it:
a contribution minus an in-module residual (BLOOM), times a branch scale (Granite), streams
packed flat (Qwen4-Exp), and views that drop prepended positions (CPM-Ant). Each is compared
with plain autograd on the HF model, through tensors kept by forward hooks.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.interventions.gradients import compute_gradients
from nnterp.testing import tiny_model, tiny_tokenizer

from tests.research.reference import first, hooks

PROMPTS = ["The capital of France is", "Hello world"]


def _metric(logits: torch.Tensor) -> torch.Tensor:
    return logits[:, -1, 5].sum()


def _load(model_type: str) -> tuple[torch.nn.Module, StandardizedTransformer]:
    hf = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf, tokenizer=tiny_tokenizer(), enable_attention_probs=True)
    return hf, model


def _autograd(hf: torch.nn.Module, model: StandardizedTransformer, modules: dict[str, torch.nn.Module], side: str = "output") -> dict[str, torch.Tensor]:
    """The metric's gradient at each module's hidden-state output (or first input), plain autograd."""
    kept: dict[str, torch.Tensor] = {}

    def keeper(name: str):
        def keep_output(module, args, output):
            first(output).retain_grad()
            kept[name] = first(output)

        def keep_input(module, args):
            args[0].retain_grad()
            kept[name] = args[0]

        return keep_output if side == "output" else keep_input

    handles = [
        module.register_forward_hook(keeper(name)) if side == "output" else module.register_forward_pre_hook(keeper(name))
        for name, module in modules.items()
    ]
    batch = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if model.spec.position_ids_from_mask:
        inputs["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with hooks(*handles):
        _metric(hf(**inputs).logits).backward()
    hf.zero_grad(set_to_none=True)
    return {name: tensor.grad for name, tensor in kept.items()}


def test_a_contribution_minus_an_in_module_residual_gets_the_output_gradient():
    # BLOOM's attention returns its output plus the residual it is given.
    hf, model = _load("bloom")
    expected = _autograd(hf, model, {"attention": hf.transformer.h[0].self_attention, "mlp": hf.transformer.h[1].mlp})
    result = compute_gradients(model, PROMPTS, _metric, ["attentions_output.0", "mlps_output.1"])
    torch.testing.assert_close(result.gradients["attentions_output.0"], expected["attention"])
    torch.testing.assert_close(result.gradients["mlps_output.1"], expected["mlp"])


def test_a_scaled_branch_gets_the_output_gradient_over_the_scale():
    # Granite adds residual_multiplier * attention output: the contribution's gradient is the
    # output's divided by that scale.
    hf, model = _load("granite")
    scale = hf.config.residual_multiplier
    assert scale != 1
    expected = _autograd(hf, model, {"attention": hf.model.layers[0].self_attn})
    result = compute_gradients(model, PROMPTS, _metric, "attentions_output.0")
    torch.testing.assert_close(result.gradients["attentions_output.0"], expected["attention"] / scale)


def test_flattened_streams_get_the_block_output_gradient_per_stream():
    hf, model = _load("qwen4_exp")
    streams = hf.config.hc_count
    expected = _autograd(hf, model, {"block": hf.model.layers[0]})
    result = compute_gradients(model, PROMPTS, _metric, ["streams_output.0", "streams_input.1"])
    per_stream = expected["block"].unflatten(-1, (streams, -1))
    torch.testing.assert_close(result.gradients["streams_output.0"], per_stream)
    torch.testing.assert_close(result.gradients["streams_input.1"], per_stream)


def test_views_without_the_prepended_positions_get_their_slice_of_the_gradient():
    hf, model = _load("cpmant")
    prompt = hf.config.prompt_length
    block = hf.cpmant.encoder.layers[0]
    outputs = _autograd(hf, model, {"mlp": block.ffn.ffn, "o_proj": hf.cpmant.encoder.layers[1].self_att.self_attention.attention_out})
    inputs = _autograd(hf, model, {"mid": block.ffn}, side="input")
    result = compute_gradients(model, PROMPTS, _metric, ["layers_mid.0", "mlps_output.0", "heads_result.1"])
    torch.testing.assert_close(result.gradients["layers_mid.0"], inputs["mid"][:, prompt:])
    torch.testing.assert_close(result.gradients["mlps_output.0"], outputs["mlp"][:, prompt:])
    heads = result.gradients["heads_result.1"]
    assert heads.shape == result.activations["heads_result.1"].shape
    for head in range(model.num_heads):
        torch.testing.assert_close(heads[:, :, head], outputs["o_proj"][:, prompt:])


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_plain_layer_sites_keep_their_gradients(model_type):
    hf, model = _load(model_type)
    blocks = hf.get_submodule(model.paths["layers"])
    expected = _autograd(hf, model, {"out": blocks[0]})
    result = compute_gradients(model, PROMPTS, _metric, ["layers_output.0", "layers_input.1"])
    torch.testing.assert_close(result.gradients["layers_output.0"], expected["out"])
    torch.testing.assert_close(result.gradients["layers_input.1"], expected["out"])
