"""Vision-language models: the language model inside is standardized and traced with images.

For each family of the tiny vision kit: ``StandardizedTransformer(vlm, processor=processor)``
loads (load-time validation included); a trace of text with images, run through the processor
by nnterp, gives exactly what the plain HF model computes on the processor's own encoding, read
with forward hooks (every layer's output, each sublayer's contribution, the logits); the residual
identity holds; each prompt of the left-padded batch equals that prompt run alone; the vision
tower's blocks are ``model.vision_layers``.
"""

from __future__ import annotations

import pytest
import torch
import nnterp
from nnterp.testing.tiny_vision import tiny_vision_inputs, tiny_vision_model, tiny_vision_request

#: Families whose language model nnterp standardizes (the spec of their class says where).
KINDS = ["llava", "llava_next", "vipllava", "qwen2_vl", "qwen2_5_vl", "qwen3_vl", "gemma3", "paligemma",
         "idefics2", "idefics3", "aya_vision", "internvl", "llava_onevision", "deepseek_vl"]


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _hooked(hf_model, model, encoding):
    """Per layer: layer output, attention output, MLP output (raw module outputs) and the logits."""
    layers = hf_model.get_submodule(model.paths["layers"])
    seen = {}
    handles = []
    for index, layer in enumerate(layers):
        for name, module in (("out", layer), ("attn", layer.get_submodule(model.paths["self_attn"])),
                             ("mlp", layer.get_submodule(model.paths["mlp"]))):
            handles.append(module.register_forward_hook(
                lambda _m, _a, output, key=(name, index): seen.__setitem__(key, _first(output).detach())))
    try:
        with torch.no_grad():
            logits = hf_model(**encoding).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


@pytest.fixture(scope="module", params=KINDS)
def vlm(request):
    hf_model, processor = tiny_vision_model(request.param)
    model = nnterp.StandardizedTransformer(hf_model, processor=processor)
    return request.param, hf_model, processor, model


def test_traced_with_images_equals_the_plain_model(vlm):
    kind, hf_model, processor, model = vlm
    encoding = tiny_vision_inputs(kind, processor)
    texts, images = tiny_vision_request(kind)
    expected, expected_logits = _hooked(hf_model, model, encoding)
    read = {}
    with torch.no_grad(), model.trace(text=texts, images=images):
        for layer in range(model.num_layers):
            read["layer_in", layer] = model.layers_input[layer].save()
            read["attn", layer] = model.attentions_output[layer].save()
            read["mlp", layer] = model.mlps_output[layer].save()
            read["out", layer] = model.layers_output[layer].save()
        logits = model.logits.save()
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=0)
    for layer in range(model.num_layers):
        torch.testing.assert_close(read["out", layer], expected["out", layer], rtol=0, atol=0)
        # The residual identity, with what nnterp reads as each sublayer's contribution.
        total = read["layer_in", layer] + read["attn", layer] + read["mlp", layer]
        torch.testing.assert_close(total, read["out", layer], rtol=1e-4, atol=1e-5)
    assert len(model.vision_layers) == len(hf_model.get_submodule(model.paths["vision_layers"]))


def test_each_prompt_of_a_batch_equals_it_alone(vlm):
    kind, _hf_model, processor, model = vlm
    texts, images = tiny_vision_request(kind)
    with torch.no_grad(), model.trace(text=texts, images=images):
        batch = model.layers_output[model.num_layers - 1].save()
    for row, (text, image) in enumerate(zip(texts, images)):
        with torch.no_grad(), model.trace(text=[text], images=[image]):
            alone = model.layers_output[model.num_layers - 1].save()
        length = alone.shape[1]
        torch.testing.assert_close(batch[row, -length:], alone[0], rtol=1e-4, atol=1e-5)


def test_a_vision_language_checkpoint_loads_with_its_processor(tmp_path):
    hf_model, processor = tiny_vision_model("llava")
    hf_model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model = nnterp.StandardizedTransformer(str(tmp_path))
    assert type(model._module).__name__ == "LlavaForConditionalGeneration"
    assert type(model.processor).__name__ == "LlavaProcessor"
    texts, images = tiny_vision_request("llava")
    encoding = tiny_vision_inputs("llava", processor)
    _, expected_logits = _hooked(hf_model, model, encoding)
    with torch.no_grad(), model.trace(text=texts, images=images):
        logits = model.logits.save()
    # Real tokens only: the checkpoint loads with SDPA attention, the kit's model is eager, and
    # the two fill fully masked (padding) rows differently.
    real = encoding["attention_mask"].bool()
    torch.testing.assert_close(logits[real], expected_logits[real], rtol=1e-4, atol=1e-5)
