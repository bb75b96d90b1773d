"""Per-head accessors (queries, keys, values, rotated q/k, heads_output) against plain HF hooks."""

from __future__ import annotations

import importlib

import pytest
import torch
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.heads import attention_layout, project_heads

from .reference import (
    NATIVE,
    capture,
    encode,
    family,
    native,
    patched_logits,
    qkv_from_native,
)

PROMPTS = ["The cat sat on the mat", "Hello world"]
LAYER = 1


def test_layout_reads_head_counts_from_weights(pair):
    model, hf_model = pair
    layout = attention_layout(model)
    config = hf_model.config
    heads = config.num_attention_heads if hasattr(config, "num_attention_heads") else config.n_head
    assert layout.num_heads == heads == 4
    assert layout.head_dim == 16
    # Tiny Llama uses grouped-query attention (2 key/value heads); GPT-2 and GPT-NeoX don't.
    assert layout.num_kv_heads == (2 if family(hf_model) == "llama" else 4)


def test_qkv_and_heads_output_equal_native_projections(pair):
    model, hf_model = pair
    layout = attention_layout(model)
    names = NATIVE[family(hf_model)]
    taps = {"z": (native(hf_model, "o", LAYER), "input"), "attn": (native(hf_model, "attn", LAYER), "output")}
    for part in ("q", "k", "v", "fused"):
        if part in names:
            taps[part] = (native(hf_model, part, LAYER), "output")
    seen, logits = capture(hf_model, encode(model.tokenizer, PROMPTS), taps)
    expected = qkv_from_native(hf_model, seen, layout.num_heads, layout.num_kv_heads)

    with model.trace(PROMPTS):
        q = model.queries[LAYER].save()
        k = model.keys[LAYER].save()
        v = model.values[LAYER].save()
        z = model.heads_output[LAYER].save()
        out = model.attentions_output[LAYER].save()
        traced_logits = model.logits.save()

    seq = encode(model.tokenizer, PROMPTS)["input_ids"].shape[1]
    assert q.shape == (2, seq, layout.num_heads, 16)
    assert k.shape == v.shape == (2, seq, layout.num_kv_heads, 16)
    torch.testing.assert_close(q, expected["q"])
    torch.testing.assert_close(k, expected["k"])
    torch.testing.assert_close(v, expected["v"])
    torch.testing.assert_close(z, seen["z"].view(2, seq, layout.num_heads, 16))
    torch.testing.assert_close(traced_logits, logits)
    # Heads concatenated and projected by o_proj give the attention output...
    o_proj = native(hf_model, "o", LAYER)
    torch.testing.assert_close(o_proj(z.flatten(-2)), out)
    torch.testing.assert_close(out, seen["attn"])
    # ...and so do the per-head shares plus the bias.
    per_head, bias = project_heads(model, LAYER, z)
    assert per_head.shape == (2, seq, layout.num_heads, model.hidden_size)
    torch.testing.assert_close(per_head.sum(-2) + bias, out, atol=1e-5, rtol=1e-5)
    # Head 2's columns of the projection (GPT-2's Conv1D stores the weight transposed).
    rows = o_proj.weight[32:48] if family(hf_model) == "gpt2" else o_proj.weight[:, 32:48].T
    by_hand = z[:, :, 2] @ rows
    torch.testing.assert_close(per_head[:, :, 2], by_hand, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gpt_neox"])
def test_rotated_queries_and_keys_equal_hf_rotary(model_type):
    from .conftest import shared

    model, hf_model = shared(model_type)
    module = importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}")
    attention = native(hf_model, "attn", LAYER)
    captured = {}
    handle = attention.register_forward_pre_hook(
        lambda m, args, kwargs: captured.update(cos_sin=kwargs["position_embeddings"]), with_kwargs=True
    )
    with model.trace(PROMPTS):
        q = model.queries[LAYER].save()
        k = model.keys[LAYER].save()
        q_rot = model.queries_rotated[LAYER].save()
        k_rot = model.keys_rotated[LAYER].save()
    handle.remove()
    with torch.no_grad():
        hf_model(**encode(model.tokenizer, PROMPTS))
    cos, sin = captured["cos_sin"]
    expected_q, expected_k = module.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
    torch.testing.assert_close(q_rot, expected_q.transpose(1, 2))
    torch.testing.assert_close(k_rot, expected_k.transpose(1, 2))
    assert not torch.allclose(q_rot, q)  # rotation really happened


def test_zeroing_a_head_matches_native_hook(pair):
    model, hf_model = pair
    layout = attention_layout(model)
    head = 1
    with model.trace(PROMPTS):
        z = model.heads_output[0].clone()
        z[:, :, head] = 0
        model.heads_output[0] = z
        logits = model.logits.save()

    def zero_head(x):
        x = x.clone()
        x[..., head * layout.head_dim : (head + 1) * layout.head_dim] = 0
        return x

    expected = patched_logits(hf_model, encode(model.tokenizer, PROMPTS), native(hf_model, "o", 0), "input", zero_head)
    torch.testing.assert_close(logits, expected)


