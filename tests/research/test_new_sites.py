"""The derived sites of issue 18 against plain PyTorch: MLP hidden activations, pre-softmax
attention scores, ``layers_mid``, norm scales and per-head results.

Every expected value is computed from the HF model's own modules with torch hooks (and, for
the scores, HF's own rotary function), never through nnterp. Families: tiny Llama (grouped-query
attention, 2 key/value heads for 4 heads), GPT-2 (fused ``c_attn``, ``Conv1D``), OPT (tokens
flattened in the feed-forward), GPT-J and GPT-NeoX (parallel blocks) and Mixtral (experts).
"""

from __future__ import annotations

import nnsight
import pytest
import torch
from nnterp.errors import UnavailableComponentError
from nnterp.sites import READ_ONLY_SITES, site_info
from transformers.models.llama import modeling_llama

from .conftest import shared
from .reference import encode, first, hooks, replace_first

PROMPTS = ["The cat sat on the mat", "Hello world"]
LAYER = 1

#: Native module names per family (test data): layers, attention, MLP, down projection, the
#: norms before the attention and the MLP, the final norm, the output projection.
NATIVE = {
    "llama": (
        "model.layers",
        "self_attn",
        "mlp",
        "mlp.down_proj",
        "input_layernorm",
        "post_attention_layernorm",
        "model.norm",
        "o_proj",
    ),
    "gpt2": (
        "transformer.h",
        "attn",
        "mlp",
        "mlp.c_proj",
        "ln_1",
        "ln_2",
        "transformer.ln_f",
        "c_proj",
    ),
    "opt": (
        "model.decoder.layers",
        "self_attn",
        None,
        "fc2",
        "self_attn_layer_norm",
        "final_layer_norm",
        "model.decoder.final_layer_norm",
        "out_proj",
    ),
}


def block(hf_model, family: str, layer: int) -> torch.nn.Module:
    return hf_model.get_submodule(NATIVE[family][0])[layer]


def part(hf_model, family: str, layer: int, index: int) -> torch.nn.Module:
    return block(hf_model, family, layer).get_submodule(NATIVE[family][index])


def run(hf_model, inputs, pre=(), post=()):
    """Logits of a plain forward with ``pre`` forward-pre-hooks and ``post`` forward hooks,
    each ``(module, hook)``."""
    handles = [module.register_forward_pre_hook(hook) for module, hook in pre]
    handles += [module.register_forward_hook(hook) for module, hook in post]
    with hooks(*handles), torch.no_grad():
        return hf_model(**inputs).logits


def recorder(store: dict, name: str, side: str = "in"):
    """A hook keeping a module's first input (``"in"``, pre-hook) or its output, at its first call."""

    def keep(value: torch.Tensor) -> None:
        if name not in store:
            store[name] = value.detach().clone()

    if side == "in":
        return lambda module, args: keep(args[0])
    return lambda module, args, output: keep(first(output))


# -- the table ---------------------------------------------------------------------------


def test_table_describes_the_new_sites():
    assert site_info("mlps_hidden").shape == ("batch", "seq", "intermediate")
    assert site_info("attention_scores").shape == ("batch", "heads", "query", "key")
    assert site_info("attention_scores").position_dim == 2
    assert site_info("heads_result").shape == ("batch", "seq", "heads", "hidden")
    assert site_info("layers_mid").kind == "residual"
    assert site_info("ln_final_scale").shape == ("batch", "seq", "1")
    assert set(READ_ONLY_SITES) == {
        "attentions_norm_scale",
        "mlps_norm_scale",
        "ln_final_scale",
    }
    assert (
        not site_info("mlps_norm_scale").writable and site_info("layers_mid").writable
    )


# -- mlps_hidden -------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_mlps_hidden_is_the_down_projections_input(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    seen: dict = {}
    down = part(hf_model, family, LAYER, 3)
    run(hf_model, inputs, pre=[(down, recorder(seen, "hidden"))])
    with torch.no_grad(), model.trace(PROMPTS):
        hidden = nnsight.save(model.mlps_hidden[LAYER])
    batch, seq = inputs["input_ids"].shape
    intermediate = 128  # the tiny configs' feed-forward width
    assert hidden.shape == (batch, seq, intermediate)
    torch.testing.assert_close(
        hidden, seen["hidden"].reshape(batch, seq, intermediate), rtol=0, atol=0
    )


