"""The meaning contract on a real sandwich-norm model, Gemma-3-270M, against plain transformers.

Gemma-3 normalises each sublayer's output again (``post_attention_layernorm``,
``post_feedforward_layernorm``) before adding it to the residual stream, so the raw module
outputs are not what the block adds. Every expected value here comes from hooks on the plain
HF model (``plain_gemma3``), never from nnterp.
"""

from __future__ import annotations

import nnsight
import pytest
import torch
from nnterp.interventions.decomposition import logit_attribution
from nnterp.interventions.patching import run_with_patches

pytestmark = pytest.mark.slow

PROMPT = "The capital of France is"
CORRUPTED = "The capital of Italy is"


def _hooked_layers(hf_model, inputs):
    """Per layer: (input, output, post-attention-norm output, post-feed-forward-norm output)."""
    layers = hf_model.model.layers
    seen: list[dict] = [{} for _ in layers]
    handles = []
    for index, layer in enumerate(layers):
        def on_layer(module, args, kwargs, output, index=index):
            seen[index]["in"] = args[0] if args else kwargs["hidden_states"]
            seen[index]["out"] = output[0] if isinstance(output, tuple) else output

        def on_norm(name, index=index):
            def hook(module, args, output):
                seen[index][name] = output
            return hook

        handles.append(layer.register_forward_hook(on_layer, with_kwargs=True))
        handles.append(layer.post_attention_layernorm.register_forward_hook(on_norm("attention")))
        handles.append(layer.post_feedforward_layernorm.register_forward_hook(on_norm("mlp")))
    try:
        with torch.no_grad():
            logits = hf_model(**inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen, logits


def _inputs(tokenizer, text):
    encoding = tokenizer(text, return_tensors="pt")
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}


def test_identity_holds_on_every_layer(gemma3, plain_gemma3):
    hf_model, tokenizer = plain_gemma3
    inputs = _inputs(tokenizer, PROMPT)
    seen, _ = _hooked_layers(hf_model, inputs)
    saved = []
    with torch.no_grad(), gemma3.trace(dict(inputs)):
        for layer in range(gemma3.num_layers):
            saved.append((nnsight.save(gemma3.attentions_output[layer]), nnsight.save(gemma3.mlps_output[layer])))
    assert gemma3.num_layers == 18
    for layer, (attention, mlp) in enumerate(saved):
        torch.testing.assert_close(attention, seen[layer]["attention"], rtol=0, atol=0)
        torch.testing.assert_close(mlp, seen[layer]["mlp"], rtol=0, atol=0)
        scale = float(seen[layer]["out"].abs().max())
        gap = float((seen[layer]["in"] + attention + mlp - seen[layer]["out"]).abs().max()) / scale
        assert gap < 1e-5, f"layer {layer}: relative gap {gap}"


def test_logit_attribution_total_is_the_logit(gemma3, plain_gemma3):
    hf_model, tokenizer = plain_gemma3
    inputs = _inputs(tokenizer, PROMPT)
    with torch.no_grad():
        logits = hf_model(**inputs).logits[0, -1]
    paris = tokenizer(" Paris", add_special_tokens=False)["input_ids"][0]
    the = tokenizer(" the", add_special_tokens=False)["input_ids"][0]
    dla = logit_attribution(gemma3, PROMPT, paris, per_head=True)
    torch.testing.assert_close(dla.total[0], logits[paris], rtol=1e-4, atol=1e-4)
    difference = logit_attribution(gemma3, PROMPT, paris, baseline=the)
    torch.testing.assert_close(difference.total[0], logits[paris] - logits[the], rtol=1e-4, atol=1e-4)
    # Every head's share through the frozen post-attention norm adds up to its layer's share.
    columns = [dla.labels.index(f"attn.{layer}") for layer in dla.head_layers]
    rebuilt = dla.head_contributions.sum(-1) + dla.attention_bias_contributions
    torch.testing.assert_close(rebuilt, dla.contributions[:, columns], rtol=1e-3, atol=1e-4)


def test_patching_an_attention_contribution_matches_a_hand_made_patch(gemma3, plain_gemma3):
    hf_model, tokenizer = plain_gemma3
    clean, corrupted = _inputs(tokenizer, PROMPT), _inputs(tokenizer, CORRUPTED)
    assert clean["input_ids"].shape == corrupted["input_ids"].shape
    layer = 9
    clean_seen, _ = _hooked_layers(hf_model, clean)
    clean_contribution = clean_seen[layer]["attention"]
    norm = hf_model.model.layers[layer].post_attention_layernorm
    handle = norm.register_forward_hook(lambda module, args, output: clean_contribution)
    try:
        with torch.no_grad():
            expected = hf_model(**corrupted).logits
    finally:
        handle.remove()
    with torch.no_grad(), gemma3.trace(CORRUPTED):
        unpatched = nnsight.save(gemma3.logits)
    patched = run_with_patches(gemma3, CORRUPTED, {f"attentions_output.{layer}": clean_contribution})
    torch.testing.assert_close(patched, expected, rtol=0, atol=0)
    assert not torch.allclose(unpatched, expected)
