"""The meaning contract, on one tiny model of each block kind, against plain HF hooks.

``attentions_output[i]`` / ``mixers_output[i]`` / ``mlps_output[i]`` are what each sublayer adds
to the residual stream, whatever the wiring: the expected values below are computed from the
native modules with torch hooks, as each family's forward (read in transformers' source) adds
them, never through nnterp. Writes must go back the same way, and DLA must give the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nnsight
import pytest
import torch
from nnterp.errors import UnavailableComponentError
from nnterp.interventions.decomposition import logit_attribution

from .conftest import build
from .reference import encode, first

PROMPTS = ["The cat sat on the mat", "Hello world"]

#: How each family's block adds a sublayer, from the native modules of one layer: a function of
#: ``{(module path, "in" | "out" | argument name): tensor}`` captured by hooks. Test data.
Reader = Callable[[dict, torch.nn.Module], torch.Tensor]


def out(path: str) -> Reader:
    return lambda seen, layer: seen[(path, "out")]


def scaled(path: str, attribute: str) -> Reader:
    return lambda seen, layer: seen[(path, "out")] * getattr(layer, attribute)


def minus_argument(path: str, argument: str, position: int) -> Reader:
    return lambda seen, layer: seen[(path, "out")] - seen[(path, argument, position)]


def reshaped(path: str) -> Reader:
    return lambda seen, layer: seen[(path, "out")].reshape(seen[(path, "in")].shape)


CASES: dict[str, dict[str, Any]] = {
    # sequential pre-norm
    "llama": {"layers": "model.layers", "attention": out("self_attn"), "mlp": out("mlp")},
    # parallel attention and MLP branches
    "gptj": {"layers": "transformer.h", "attention": out("attn"), "mlp": out("mlp")},
    # sandwich norms
    "gemma2": {"layers": "model.layers", "attention": out("post_attention_layernorm"),
               "mlp": out("post_feedforward_layernorm")},
    "olmo2": {"layers": "model.layers", "attention": out("post_attention_layernorm"),
              "mlp": out("post_feedforward_layernorm")},
    # branch scale
    "granite": {"layers": "model.layers", "attention": scaled("self_attn", "residual_multiplier"),
                "mlp": scaled("mlp", "residual_multiplier")},
    # residual added inside the modules
    "bloom": {"layers": "transformer.h", "attention": minus_argument("self_attention", "residual", 1),
              "mlp": minus_argument("mlp", "residual", 1)},
    # no MLP module: the feed-forward is fc1/fc2 inside the layer
    "biogpt": {"layers": "biogpt.layers", "attention": out("self_attn"), "mlp": out("fc2")},
    # mixture of experts returning flattened tokens
    "llama4_text": {"layers": "model.layers", "attention": out("self_attn"), "mlp": reshaped("feed_forward")},
}


def _capture(hf_model: torch.nn.Module, case: dict[str, Any], inputs: dict) -> tuple[list[dict], list[tuple]]:
    """Per layer: every native module output (and arguments) the case's readers may use,
    and the layer's (input, output), from one plain forward."""
    layers = hf_model.get_submodule(case["layers"])
    seen: list[dict] = [{} for _ in layers]
    boundaries: list[tuple] = [() for _ in layers]
    handles = []
    for index, layer in enumerate(layers):
        def on_layer(module, args, kwargs, output, index=index):
            boundaries[index] = (args[0] if args else kwargs["hidden_states"], first(output))

        handles.append(layer.register_forward_hook(on_layer, with_kwargs=True))
        for name, module in layer.named_children():
            def on_module(module, args, kwargs, output, index=index, name=name):
                values = seen[index]
                values[(name, "in")] = args[0] if args else next(iter(kwargs.values()))
                values[(name, "out")] = first(output).clone()
                for position, argument in enumerate(args):
                    values[(name, "residual", position)] = argument
                if "residual" in kwargs:
                    values[(name, "residual", 1)] = kwargs["residual"]

            handles.append(module.register_forward_hook(on_module, with_kwargs=True))
    try:
        with torch.no_grad():
            hf_model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen, boundaries


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_contributions_are_what_the_block_adds(model_type):
    model, hf_model = build(model_type)
    case = CASES[model_type]
    inputs = encode(model.tokenizer, PROMPTS)
    seen, boundaries = _capture(hf_model, case, inputs)
    layers = hf_model.get_submodule(case["layers"])
    saved = []
    with torch.no_grad(), model.trace({k: inputs[k] for k in ("input_ids", "attention_mask")}):
        for layer in range(model.num_layers):
            saved.append((nnsight.save(model.attentions_output[layer]), nnsight.save(model.mlps_output[layer])))
    for layer, (attention, mlp) in enumerate(saved):
        expected_attention = case["attention"](seen[layer], layers[layer])
        expected_mlp = case["mlp"](seen[layer], layers[layer])
        torch.testing.assert_close(attention, expected_attention, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mlp, expected_mlp, rtol=1e-5, atol=1e-6)
        layer_in, layer_out = boundaries[layer]
        # The identity, on the plain model's own residual stream.
        torch.testing.assert_close(layer_in + attention + mlp, layer_out, rtol=1e-5, atol=1e-5)


