"""Per-layer (heterogeneous) configs: Gemma 4, dots3_note, DBRX, Cohere Compass.

The tiny builder must derive per-layer overrides and lists from the tiny layer count, nnterp
must read config values without tripping over attributes set per layer, and the standardized
model must give exactly what the plain HuggingFace model computes (read with torch hooks).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import UnavailableComponentError
from nnterp.spec import config_value
from nnterp.testing import tiny_config, tiny_model, tiny_tokenizer

PROMPTS = ["The cat sat on the mat. Hello world", "The capital of France is"]

#: Model type -> module path of its decoder blocks in the HF model (written out here, not taken
#: from nnterp's specs, so the comparison does not trust the renaming it checks).
LAYER_PATHS = {
    "gemma4_text": "model.layers",
    "gemma4": "model.language_model.layers",
    "gemma4_unified_text": "model.layers",
    "gemma4_unified": "model.language_model.layers",
    "dots3_note_text": "model.layers",
    "dots3_note": "model.layers",
    "dbrx": "transformer.blocks",
    "cohere_compass_text": "model.layers",
}


def _encoding(prompts: list[str]) -> dict[str, torch.Tensor]:
    encoded = tiny_tokenizer()(prompts, return_tensors="pt", padding=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _wrap(hf_model: torch.nn.Module) -> StandardizedTransformer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)


def _first(output: object) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # type: ignore[index,return-value]


def _plain_run(hf_model: torch.nn.Module, encoding: dict[str, torch.Tensor], modules: dict[str, str]) -> dict:
    """Plain HF forward with forward hooks: each named module's output (first element of a
    tuple), its input, and the logits."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, path in modules.items():
        module = hf_model.get_submodule(path)

        def hook(_module, args, kwargs, output, name=name):
            entering = args[0] if args else kwargs["hidden_states"]
            seen[f"{name}.input"] = entering.detach().clone()
            seen[name] = _first(output).detach().clone()

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            position_ids = (encoding["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            seen["logits"] = hf_model(**encoding, position_ids=position_ids).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen


# -- config values ---------------------------------------------------------------------------


def test_config_value_reads_no_global_value_of_a_per_layer_attribute() -> None:
    config = tiny_config("gemma4_text", global_head_dim=32)
    from transformers.integrations.heterogeneity import (
        AmbiguousGlobalPerLayerAttributeError,
    )

    with pytest.raises(AmbiguousGlobalPerLayerAttributeError):
        config.head_dim  # noqa: B018 - the premise: transformers refuses the global read
    assert config_value(config, ("head_dim",)) is None
    assert config_value(config, ("head_dim",), layer=0) == config.per_layer_config[0].head_dim == 16
    assert config_value(config, ("head_dim",), layer=1) == config.per_layer_config[1].head_dim == 32
    assert config_value(config, ("hidden_size",)) == 64
    assert config_value(config, ("hidden_size",), layer=1) == 64


def test_config_value_per_layer_through_text_config_and_head_counts() -> None:
    composite = tiny_config("gemma4", **{"text_config.global_head_dim": 32})
    assert config_value(composite, ("head_dim",)) is None
    assert config_value(composite, ("head_dim",), layer=1) == composite.text_config.per_layer_config[1].head_dim
    dots = tiny_config("dots3_note_text", layer_types=["indexed_attention", "sliding_attention"], swa_num_attention_heads=2,
                       swa_num_key_value_heads=2, num_key_value_heads=4)
    assert config_value(dots, ("num_attention_heads", "n_head")) is None
    assert config_value(dots, ("num_attention_heads",), layer=0) == 4
    assert config_value(dots, ("num_attention_heads",), layer=1) == 2


def test_config_value_on_a_homogeneous_config_is_unchanged() -> None:
    config = tiny_config("llama")
    assert config_value(config, ("head_dim",)) == config.head_dim
    assert config_value(config, ("head_dim",), layer=1) == config.head_dim
    assert config_value(config, ("no_such_key",)) is None


# -- the tiny builder, checked with plain torch / HF -------------------------------------------


@pytest.mark.parametrize("model_type", sorted(LAYER_PATHS))
def test_tiny_builder_builds_each_type(model_type: str) -> None:
    hf_model = tiny_model(model_type)
    layers = hf_model.get_submodule(LAYER_PATHS[model_type])
    assert len(layers) == 2
    assert sum(parameter.numel() for parameter in hf_model.parameters()) < 3_000_000
    encoding = _encoding(PROMPTS[:1])
    with torch.no_grad():
        logits = hf_model(**encoding).logits
    assert tuple(logits.shape) == (1, encoding["input_ids"].shape[1], 512)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("model_type", ["gemma4_text", "gemma4", "gemma4_unified_text"])
def test_tiny_gemma4_keeps_its_per_layer_head_sizes(model_type: str) -> None:
    hf_model = tiny_model(model_type)
    config = getattr(hf_model.config, "text_config", None) or hf_model.config
    assert list(config.layer_types) == ["sliding_attention", "full_attention"]
    layers = hf_model.get_submodule(LAYER_PATHS[model_type])
    # The sliding layer keeps the global head size, the full-attention one its own (wider).
    assert layers[0].self_attn.head_dim == 16
    assert layers[1].self_attn.head_dim == 32
    assert layers[1].self_attn.o_proj.in_features == config.num_attention_heads * 32


def test_tiny_dots3_note_keeps_its_per_layer_head_counts() -> None:
    hf_model = tiny_model("dots3_note_text")
    layers = hf_model.model.layers
    assert list(hf_model.config.layer_types) == ["indexed_attention", "sliding_attention"]
    assert hf_model.config.per_layer_config[0].num_attention_heads == 4
    assert hf_model.config.per_layer_config[1].num_attention_heads == 2
    assert layers[1].self_attn.q_b_proj.out_features != layers[0].self_attn.q_b_proj.out_features


def test_tiny_dbrx_sets_its_attention_sub_config() -> None:
    hf_model = tiny_model("dbrx")
    assert hf_model.config.attn_config.kv_n_heads == 2
    assert hf_model.config.attn_config.clip_qkv == 8.0
    attention = hf_model.transformer.blocks[0].norm_attn_norm.attn
    assert attention.Wqkv.out_features == 64 + 2 * 2 * 16


# -- the standardized model against the plain HF model -------------------------------------


@pytest.mark.parametrize("model_type", sorted(LAYER_PATHS))
def test_layers_output_and_logits_equal_the_plain_model(model_type: str) -> None:
    hf_model = tiny_model(model_type)
    model = _wrap(hf_model)
    encoding = _encoding(PROMPTS)
    path = LAYER_PATHS[model_type]
    plain = _plain_run(hf_model, encoding, {f"layer{i}": f"{path}.{i}" for i in range(2)})
    outputs = []
    with torch.no_grad(), model.trace(encoding):
        for i in range(2):
            outputs.append(model.layers_output[i].save())
        logits = model.logits.save()
    for index, output in enumerate(outputs):
        assert torch.equal(output, plain[f"layer{index}"]), f"{model_type}: layer {index} output differs"
    assert torch.equal(logits, plain["logits"]), f"{model_type}: logits differ"


#: Model type -> (attention module path, MLP module path) from a block, for additive blocks.
CONTRIBUTIONS = {
    "dbrx": ("norm_attn_norm.attn", "ffn"),
    "cohere_compass_text": ("self_attn", "mlp"),
    "dots3_note_text": ("self_attn", "mlp"),
}


@pytest.mark.parametrize("model_type", sorted(CONTRIBUTIONS))
def test_contributions_are_the_sublayer_outputs_and_add_up(model_type: str) -> None:
    hf_model = tiny_model(model_type)
    model = _wrap(hf_model)
    encoding = _encoding(PROMPTS)
    path, (attention, mlp) = LAYER_PATHS[model_type], CONTRIBUTIONS[model_type]
    modules = {}
    for i in range(2):
        modules.update({f"layer{i}": f"{path}.{i}", f"attn{i}": f"{path}.{i}.{attention}", f"mlp{i}": f"{path}.{i}.{mlp}"})
    plain = _plain_run(hf_model, encoding, modules)
    saved = []
    with torch.no_grad(), model.trace(encoding):
        for i in range(2):
            saved.append((model.layers_input[i].save(), model.attentions_output[i].save(), model.mlps_output[i].save()))
    for index, (entering, attention_out, mlp_out) in enumerate(saved):
        assert torch.equal(entering, plain[f"layer{index}.input"])
        assert torch.equal(attention_out, plain[f"attn{index}"])
        assert torch.equal(mlp_out.reshape(plain[f"mlp{index}"].shape), plain[f"mlp{index}"])
        # The block adds exactly these two to its input (checked on the plain model's values).
        torch.testing.assert_close(plain[f"layer{index}.input"] + plain[f"attn{index}"] + plain[f"mlp{index}"],
                                   plain[f"layer{index}"], atol=1e-5, rtol=1e-5)


def test_gemma4_attention_probabilities_are_the_eager_softmax() -> None:
    hf_model = tiny_model("gemma4_text")
    model = _wrap(hf_model)
    encoding = _encoding(PROMPTS[:1])
    attentions = {}

    def hook(_module, _args, output, layer):
        attentions[layer] = output[1].detach().clone()

    handles = [
        hf_model.model.layers[i].self_attn.register_forward_hook(lambda m, a, o, i=i: hook(m, a, o, i)) for i in range(2)
    ]
    try:
        with torch.no_grad():
            hf_model(**encoding)
    finally:
        for handle in handles:
            handle.remove()
    probabilities = []
    with torch.no_grad(), model.trace(encoding):
        for i in range(2):
            probabilities.append(model.attention_probabilities[i].save())
    for index in range(2):
        assert torch.equal(probabilities[index], attentions[index])
        torch.testing.assert_close(probabilities[index].sum(-1), torch.ones_like(probabilities[index].sum(-1)))


def test_gemma4_blocks_are_reported_non_additive() -> None:
    hf_model = tiny_model("gemma4_text")
    model = _wrap(hf_model)
    # The reason holds on the HF model: a block rescales its whole output by layer_scalar.
    layer = hf_model.model.layers[0]
    layer.layer_scalar.fill_(0.5)
    encoding = _encoding(PROMPTS[:1])
    plain = _plain_run(hf_model, encoding, {"layer": "model.layers.0", "attn": "model.layers.0.post_attention_layernorm",
                                            "mlp": "model.layers.0.post_feedforward_layernorm"})
    assert not torch.allclose(plain["layer.input"] + plain["attn"] + plain["mlp"], plain["layer"], atol=1e-3)
    with pytest.raises(UnavailableComponentError, match="layer_scalar"), model.trace(encoding):
        model.attentions_output[0].save()


def test_gemma4_queries_and_heads_output_follow_each_layers_head_size() -> None:
    hf_model = tiny_model("gemma4_text")
    model = _wrap(hf_model)
    encoding = _encoding(PROMPTS[:1])
    modules = {}
    for i in range(2):
        modules.update({f"q{i}": f"model.layers.{i}.self_attn.q_proj", f"o{i}": f"model.layers.{i}.self_attn.o_proj"})
    plain = _plain_run(hf_model, encoding, modules)
    saved = []
    with torch.no_grad(), model.trace(encoding):
        for i in range(2):
            saved.append((model.queries[i].save(), model.heads_output[i].save()))
    for index, (queries, heads) in enumerate(saved):
        attention = hf_model.model.layers[index].self_attn
        shape = (*encoding["input_ids"].shape, hf_model.config.num_attention_heads, attention.head_dim)
        assert torch.equal(queries, plain[f"q{index}"].view(shape))
        assert torch.equal(heads, plain[f"o{index}.input"].view(shape))


def test_gemma4_support_reports_the_sites_it_cannot_read() -> None:
    model = _wrap(tiny_model("gemma4_text"))
    support = model.support()
    for site in ("keys", "values"):
        reasons = support[site]
        text = " ".join(str(reason) for reason in (reasons.values() if isinstance(reasons, dict) else [reasons]))
        assert "num_global_key_value_heads" in text, site
    for site in ("queries_rotated", "keys_rotated"):
        assert support[site] is not None


# -- the reasons given for the types that are not standardized -------------------------------


def test_gemma3n_blocks_carry_several_residual_streams() -> None:
    from nnterp.contrib.families.heterogeneous import NOT_STANDARDIZED
    from transformers import AutoModelForCausalLM

    config = tiny_config(
        "gemma3n_text",
        layer_types=["sliding_attention", "full_attention"],
        num_kv_shared_layers=0,
        activation_sparsity_pattern=[0.0, 0.0],
        intermediate_size=[128, 128],
        vocab_size_per_layer_input=512,
        hidden_size_per_layer_input=8,
        laurel_rank=8,
    )
    hf_model = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    encoding = _encoding(PROMPTS[:1])
    plain = _plain_run(hf_model, encoding, {"layer": "model.layers.0"})
    batch, seq = encoding["input_ids"].shape
    assert tuple(plain["layer"].shape) == (config.altup_num_inputs, batch, seq, 64)
    assert config.altup_num_inputs > 1 and "(4) parallel residual streams" in NOT_STANDARDIZED["gemma3n_text"]


def test_gemma4_assistant_cannot_run_on_a_prompt_alone() -> None:
    from nnterp.contrib.families.heterogeneous import NOT_STANDARDIZED

    hf_model = tiny_model("gemma4_unified_assistant")
    with pytest.raises(ValueError, match="shared_kv_states"), torch.no_grad():
        hf_model(**_encoding(PROMPTS[:1]))
    assert "shared_kv_states" in NOT_STANDARDIZED["gemma4_unified_assistant"]


@pytest.mark.parametrize("model_type", ["gemma3_text", "qwen2", "qwen2_moe", "llama4_text", "mimo_v2_flash"])
def test_tiny_models_save_and_reload(model_type, tmp_path):
    """A tiny model's config keeps per-layer type lists as long as its layers, so it saves and
    reloads (transformers validates that), giving the same logits."""
    from transformers import AutoModelForCausalLM

    model = tiny_model(model_type)
    assert len(model.config.layer_types) == model.config.num_hidden_layers
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=0, rtol=0)