def test_mlps_hidden_is_the_gated_activation_by_hand():
    model, hf_model = shared("llama")
    inputs = encode(model.tokenizer, PROMPTS)
    seen: dict = {}
    mlp = part(hf_model, "llama", LAYER, 2)
    run(hf_model, inputs, pre=[(mlp, recorder(seen, "x"))])
    with torch.no_grad(), model.trace(PROMPTS):
        hidden = nnsight.save(model.mlps_hidden[LAYER])
    with torch.no_grad():
        x = seen["x"]
        by_hand = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (
            x @ mlp.up_proj.weight.T
        )
    torch.testing.assert_close(hidden, by_hand, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_writing_mlps_hidden_ablates_a_neuron(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    neuron = 5

    def ablate(module, args):
        x = args[0].clone()
        x[..., neuron] = 0
        return (x, *args[1:])

    expected = run(hf_model, inputs, pre=[(part(hf_model, family, LAYER, 3), ablate)])
    with torch.no_grad(), model.trace(PROMPTS):
        hidden = model.mlps_hidden[LAYER].clone()
        hidden[:, :, neuron] = 0
        model.mlps_hidden[LAYER] = hidden
        logits = nnsight.save(model.logits)
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, run(hf_model, inputs))


def test_mixture_of_experts_has_no_hidden_activations():
    model, _ = shared("mixtral")
    reason = model.support()["mlps_hidden"]
    assert "mixture of experts" in str(reason)
    with (
        pytest.raises(UnavailableComponentError, match="mixture of experts"),
        model.trace(PROMPTS),
    ):
        model.mlps_hidden[0].save()


# -- attention_scores ----------------------------------------------------------------------


def _captured_attention(hf_model, family, inputs):
    """(q, k, additive mask, rotary cos/sin or None, logits) of layer LAYER's attention,
    from plain hooks on the native modules."""
    seen: dict = {}
    attention = part(hf_model, family, LAYER, 1)

    def keep_kwargs(module, args, kwargs):
        seen["mask"] = kwargs.get("attention_mask")
        seen["rotary"] = kwargs.get("position_embeddings")

    handles = [attention.register_forward_pre_hook(keep_kwargs, with_kwargs=True)]
    if family == "llama":
        handles += [
            attention.q_proj.register_forward_hook(recorder(seen, "q", "out")),
            attention.k_proj.register_forward_hook(recorder(seen, "k", "out")),
        ]
    else:
        handles += [
            attention.c_attn.register_forward_hook(recorder(seen, "qkv", "out"))
        ]
    with hooks(*handles), torch.no_grad():
        hf_model(**inputs)
    return seen


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_attention_scores_are_q_dot_k_times_scale_plus_mask(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    seen = _captured_attention(hf_model, family, inputs)
    config = hf_model.config
    heads, d = 4, 16
    batch, seq = inputs["input_ids"].shape
    if family == "llama":
        kv = config.num_key_value_heads
        q = seen["q"].view(batch, seq, heads, d).transpose(1, 2)
        k = seen["k"].view(batch, seq, kv, d).transpose(1, 2)
        cos, sin = seen["rotary"]
        q, k = modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)
        k = k.repeat_interleave(
            heads // kv, dim=1
        )  # grouped-query: each key head serves 2 heads
    else:
        q, k, _ = seen["qkv"].split(heads * d, dim=-1)
        q = q.view(batch, seq, heads, d).transpose(1, 2)
        k = k.view(batch, seq, heads, d).transpose(1, 2)
    expected = torch.matmul(q, k.transpose(2, 3)) * d**-0.5 + seen["mask"]

    with torch.no_grad(), model.trace(PROMPTS):
        scores = nnsight.save(model.attention_scores[LAYER])
        probabilities = nnsight.save(model.attention_probabilities[LAYER])
    assert scores.shape == (batch, heads, seq, seq)
    torch.testing.assert_close(scores, expected)
    # The mask is in: "Hello world" is left-padded, its queries put a huge negative on the padding.
    padding = int((inputs["attention_mask"][1] == 0).sum())
    assert padding > 0 and bool((scores[1, :, padding:, :padding] < -1e30).all())
    torch.testing.assert_close(scores.softmax(-1), probabilities)


def test_writing_attention_scores_moves_all_attention_to_the_first_token():
    model, hf_model = shared("llama")
    prompt = ["The cat sat on the mat"]
    inputs = encode(model.tokenizer, prompt)
    heads, kv, d = 4, hf_model.config.num_key_value_heads, 16
    attention = part(hf_model, "llama", LAYER, 1)
    seen: dict = {}
    run(hf_model, inputs, post=[(attention.v_proj, recorder(seen, "v", "out"))])
    seq = inputs["input_ids"].shape[1]
    # Every query then reads the first token's values (its key/value head's).
    first_values = (
        seen["v"].view(1, seq, kv, d)[:, :1].repeat_interleave(heads // kv, dim=2)
    )
    heads_in = first_values.expand(1, seq, heads, d).reshape(1, seq, heads * d)
    expected = run(
        hf_model,
        inputs,
        pre=[(attention.o_proj, lambda module, args: (heads_in, *args[1:]))],
    )

    with torch.no_grad(), model.trace(prompt):
        scores = model.attention_scores[LAYER].clone()
        scores[:, :, :, 1:] = torch.finfo(scores.dtype).min
        model.attention_scores[LAYER] = scores
        logits = nnsight.save(model.logits)
    torch.testing.assert_close(logits, expected)


def test_attention_scores_need_eager_attention():
    model, _ = shared("llama", enable_attention_probs=False)
    assert "enable_attention_probs=True" in model.support()["attention_scores"]


# -- layers_mid ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_layers_mid_is_the_stream_between_attention_and_mlp(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    seen: dict = {}
    layer = block(hf_model, family, LAYER)
    run(
        hf_model,
        inputs,
        pre=[
            (layer, recorder(seen, "x")),
            (part(hf_model, family, LAYER, 5), recorder(seen, "mid")),
        ],
        post=[
            (part(hf_model, family, LAYER, 1), recorder(seen, "attn", "out")),
            (layer, recorder(seen, "y", "out")),
        ],
    )
    with torch.no_grad(), model.trace(PROMPTS):
        mid = nnsight.save(model.layers_mid[LAYER])
    batch, seq = inputs["input_ids"].shape
    torch.testing.assert_close(mid, seen["mid"].reshape(batch, seq, -1), rtol=0, atol=0)
    # = the block's input plus what the attention returned (each family adds it as is).
    torch.testing.assert_close(mid, seen["x"] + seen["attn"].reshape(batch, seq, -1))


def test_writing_layers_mid_feeds_the_mlp_and_the_residual():
    model, hf_model = shared("llama")
    inputs = encode(model.tokenizer, PROMPTS)
    layer = block(hf_model, "llama", LAYER)
    norm, mlp = part(hf_model, "llama", LAYER, 5), part(hf_model, "llama", LAYER, 2)
    seen: dict = {}

    def rewrite(module, args, output):
        v = seen["mid"] * 0.5
        return replace_first(output, v + mlp(norm(v)))

    expected = run(
        hf_model, inputs, pre=[(norm, recorder(seen, "mid"))], post=[(layer, rewrite)]
    )
    with torch.no_grad(), model.trace(PROMPTS):
        model.layers_mid[LAYER] = model.layers_mid[LAYER] * 0.5
        leaving = nnsight.save(model.layers_output[LAYER])
        logits = nnsight.save(model.logits)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(
        leaving, seen["mid"] * 0.5 + mlp(norm(seen["mid"] * 0.5))
    )


@pytest.mark.parametrize("family", ["gptj", "gpt_neox"])
def test_parallel_blocks_have_no_layers_mid(family):
    model, _ = shared(family)
    report = model.support()
    assert "parallel blocks" in report["layers_mid"]
    assert "attentions_norm_scale" in report["mlps_norm_scale"]
    assert report["attentions_norm_scale"] is None
    with (
        pytest.raises(UnavailableComponentError, match="parallel"),
        model.trace(PROMPTS),
    ):
        model.layers_mid[0].save()


# -- norm scales ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_norm_scales_are_what_each_norm_divides_by(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    config = hf_model.config
    final = hf_model.get_submodule(NATIVE[family][6])
    norms = {
        "attention": part(hf_model, family, LAYER, 4),
        "mlp": part(hf_model, family, LAYER, 5),
        "final": final,
    }
    seen: dict = {}
    run(
        hf_model,
        inputs,
        pre=[(module, recorder(seen, name)) for name, module in norms.items()],
        post=[
            (module, recorder(seen, f"{name} out", "out"))
            for name, module in norms.items()
        ],
    )
    scales: dict = {}
    with torch.no_grad(), model.trace(PROMPTS):
        scales["attention"] = nnsight.save(model.attentions_norm_scale[LAYER])
        scales["mlp"] = nnsight.save(model.mlps_norm_scale[LAYER])
        scales["final"] = nnsight.save(model.ln_final_scale)
    batch, seq = inputs["input_ids"].shape
    for name, module in norms.items():
        x = seen[name].reshape(batch, seq, -1).float()
        if family == "llama":  # RMSNorm
            expected = torch.rsqrt(
                x.pow(2).mean(-1, keepdim=True) + config.rms_norm_eps
            )
            frozen = module.weight * (x * expected)
        else:  # LayerNorm
            eps = getattr(config, "layer_norm_epsilon", 1e-5)
            expected = 1 / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
            frozen = (
                module.weight * ((x - x.mean(-1, keepdim=True)) * expected)
                + module.bias
            )
        assert scales[name].shape == (batch, seq, 1)
        torch.testing.assert_close(scales[name], expected)
        # With the scale frozen, the norm is the affine map of x * scale it computes.
        torch.testing.assert_close(
            frozen, seen[f"{name} out"].reshape(batch, seq, -1), rtol=1e-5, atol=1e-5
        )


def test_norm_scales_are_read_only():
    model, _ = shared("llama")
    with (
        pytest.raises(UnavailableComponentError, match="read-only"),
        model.trace(PROMPTS),
    ):
        model.mlps_norm_scale[0] = model.mlps_norm_scale[0] * 2
    with (
        pytest.raises(UnavailableComponentError, match="read-only"),
        model.trace(PROMPTS),
    ):
        model.ln_final_scale = torch.ones(1)


# -- heads_result --------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_heads_result_is_each_head_through_its_slice_of_o_proj(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    o_proj = part(hf_model, family, LAYER, 1).get_submodule(NATIVE[family][7])
    seen: dict = {}
    run(
        hf_model,
        inputs,
        pre=[(o_proj, recorder(seen, "z"))],
        post=[(o_proj, recorder(seen, "out", "out"))],
    )
    with torch.no_grad(), model.trace(PROMPTS):
        result = nnsight.save(model.heads_result[LAYER])
    batch, seq = inputs["input_ids"].shape
    heads, d, hidden = 4, 16, hf_model.config.hidden_size
    assert result.shape == (batch, seq, heads, hidden)
    z = seen["z"].view(batch, seq, heads, d)
    for head in range(heads):
        # GPT-2's Conv1D keeps its weight as (in, out); nn.Linear as (out, in).
        rows = (
            o_proj.weight[head * d : (head + 1) * d]
            if family == "gpt2"
            else o_proj.weight[:, head * d : (head + 1) * d].T
        )
        torch.testing.assert_close(
            result[:, :, head], z[:, :, head] @ rows, rtol=1e-5, atol=1e-6
        )
    bias = o_proj.bias if o_proj.bias is not None else 0
    torch.testing.assert_close(result.sum(-2) + bias, seen["out"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_writing_heads_result_removes_one_heads_share(family):
    model, hf_model = shared(family)
    inputs = encode(model.tokenizer, PROMPTS)
    o_proj = part(hf_model, family, LAYER, 1).get_submodule(NATIVE[family][7])
    head, d = 2, 16

    def without_head(module, args):
        z = args[0].clone()
        z[..., head * d : (head + 1) * d] = 0
        return (z, *args[1:])

    expected = run(hf_model, inputs, pre=[(o_proj, without_head)])
    with torch.no_grad(), model.trace(PROMPTS):
        result = model.heads_result[LAYER].clone()
        result[:, :, head] = 0
        model.heads_result[LAYER] = result
        logits = nnsight.save(model.logits)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)


# -- one forward, every new site, and support() --------------------------------------------


def test_every_new_site_reads_in_one_trace_in_table_order():
    model, _ = shared("llama")
    names = [
        "attentions_norm_scale",
        "attention_scores",
        "heads_result",
        "layers_mid",
        "mlps_norm_scale",
        "mlps_hidden",
    ]
    values: dict = {}
    with torch.no_grad(), model.trace(PROMPTS):
        for layer in range(model.num_layers):
            for name in names:
                values[name, layer] = nnsight.save(getattr(model, name)[layer])
        final = nnsight.save(model.ln_final_scale)
    assert len(values) == len(names) * model.num_layers and final.shape[-1] == 1


def test_new_sites_flow_into_the_cache():
    from nnterp.cache import cache_activations

    model, hf_model = shared("gpt2")
    inputs = encode(model.tokenizer, PROMPTS)
    seen: dict = {}
    run(
        hf_model,
        inputs,
        pre=[
            (part(hf_model, "gpt2", LAYER, 3), recorder(seen, "hidden")),
            (part(hf_model, "gpt2", LAYER, 5), recorder(seen, "mid")),
        ],
    )
    cache = cache_activations(
        model,
        PROMPTS,
        [
            f"mlps_hidden.{LAYER}",
            f"layers_mid.{LAYER}",
            f"attention_scores.{LAYER}",
            "ln_final_scale",
        ],
    )
    torch.testing.assert_close(
        cache[f"mlps_hidden.{LAYER}"], seen["hidden"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        cache[f"layers_mid.{LAYER}"], seen["mid"], rtol=0, atol=0
    )
    assert (
        cache[f"attention_scores.{LAYER}"].shape[1] == 4
        and cache["ln_final_scale"].shape[-1] == 1
    )


@pytest.mark.parametrize(
    "family", ["llama", "gpt2", "gptj", "gpt_neox", "mixtral", "opt"]
)
def test_site_conformance_checks_pass(family):
    from nnterp.testing.site_checks import SITE_CHECKS

    model, _ = shared(family)
    for name, check in SITE_CHECKS.items():
        try:
            check(model)
        except UnavailableComponentError:
            # Only where support() says the site is missing on every layer.
            assert name in {"mlp_hidden", "layers_mid"}, f"{family}: {name} unavailable"
