"""Models sharded with a device map (accelerate's CPU and disk offload, the CPU stand-in for
``device_map="auto"`` across GPUs) and loaded in bf16: every site, accessor and intervention gives
what the plain, unsharded HF model computes, on the caller's device.

Ground truth: the same weights loaded without a device map, each prompt run alone, read with
plain forward hooks.
"""

from __future__ import annotations

import nnterp
import pytest
import torch
from nnterp.interventions import logit_lens
from nnterp.interventions.generation import steer_generate
from nnterp.nnsight_utils import get_token_activations
from nnterp.testing import tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM

PROMPTS = ["The capital of France is", "Hi there"]
LAYERS_PATH = {"llama": "model.layers", "gpt2": "transformer.h"}
FINAL_NORM = {"llama": "model.norm", "gpt2": "transformer.ln_f"}
DEVICE_MAPS = {
    "llama": {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
              "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"},
    "gpt2": {"transformer.wte": "cpu", "transformer.wpe": "cpu", "transformer.h.0": "disk",
             "transformer.h.1": "cpu", "transformer.ln_f": "cpu", "lm_head": "cpu"},
}


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def sharded(request, tmp_path_factory):
    kind = request.param
    folder = tmp_path_factory.mktemp(f"{kind}-weights")
    tiny_model(kind).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    plain = AutoModelForCausalLM.from_pretrained(folder).eval()
    model = nnterp.StandardizedTransformer(
        str(folder), device_map=DEVICE_MAPS[kind], offload_folder=str(folder / "offload")
    )
    layers = plain.get_submodule(LAYERS_PATH[kind])
    on_disk = [name for name, device in DEVICE_MAPS[kind].items() if device == "disk"]
    assert any(p.device.type == "meta" for p in model._module.get_submodule(on_disk[0]).parameters())
    return kind, plain, layers, model


def _alone(plain, layers, tokenizer, prompt):
    """Per layer (attention output, MLP output, layer output) and the logits, prompt run alone."""
    seen = {}
    handles = []
    for index, layer in enumerate(layers):
        attention = getattr(layer, "self_attn", None) or layer.attn
        for name, module in (("attn", attention), ("mlp", layer.mlp), ("out", layer)):
            def hook(_m, _a, output, key=(name, index)):
                seen[key] = output[0] if isinstance(output, tuple) else output
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = plain(**tokenizer(prompt, return_tensors="pt")).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def test_every_site_matches_the_unsharded_model(sharded):
    _kind, plain, layers, model = sharded
    read = {}
    with torch.no_grad(), model.trace(PROMPTS):
        for index in range(model.num_layers):
            read["attn", index] = model.attentions_output[index].save()
            read["mlp", index] = model.mlps_output[index].save()
            read["out", index] = model.layers_output[index].save()
        logits = model.logits.save()
    for row, prompt in enumerate(PROMPTS):
        expected, expected_logits = _alone(plain, layers, model.tokenizer, prompt)
        length = expected_logits.shape[1]
        for key, value in expected.items():
            assert read[key].device.type == "cpu"
            torch.testing.assert_close(read[key][row, -length:], value[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logits[row, -length:], expected_logits[0], rtol=1e-5, atol=1e-5)


def test_interventions_match_the_unsharded_model(sharded):
    kind, plain, layers, model = sharded
    lens = logit_lens(model, PROMPTS)
    activations = get_token_activations(model, PROMPTS)
    for row, prompt in enumerate(PROMPTS):
        expected, _ = _alone(plain, layers, model.tokenizer, prompt)
        for index in range(model.num_layers):
            torch.testing.assert_close(activations[index, row], expected["out", index][0, -1], rtol=1e-5, atol=1e-5)
        last = expected["out", model.num_layers - 1][0, -1]
        with torch.no_grad():
            probabilities = plain.lm_head(plain.get_submodule(FINAL_NORM[kind])(last)).softmax(-1)
        torch.testing.assert_close(lens[row, -1], probabilities, rtol=1e-5, atol=1e-6)

    vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0)) * 4
    out = steer_generate(model, PROMPTS, layers=0, steering_vector=vector, max_new_tokens=4)

    def add(_module, _args, output):
        return (output[0] + vector, *output[1:]) if isinstance(output, tuple) else output + vector

    handle = layers[0].register_forward_hook(add)
    try:
        encoded = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
        with torch.no_grad():
            expected_ids = plain.generate(**encoded, max_new_tokens=4, do_sample=False)
    finally:
        handle.remove()
    assert torch.equal(out.token_ids, expected_ids)


def test_bf16_sites_and_logit_lens_match_hf_in_bf16(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model = nnterp.StandardizedTransformer(str(tmp_path), dtype=torch.bfloat16)
    with torch.no_grad(), model.trace(PROMPTS[0]):
        hidden = model.layers_output[1].save()
        logits = model.logits.save()
    expected, expected_logits = _alone(plain, plain.model.layers, model.tokenizer, PROMPTS[0])
    assert hidden.dtype == torch.bfloat16 and logits.dtype == expected_logits.dtype
    assert torch.equal(hidden, expected["out", 1])
    assert torch.equal(logits, expected_logits)
    lens = logit_lens(model, PROMPTS[0])
    with torch.no_grad():
        reference = plain.lm_head(plain.model.norm(expected["out", 1][0, -1])).float().softmax(-1)
    torch.testing.assert_close(lens[0, -1].float(), reference, rtol=1e-2, atol=1e-3)


def test_bf16_attention_probabilities_load_and_match_hf():
    hf_model = tiny_model("llama").to(torch.bfloat16)
    model = nnterp.StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)
    with torch.no_grad(), model.trace(PROMPTS[0]):
        probabilities = model.attention_probabilities[1].save()
    with torch.no_grad():
        expected = hf_model(**model.tokenizer(PROMPTS[0], return_tensors="pt"), output_attentions=True).attentions[1]
    assert probabilities.dtype == torch.bfloat16
    assert torch.equal(probabilities, expected)