#: A write of 0.5 x the attention contribution at layer 0, done by hand on the native module.
HALVED_BY_HAND: dict[str, tuple[str, Callable[[tuple, torch.Tensor], torch.Tensor]]] = {
    "gemma2": ("post_attention_layernorm", lambda args, output: output * 0.5),
    "granite": ("self_attn", lambda args, output: output * 0.5),  # the branch scale is linear
    "bloom": ("self_attention", lambda args, output: args[1] + 0.5 * (output - args[1])),
}


@pytest.mark.parametrize("model_type", sorted(HALVED_BY_HAND))
def test_writing_a_contribution_goes_back_where_it_is_added(model_type):
    model, hf_model = build(model_type)
    path, by_hand = HALVED_BY_HAND[model_type]
    inputs = encode(model.tokenizer, PROMPTS)
    module = hf_model.get_submodule(CASES[model_type]["layers"])[0].get_submodule(path)

    def hook(module, args, output):
        return (by_hand(args, output[0]), *output[1:]) if isinstance(output, tuple) else by_hand(args, output)

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            expected = hf_model(**inputs).logits
    finally:
        handle.remove()
    with torch.no_grad(), model.trace({k: inputs[k] for k in ("input_ids", "attention_mask")}):
        model.attentions_output[0] = model.attentions_output[0] * 0.5
        logits = nnsight.save(model.logits)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "model_type", ["llama", "gemma2", "olmo2", "cohere", "granite", "minicpm3", "llama4_text", "bloom", "biogpt"]
)
def test_logit_attribution_total_is_the_models_logit(model_type):
    # Cohere multiplies by logit_scale, Granite divides by logits_scaling, Gemma-2 soft-caps.
    model, hf_model = build(model_type)
    inputs = encode(model.tokenizer, PROMPTS)
    with torch.no_grad():
        logits = hf_model(**inputs).logits[:, -1]
    target, baseline = [17, 40], 9
    dla = logit_attribution(model, PROMPTS, target, baseline, per_head=True)
    rows = torch.arange(2)
    expected = logits[rows, target] - logits[rows, baseline]
    torch.testing.assert_close(dla.total, expected, rtol=1e-4, atol=1e-5)
    columns = [dla.labels.index(f"attn.{layer}") for layer in dla.head_layers]
    rebuilt = dla.head_contributions.sum(-1) + dla.attention_bias_contributions
    torch.testing.assert_close(rebuilt, dla.contributions[:, columns], rtol=1e-4, atol=1e-5)


def test_post_norm_blocks_say_why():
    model, _ = build("bert")
    report = model.support()
    assert "post-norm" in report["attentions_output"]
    assert "post-norm" in report["mlps_output"]
    assert report["layers_output"] is None
    with pytest.raises(UnavailableComponentError, match="post-norm"), model.trace("Hello world"):
        model.attentions_output[0].save()
    with pytest.raises(UnavailableComponentError, match="split='layer'"):
        logit_attribution(model, PROMPTS, 17)


def test_support_reports_what_is_off_and_why():
    model, _ = build("llama")
    report = model.support()
    assert "enable_attention_probs=True" in report["attention_probabilities"]
    assert all(report[site] is None for site in ("attentions_output", "mlps_output", "queries_rotated", "heads_output"))
    gpt2, _ = build("gpt2")
    assert "rotary" in gpt2.support()["queries_rotated"]


