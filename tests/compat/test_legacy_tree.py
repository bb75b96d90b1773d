"""nnterp 1.x's renamed tree and helpers that 1.x code and its own test-suite reach for.

``model.model.layers[i].self_attn`` / ``model.model.ln_final`` (1.x renamed the backbone in
place), ``model._model``, ``rename_utils.get_ignores``, ``ModuleAccessor.nn_model`` and the
plain-NNsight functional helpers on non-Llama classes. Expected modules are the plain HF
model's own (identity), expected values come from forward hooks on it.
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import ModuleAccessor, StandardizedTransformer
from nnterp import nnsight_utils as nu
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.rename_utils import RenameConfig, get_ignores
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"

#: model type -> (backbone, layers, final norm, embeddings, attention, MLP), native paths.
NATIVE = {
    "gpt2": ("transformer", "transformer.h", "transformer.ln_f", "transformer.wte", "attn", "mlp"),
    "llama": ("model", "model.layers", "model.norm", "model.embed_tokens", "self_attn", "mlp"),
    "opt": ("model", "model.decoder.layers", "model.decoder.final_layer_norm", "model.decoder.embed_tokens", "self_attn", None),
    "llama4_text": ("model", "model.layers", "model.norm", "model.embed_tokens", "self_attn", "feed_forward"),
}


def _wrap(hf_model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StandardizedTransformer(hf_model, tiny_tokenizer())


def _hook_output(module, hf_model, tokenizer):
    seen = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    try:
        with torch.no_grad():
            hf_model(**tokenizer(PROMPT, return_tensors="pt"))
    finally:
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("model_type", sorted(NATIVE))
def test_renamed_backbone_is_the_native_one(model_type):
    hf_model = tiny_model(model_type)
    model = _wrap(hf_model)
    backbone, layers, norm, embed, attention, mlp = NATIVE[model_type]
    assert model.model._module is hf_model.get_submodule(backbone)
    assert model._model is hf_model
    for i in range(2):
        assert model.model.layers[i]._module is hf_model.get_submodule(layers)[i]
        assert model.model.layers[i].self_attn._module is hf_model.get_submodule(layers)[i].get_submodule(attention)
        if mlp is not None:
            assert model.model.layers[i].mlp._module is hf_model.get_submodule(layers)[i].get_submodule(mlp)
    assert model.model.ln_final._module is hf_model.get_submodule(norm)
    assert model.model.embed_tokens._module is hf_model.get_submodule(embed)


def test_renamed_backbone_reads_the_native_values():
    hf_model = tiny_model("gpt2")
    model = _wrap(hf_model)
    tokenizer = tiny_tokenizer()
    with torch.no_grad(), model.trace(PROMPT):
        attention = model.model.layers[0].self_attn.output[0].save()
        layer = model.model.layers[1].output.save()
        norm = model.model.ln_final.output.save()
    assert torch.equal(layer, _hook_output(hf_model.transformer.h[1], hf_model, tokenizer))
    assert torch.equal(attention, _hook_output(hf_model.transformer.h[0].attn, hf_model, tokenizer))
    assert torch.equal(norm, _hook_output(hf_model.transformer.ln_f, hf_model, tokenizer))


def test_legacy_aliases_never_hide_a_native_name():
    hf_model = tiny_model("llama")
    model = _wrap(hf_model)
    # Llama's backbone already has layers and embed_tokens: they stay the native children,
    # and its norm keeps its own name next to 1.x's.
    assert model.model.norm._module is hf_model.model.norm
    assert model.model.ln_final._module is hf_model.model.norm
    assert model.model.layers._module is hf_model.model.layers


def test_get_ignores_names_the_missing_parts():
    opt = tiny_model("opt")
    llama = tiny_model("llama")
    assert get_ignores(opt) == ["mlp"]
    assert get_ignores(_wrap(opt)) == ["mlp"]
    assert get_ignores(llama) == []
    assert get_ignores(llama, RenameConfig(ignore_attn=True)) == ["attention"]
    assert get_ignores(llama, RenameConfig(ignore_mlp=True, ignore_attn=True)) == ["mlp", "attention"]


def test_module_accessor_nn_model_and_backbone():
    hf_model = tiny_model("gpt2")
    accessor = ModuleAccessor(hf_model)
    assert accessor.model is hf_model.transformer
    nn_model = accessor.nn_model
    assert accessor.nn_model is nn_model
    assert nn_model.layers[0].self_attn._module is hf_model.transformer.h[0].attn
    assert nn_model.model.layers[1]._module is hf_model.transformer.h[1]
    tokenizer = tiny_tokenizer()
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad(), nn_model.trace(ids):
        out = nn_model.layers[1].output.save()
    assert torch.equal(out, _hook_output(hf_model.transformer.h[1], hf_model, tokenizer))


@pytest.mark.parametrize("model_type", ["gpt2", "llama4_text"])
def test_plain_nnsight_helpers_use_the_architecture_paths(model_type):
    hf_model = tiny_model(model_type)
    tokenizer = tiny_tokenizer()
    plain = nnsight.LanguageModel(hf_model, tokenizer=tokenizer)
    _, layers, norm, embed, attention, mlp = NATIVE[model_type]
    blocks = hf_model.get_submodule(layers)
    assert nu.get_num_layers(plain) == len(blocks)
    assert nu.get_attention(plain, 1)._module is blocks[1].get_submodule(attention)
    assert nu.get_mlp(plain, -1)._module is blocks[-1].get_submodule(mlp)
    assert nu.get_unembed_norm(plain)._module is hf_model.get_submodule(norm)
    assert nu.get_embed_tokens(plain)._module is hf_model.get_submodule(embed)
    with torch.no_grad(), plain.trace(PROMPT):
        mlp_out = nu.get_mlp_output(plain, 0).save()
        projected = nu.project_on_vocab(plain, nu.get_layer_output(plain, 1)).save()
    assert torch.equal(mlp_out, _hook_output(blocks[0].get_submodule(mlp), hf_model, tokenizer))
    last = _hook_output(blocks[1], hf_model, tokenizer)
    with torch.no_grad():
        expected = hf_model.get_output_embeddings()(hf_model.get_submodule(norm)(last))
    assert torch.allclose(projected, expected, atol=1e-6)


def test_plain_nnsight_helpers_report_a_missing_part():
    plain = nnsight.LanguageModel(tiny_model("opt"), tokenizer=tiny_tokenizer())
    with pytest.raises(UnavailableComponentError, match="no mlp module"):
        nu.get_mlp(plain, 0)


def test_steer_refuses_both_position_arguments_in_1x_words(llama):
    vector = torch.zeros(llama.hidden_size)
    with pytest.raises(ValueError, match="Cannot specify both"):
        with llama.trace(PROMPT):
            llama.steer(layers=0, steering_vector=vector, positions=0, token_positions=0)


def test_a_pathlib_path_loads_the_directory(tmp_path):
    hf_model = tiny_model("llama")
    hf_model.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    tokenizer = tiny_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(tmp_path)
    with torch.no_grad(), model.trace(PROMPT):
        logits = model.logits.save()
    with torch.no_grad():
        expected = hf_model(**tokenizer(PROMPT, return_tensors="pt")).logits
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_unknown_keyword_argument_is_named(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(InvalidInputError, match="'attn_rename'"):
        StandardizedTransformer(str(tmp_path), attn_rename="self_attn")


def test_rename_utils_keeps_1x_tables():
    from nnterp import rename_utils

    assert rename_utils.expand_path_with_model(["h", "model.layers"]) == [
        "h", "model.layers", "model.transformer.layers", "model.gpt_neox.layers",
        "model.decoder.layers", "model.language_model.layers",
    ]
    assert {"h", "blocks", "model.layers", "model.transformer.layers"} <= set(rename_utils.LAYER_NAMES)
    assert {"ln_f", "norm", "final_layer_norm"} <= set(rename_utils.LN_NAMES)
    assert {"wte", "embed_in", "model.embed_tokens"} <= set(rename_utils.EMBED_TOKENS_NAMES)
    from transformers import OPTForCausalLM

    assert rename_utils.IGNORE_MLP_MODELS == (OPTForCausalLM,)
    from nnterp.accessors import AttentionProbabilitiesAccessor, LayerAccessor

    assert rename_utils.LayerAccessor is LayerAccessor
    assert rename_utils.AttentionProbabilitiesAccessor is AttentionProbabilitiesAccessor


def test_utils_module_of_1x():
    import transformers
    from nnterp import utils

    assert utils.OPTForCausalLM is transformers.OPTForCausalLM
    assert utils.LlamaForCausalLM is transformers.LlamaForCausalLM
    assert utils.TRANSFORMERS_VERSION == transformers.__version__
    assert utils.NNSIGHT_VERSION == nnsight.__version__
    assert utils.is_notebook() is False
    assert utils.unpack_tuple((torch.ones(1), 2)).tolist() == [1.0]
    assert utils.dummy_inputs()["input_ids"].tolist() == [[0, 1, 1]]
    assert utils.DummyCache().to_legacy_cache() is None


def test_try_with_scan_runs_without_weights_and_reports_failures():
    from nnterp.utils import try_with_scan

    hf_model = tiny_model("gpt2")
    model = _wrap(hf_model)
    seen = {}

    def read_shape():
        seen["shape"] = tuple(model.layers_output[0].shape)

    assert try_with_scan(model, read_shape, RuntimeError("unused"), allow_dispatch=True) is True
    assert seen["shape"] == (1, 3, hf_model.config.n_embd)

    def broken():
        raise KeyError("missing")

    with pytest.raises(RuntimeError, match="both failed") as raised:
        try_with_scan(model, broken, RuntimeError("both failed"), allow_dispatch=True, warn_if_scan_fails=False)
    assert isinstance(raised.value.__cause__, KeyError)
    with pytest.raises(KeyError):
        try_with_scan(model, broken, RuntimeError("unused"), allow_dispatch=True, errors_to_raise=KeyError)