def test_assigning_values_matches_native_hook(pair):
    model, hf_model = pair
    layout = attention_layout(model)
    with model.trace(PROMPTS):
        model.values[0] = model.values[0] * 3
        logits = model.logits.save()

    names = NATIVE[family(hf_model)]
    d, kv = layout.head_dim, layout.num_kv_heads
    if "v" in names:
        module, edit = native(hf_model, "v", 0), (lambda x: x * 3)
    elif names["fused_layout"] == "blocks":
        def edit(x):
            x = x.clone()
            x[..., 2 * model.hidden_size :] *= 3
            return x
        module = native(hf_model, "fused", 0)
    else:
        def edit(x):
            x = x.clone()
            x.view(*x.shape[:-1], kv, 3 * d)[..., 2 * d :] *= 3
            return x
        module = native(hf_model, "fused", 0)
    expected = patched_logits(hf_model, encode(model.tokenizer, PROMPTS), module, "output", edit)
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("site", ["queries_rotated", "keys_rotated"])
def test_zero_rotated_queries_or_keys_give_uniform_attention(site):
    from .conftest import shared

    model, _ = shared("llama")
    prompt = "The cat sat on the mat"
    with model.trace(prompt):
        accessor = getattr(model, site)
        accessor[0] = torch.zeros_like(accessor[0])
        probs = model.attention_probabilities[0].save()
    seq = probs.shape[-1]
    # All scores 0: each query attends uniformly to itself and every earlier position.
    causal = torch.tril(torch.ones(seq, seq))
    expected = causal / causal.sum(-1, keepdim=True)
    torch.testing.assert_close(probs[0], expected.expand(probs.shape[1], -1, -1))


def test_all_sites_in_one_trace_follow_forward_order(pair):
    model, _ = pair
    rotary = model.spec.rotary_embedding is not None
    with model.trace(PROMPTS):
        before = model.attentions_input[LAYER].save()
        q = model.queries[LAYER].save()
        model.keys[LAYER].save()
        model.values[LAYER].save()
        if rotary:
            model.queries_rotated[LAYER].save()
            model.keys_rotated[LAYER].save()
        probs = model.attention_probabilities[LAYER].save()
        z = model.heads_output[LAYER].save()
        out = model.attentions_output[LAYER].save()
    # The probabilities times the values reproduce the head outputs (value heads repeated for GQA).
    with model.trace(PROMPTS):
        v = model.values[LAYER].save()
    groups = q.shape[2] // v.shape[2]
    v_full = v.repeat_interleave(groups, dim=2).transpose(1, 2)
    torch.testing.assert_close((probs @ v_full).transpose(1, 2), z, atol=1e-5, rtol=1e-5)
    assert before.shape == out.shape == (2, q.shape[1], model.hidden_size)


def test_gpt2_has_no_rotated_queries(gpt2):
    with pytest.raises(UnavailableComponentError, match="rotary_embedding=None"):  # noqa: SIM117 - NNsight runs a trace's body itself
        with gpt2.trace("Hello"):
            gpt2.queries_rotated[0].save()


def test_wrong_shape_assignment_is_refused(llama):
    with pytest.raises(InvalidInputError, match=r"\(batch, seq, heads, head_dim\)"):  # noqa: SIM117 - NNsight runs a trace's body itself
        with llama.trace("Hello world"):
            llama.heads_output[0] = torch.zeros(1, 2, 64)


def test_missing_projection_names_the_spec_field():
    import dataclasses

    from .conftest import build

    model, hf_model = build("llama")
    broken = dataclasses.replace(model.spec, q_proj="nope", qkv_proj=None, o_proj="nope")
    from nnterp import StandardizedTransformer
    from nnterp.testing import tiny_tokenizer

    wrapped = StandardizedTransformer(hf_model, tiny_tokenizer(), spec=broken, check_renaming=False)
    with pytest.raises(UnavailableComponentError, match="q_proj='nope'"):  # noqa: SIM117 - NNsight runs a trace's body itself
        with wrapped.trace("Hello"):
            wrapped.queries[0].save()
    with pytest.raises(UnavailableComponentError, match="o_proj='nope'"):  # noqa: SIM117 - NNsight runs a trace's body itself
        with wrapped.trace("Hello"):
            wrapped.heads_output[0].save()


@pytest.mark.parametrize("model_type", ["mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text"])
def test_other_core_families_through_their_specs(model_type):
    # No per-family code: the Llama-style spec defaults cover them. The probabilities times
    # the (repeated) values give the head outputs, and o_proj of those the attention output.
    from .conftest import build

    model, hf_model = build(model_type, enable_attention_probs=True)
    with model.trace(PROMPTS):
        q = model.queries[LAYER].save()
        v = model.values[LAYER].save()
        q_rot = model.queries_rotated[LAYER].save()
        probs = model.attention_probabilities[LAYER].save()
        z = model.heads_output[LAYER].save()
        # The attention module's own output (on Gemma-2/3 a post-norm follows it before the add).
        out = model.attentions[LAYER].output[0].save()
    groups = q.shape[2] // v.shape[2]
    v_full = v.repeat_interleave(groups, dim=2).transpose(1, 2)
    torch.testing.assert_close((probs @ v_full).transpose(1, 2), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hf_model.model.layers[LAYER].self_attn.o_proj(z.flatten(-2)), out)
    assert q_rot.shape == q.shape and not torch.allclose(q_rot, q)