def test_hybrid_layers_have_their_own_kinds_and_the_identity_holds_on_each():
    # Qwen3-Next: transformers' config lists each layer's type; the linear-attention layers are
    # gated DeltaNets (``linear_attn``), the others softmax attention (``self_attn``).
    model, hf_model = build("qwen3_next")
    layer_types = hf_model.config.layer_types
    expected = ["attention" if kind == "full_attention" else "gated_deltanet" for kind in layer_types]
    assert list(model.layer_kinds) == expected
    assert model.attention_layers == [i for i, kind in enumerate(expected) if kind == "attention"]
    linear = expected.index("gated_deltanet")
    with pytest.raises(UnavailableComponentError, match="gated_deltanet"), model.trace("Hello world"):
        model.attentions_output[linear].save()
    assert isinstance(model.support()["attentions_output"], dict)

    inputs = encode(model.tokenizer, PROMPTS)
    layers = hf_model.model.layers
    seen = {}
    handles = []
    for index, layer in enumerate(layers):
        mixer = layer.self_attn if hasattr(layer, "self_attn") else layer.linear_attn
        handles.append(mixer.register_forward_hook(lambda m, a, o, i=index: seen.__setitem__(("mixer", i), first(o).clone())))
        handles.append(layer.mlp.register_forward_hook(lambda m, a, o, i=index: seen.__setitem__(("mlp", i), first(o).clone())))
        handles.append(layer.register_forward_hook(
            lambda m, a, k, o, i=index: seen.__setitem__(("layer", i), (a[0] if a else k["hidden_states"], first(o))),
            with_kwargs=True,
        ))
    try:
        with torch.no_grad():
            hf_model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    saved = []
    with torch.no_grad(), model.trace({k: inputs[k] for k in ("input_ids", "attention_mask")}):
        for index in range(model.num_layers):
            saved.append((nnsight.save(model.mixers_output[index]), nnsight.save(model.mlps_output[index])))
    for index, (mixer, mlp) in enumerate(saved):
        torch.testing.assert_close(mixer, seen[("mixer", index)], rtol=0, atol=0)
        torch.testing.assert_close(mlp, seen[("mlp", index)], rtol=0, atol=0)
        layer_in, layer_out = seen[("layer", index)]
        torch.testing.assert_close(layer_in + mixer + mlp, layer_out, rtol=1e-5, atol=1e-5)
    dla = logit_attribution(model, PROMPTS, [17, 40], 9)
    assert dla.labels == ["embed"] + [
        label for index, kind in enumerate(expected)
        for label in ((f"attn.{index}" if kind == "attention" else f"mixer.{index}"), f"mlp.{index}")
    ]


def test_every_site_of_the_table_is_an_accessor_with_its_shape():
    from nnterp.sites import SITES

    model, _ = build("llama", enable_attention_probs=True)
    support = model.support()
    # Llama offers every site but the parallel residual streams of hyper-connection models
    # (their shapes are checked on DeepSeek-V4 in tests/contrib/test_hyper_connections.py).
    offered = [site for site in SITES if support[site.name] is None]
    assert {site.name for site in SITES} - {site.name for site in offered} == {"streams_input", "streams_output"}
    values = {}
    with torch.no_grad(), model.trace(PROMPTS):
        for site in offered:
            accessor = getattr(model, site.name)
            values[site.name] = nnsight.save(accessor[0] if site.per_layer else accessor)
    config = model._module.config
    sizes = {
        "batch": 2, "hidden": config.hidden_size, "embedding": config.hidden_size, "vocab": config.vocab_size,
        "heads": config.num_attention_heads, "kv_heads": config.num_key_value_heads,
        "head_dim": config.hidden_size // config.num_attention_heads,
        "intermediate": config.intermediate_size, "1": 1,
    }
    seq = values["layers_output"].shape[1]
    sizes.update(seq=seq, query=seq, key=seq)
    for site in offered:
        assert tuple(values[site.name].shape) == tuple(sizes[d] for d in site.shape), site.name
