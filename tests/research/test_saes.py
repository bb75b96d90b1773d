"""Sparse autoencoders on standardized sites (issue 18 part 5) against plain PyTorch.

Every SAE is random, built in-process, written and read back through the SAELens format
(``cfg.json`` + ``sae_weights.safetensors``). Expected values come from the SAE formulas
written out here in torch and from the HF model run with torch hooks on its native modules,
never through nnterp. Families: tiny Llama and tiny GPT-2.
"""

from __future__ import annotations

import json

import nnsight
import pytest
import torch
from nnterp.errors import InvalidInputError, LayerIndexError, ModelLoadError
from nnterp.interventions.saes import (
    SparseAutoencoder,
    ablate_features,
    hook_site_key,
    load_sae,
    sae_features,
    sae_site,
    save_sae,
    splice_sae,
    steer_features,
)
from safetensors.torch import load_file, save_file

from .conftest import shared
from .reference import encode, first, hooks, native, replace_first

PROMPTS = ["The cat sat on the mat", "Hello world"]
FAMILIES = ["llama", "gpt2"]
D_SAE = 48


def random_weights(d_in: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """SAE weights scaled so that about half the features fire on unit-scale inputs."""
    generator = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(d_in, D_SAE, generator=generator) / d_in**0.5,
        "b_enc": torch.randn(D_SAE, generator=generator) * 0.1,
        "W_dec": torch.randn(D_SAE, d_in, generator=generator) / D_SAE**0.5,
        "b_dec": torch.randn(d_in, generator=generator) * 0.1,
        "threshold": torch.rand(D_SAE, generator=generator) * 0.3,
    }


def saved_and_loaded(tmp_path, weights, hook_name, architecture="standard", **cfg):
    """Write ``weights`` as SAELens files by hand, then `load_sae` them."""
    directory = tmp_path / f"sae_{architecture}_{hook_name}"
    directory.mkdir()
    tensors = {
        key: value
        for key, value in weights.items()
        if key != "threshold" or architecture == "jumprelu"
    }
    save_file(tensors, str(directory / "sae_weights.safetensors"))
    d_in, d_sae = weights["W_enc"].shape
    config = {
        "d_in": d_in,
        "d_sae": d_sae,
        "hook_name": hook_name,
        "architecture": architecture,
        **cfg,
    }
    (directory / "cfg.json").write_text(json.dumps(config))
    return load_sae(directory)


def hand_encode(weights, x, architecture="standard", k=None, apply_b_dec_to_input=True):
    """The SAE encoder written out."""
    if apply_b_dec_to_input:
        x = x - weights["b_dec"]
    pre = x @ weights["W_enc"] + weights["b_enc"]
    if architecture == "jumprelu":
        return torch.where(
            pre > weights["threshold"], pre, torch.zeros_like(pre)
        ).clamp(min=0)
    if architecture == "topk":
        keep = torch.zeros_like(pre, dtype=torch.bool)
        keep.scatter_(-1, pre.topk(k, dim=-1).indices, True)
        return torch.where(keep, pre.clamp(min=0), torch.zeros_like(pre))
    return pre.clamp(min=0)


def hand_decode(weights, features):
    """The SAE decoder written out."""
    return features @ weights["W_dec"] + weights["b_dec"]


def traced(model, body):
    """Run ``body(model)`` inside a trace of PROMPTS; (its saved result, the logits)."""
    with model.trace(PROMPTS):
        result = nnsight.save(body(model))
        logits = nnsight.save(model.logits)
    return result.detach(), logits.detach()


def layer_output_logits(hf_model, layer, replace):
    """HF logits with block ``layer``'s hidden state replaced by ``replace(hidden)``; and the
    original hidden state seen there."""
    seen = {}

    def hook(module, args, output):
        seen["x"] = first(output).detach().clone()
        return replace_first(output, replace(first(output)))

    handle = native(hf_model, "layer", layer).register_forward_hook(hook)
    with hooks(handle), torch.no_grad():
        logits = hf_model(**encode(shared_tokenizer(hf_model), PROMPTS)).logits
    return logits, seen["x"]


def shared_tokenizer(hf_model):
    family = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2"}[
        type(hf_model).__name__
    ]
    return shared(family)[0].tokenizer


def plain_logits(hf_model):
    with torch.no_grad():
        return hf_model(**encode(shared_tokenizer(hf_model), PROMPTS)).logits


# -- encode / decode and the file format ----------------------------------------------------


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_encode_decode_equal_the_formulas(tmp_path, architecture):
    weights = random_weights(64)
    cfg = {"k": 5} if architecture == "topk" else {}
    sae = saved_and_loaded(
        tmp_path, weights, "blocks.0.hook_resid_post", architecture, **cfg
    )
    x = torch.randn(2, 7, 64, generator=torch.Generator().manual_seed(1))
    features = hand_encode(weights, x, architecture, k=5)
    assert 0 < int((features > 0).sum()) < features.numel()
    torch.testing.assert_close(sae.encode(x), features)
    torch.testing.assert_close(sae.decode(features), hand_decode(weights, features))
    torch.testing.assert_close(sae(x), hand_decode(weights, features))
    if architecture == "topk":
        assert int((sae.encode(x) != 0).sum(-1).max()) <= 5
    if architecture == "jumprelu":
        pre = (x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"]
        below = (pre > 0) & (pre <= weights["threshold"])
        assert bool(below.any()) and bool((sae.encode(x)[below] == 0).all())


def test_b_dec_not_applied_to_input_when_the_config_says_so(tmp_path):
    weights = random_weights(64)
    sae = saved_and_loaded(
        tmp_path, weights, "blocks.0.hook_resid_post", apply_b_dec_to_input=False
    )
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        sae.encode(x), hand_encode(weights, x, apply_b_dec_to_input=False)
    )


def test_save_sae_round_trip_keeps_every_tensor_and_setting(tmp_path):
    weights = random_weights(64)
    sae = SparseAutoencoder(
        weights["W_enc"],
        weights["b_enc"],
        weights["W_dec"],
        weights["b_dec"],
        architecture="jumprelu",
        threshold=weights["threshold"],
        hook_name="blocks.1.hook_mlp_out",
    )
    save_sae(sae, tmp_path / "sae")
    stored = load_file(str(tmp_path / "sae" / "sae_weights.safetensors"))
    assert set(stored) == set(weights)
    for name, value in weights.items():
        assert torch.equal(stored[name], value)
    config = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert (config["d_in"], config["d_sae"], config["hook_name"]) == (
        64,
        D_SAE,
        "blocks.1.hook_mlp_out",
    )
    loaded = load_sae(tmp_path / "sae", dtype=torch.float64)
    assert loaded.architecture == "jumprelu" and loaded.W_enc.dtype == torch.float64
    assert torch.equal(loaded.threshold, weights["threshold"].double())


def test_log_threshold_and_saelens6_metadata_are_read(tmp_path):
    weights = random_weights(64)
    directory = tmp_path / "sae"
    directory.mkdir()
    tensors = {key: value for key, value in weights.items() if key != "threshold"}
    save_file(
        {**tensors, "log_threshold": weights["threshold"].log()},
        str(directory / "sae_weights.safetensors"),
    )
    config = {
        "d_in": 64,
        "d_sae": D_SAE,
        "architecture": "jumprelu",
        "metadata": {"hook_name": "blocks.0.hook_resid_pre"},
    }
    (directory / "cfg.json").write_text(json.dumps(config))
    sae = load_sae(directory)
    assert sae.hook_name == "blocks.0.hook_resid_pre"
    torch.testing.assert_close(sae.threshold, weights["threshold"])


def test_folding_decoder_norms_keeps_the_reconstruction(tmp_path):
    weights = random_weights(64)
    sae = saved_and_loaded(tmp_path, weights, "blocks.0.hook_resid_post", "jumprelu")
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3))
    folded = sae.fold_decoder_norm()
    norms = weights["W_dec"].norm(dim=-1)
    torch.testing.assert_close(folded.W_dec.norm(dim=-1), torch.ones(D_SAE))
    torch.testing.assert_close(
        folded.encode(x), hand_encode(weights, x, "jumprelu") * norms
    )
    torch.testing.assert_close(
        folded(x), hand_decode(weights, hand_encode(weights, x, "jumprelu"))
    )


# -- hook names and sites -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hook_name", "key"),
    [
        ("blocks.1.hook_resid_post", "layers_output.1"),
        ("blocks.0.hook_resid_pre", "layers_input.0"),
        ("blocks.1.hook_resid_mid", "layers_mid.1"),
        ("blocks.0.hook_attn_out", "attentions_output.0"),
        ("blocks.1.hook_mlp_out", "mlps_output.1"),
        ("blocks.0.attn.hook_z", "heads_output.0"),
        ("blocks.1.mlp.hook_post", "mlps_hidden.1"),
        ("blocks.-1.hook_resid_post", "layers_output.1"),
        ("hook_embed", "token_embeddings"),
        ("layers_output.-1", "layers_output.1"),
        ("mlps_output.0", "mlps_output.0"),
    ],
)
def test_hook_names_map_to_standard_sites(hook_name, key):
    assert hook_site_key(hook_name, num_layers=2) == key


@pytest.mark.parametrize(
    "hook_name",
    [
        "blocks.0.hook_nonsense",
        "ln_final.hook_normalized",
        "blocks.0.ln1.hook_scale",
        "",
        "resid_post",
    ],
)
def test_unknown_hook_names_raise_a_typed_error(hook_name):
    with pytest.raises(InvalidInputError, match="site="):
        hook_site_key(hook_name, num_layers=2)


def test_a_layer_out_of_range_raises():
    with pytest.raises(LayerIndexError):
        hook_site_key("blocks.5.hook_resid_post", num_layers=2)


@pytest.mark.parametrize("family", FAMILIES)
def test_sae_site_checks_d_in_and_takes_an_override(tmp_path, family):
    model, _ = shared(family)
    sae = saved_and_loaded(
        tmp_path, random_weights(model.hidden_size), "blocks.1.hook_resid_post"
    )
    assert sae_site(model, sae) == "layers_output.1"
    assert sae_site(model, sae, site=("resid_pre", 0)) == "layers_input.0"
    assert sae_site(model, sae, site="blocks.0.attn.hook_z") == "heads_output.0"
    narrow = SparseAutoencoder(
        *(torch.zeros(shape) for shape in [(16, 8), (8,), (8, 16), (16,)]),
        hook_name="blocks.1.hook_resid_post",
    )
    with pytest.raises(InvalidInputError, match="d_in=16"):
        sae_site(model, narrow)
    with pytest.raises(InvalidInputError, match="site="):
        sae_site(
            model,
            SparseAutoencoder(
                *(torch.zeros(shape) for shape in [(16, 8), (8,), (8, 16), (16,)])
            ),
        )


# -- inside a trace ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_features_equal_the_formulas_on_the_hf_residual(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size)
    sae = saved_and_loaded(tmp_path, weights, "blocks.1.hook_resid_post", "jumprelu")
    features, logits = traced(model, lambda m: sae_features(m, sae))
    expected_logits, x = layer_output_logits(hf_model, 1, lambda hidden: hidden)
    assert features.shape == (2, x.shape[1], D_SAE)
    torch.testing.assert_close(features, hand_encode(weights, x, "jumprelu"))
    torch.testing.assert_close(logits, expected_logits)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "hook_name",
    [
        "blocks.1.hook_resid_post",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_attn_out",
        "blocks.0.attn.hook_z",
    ],
)
def test_splice_with_the_error_term_leaves_the_logits_unchanged(
    tmp_path, family, hook_name
):
    model, hf_model = shared(family)
    sae = saved_and_loaded(tmp_path, random_weights(model.hidden_size), hook_name)
    features, logits = traced(model, lambda m: splice_sae(m, sae))
    assert features.shape[-1] == D_SAE and bool((features > 0).any())
    torch.testing.assert_close(logits, plain_logits(hf_model), atol=0, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_splice_without_the_error_equals_a_hooked_reconstruction(
    tmp_path, family, architecture
):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size)
    sae = saved_and_loaded(
        tmp_path, weights, "blocks.0.hook_resid_post", architecture, k=6
    )
    features, logits = traced(model, lambda m: splice_sae(m, sae, keep_error=False))
    expected, x = layer_output_logits(
        hf_model,
        0,
        lambda hidden: hand_decode(
            weights, hand_encode(weights, hidden, architecture, k=6)
        ),
    )
    torch.testing.assert_close(features, hand_encode(weights, x, architecture, k=6))
    torch.testing.assert_close(logits, expected)
    assert (logits - plain_logits(hf_model)).abs().max() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_feature_ablation_equals_a_hand_computation(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size)
    sae = saved_and_loaded(tmp_path, weights, "blocks.1.hook_resid_pre")
    ablated = [0, 3, 7, -1]

    def replace(hidden):
        features = hand_encode(weights, hidden)
        edited = features.clone()
        edited[..., [0, 3, 7, D_SAE - 1]] = 0
        return hand_decode(weights, edited) + (hidden - hand_decode(weights, features))

    features, logits = traced(
        model, lambda m: splice_sae(m, sae, edit=ablate_features(ablated))
    )
    expected, _ = layer_output_logits(
        hf_model, 0, replace
    )  # layer 1's input is layer 0's output
    assert bool((features[..., [0, 3, 7, D_SAE - 1]] == 0).all())
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    assert (logits - plain_logits(hf_model)).abs().max() > 1e-4


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("add", [False, True])
def test_feature_steering_on_the_mlp_equals_a_hand_computation(tmp_path, family, add):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size)
    sae = saved_and_loaded(tmp_path, weights, "blocks.0.hook_mlp_out", "jumprelu")

    def replace(output):
        features = hand_encode(weights, output, "jumprelu")
        edited = features.clone()
        edited[..., 2] = edited[..., 2] + 5.0 if add else 5.0
        edited[..., 9] = edited[..., 9] - 1.5 if add else -1.5
        return hand_decode(weights, edited) + (output - hand_decode(weights, features))

    handle = native(hf_model, "mlp", 0).register_forward_hook(
        lambda m, a, out: replace_first(out, replace(first(out)))
    )
    with hooks(handle), torch.no_grad():
        expected = hf_model(**encode(model.tokenizer, PROMPTS)).logits
    edit = steer_features([2, 9], [5.0, -1.5], add=add)
    features, logits = traced(model, lambda m: splice_sae(m, sae, edit=edit))
    if not add:
        assert bool((features[..., 2] == 5.0).all()) and bool(
            (features[..., 9] == -1.5).all()
        )
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_head_site_sae_reads_heads_flattened_before_the_output_projection(
    tmp_path, family
):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size)
    sae = saved_and_loaded(tmp_path, weights, "blocks.1.attn.hook_z")
    seen = {}

    def pre_hook(module, args):
        seen["z"] = args[0].detach().clone()
        return (hand_decode(weights, hand_encode(weights, args[0])), *args[1:])

    handle = native(hf_model, "o", 1).register_forward_pre_hook(pre_hook)
    with hooks(handle), torch.no_grad():
        expected = hf_model(**encode(model.tokenizer, PROMPTS)).logits
    features, logits = traced(model, lambda m: splice_sae(m, sae, keep_error=False))
    torch.testing.assert_close(features, hand_encode(weights, seen["z"]))
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_gradients_reach_the_features_and_pass_the_site_unchanged(tmp_path, family):
    model, hf_model = shared(family)
    weights = random_weights(model.hidden_size)
    sae = saved_and_loaded(tmp_path, weights, "blocks.0.hook_resid_post")
    token = 7
    seen = {}

    def keep(name):
        def hook(module, args, output):
            first(output).retain_grad()
            seen[name] = first(output)

        return hook

    handles = [
        native(hf_model, "layer", 0).register_forward_hook(keep("x")),
        native(hf_model, "embed").register_forward_hook(keep("embed")),
    ]
    with hooks(*handles):
        hf_model(**encode(model.tokenizer, PROMPTS)).logits[
            :, -1, token
        ].sum().backward()
    hf_model.zero_grad(set_to_none=True)
    with model.trace(PROMPTS):
        embeddings = model.token_embeddings
        features = splice_sae(model, sae)
        metric = model.logits[:, -1, token].sum()
        grads = nnsight.save(torch.autograd.grad(metric, [features, embeddings]))
    torch.testing.assert_close(grads[0], seen["x"].grad @ weights["W_dec"].T)
    torch.testing.assert_close(grads[1], seen["embed"].grad)


# -- typed errors ---------------------------------------------------------------------------


def write_sae_dir(tmp_path, tensors=None, config=None):
    directory = tmp_path / "bad"
    directory.mkdir(exist_ok=True)
    if tensors is not None:
        save_file(tensors, str(directory / "sae_weights.safetensors"))
    if config is not None:
        (directory / "cfg.json").write_text(
            config if isinstance(config, str) else json.dumps(config)
        )
    return directory


GOOD_CONFIG = {"d_in": 64, "d_sae": D_SAE, "hook_name": "blocks.0.hook_resid_post"}


def without(weights, name):
    return {key: value for key, value in weights.items() if key != name}


@pytest.mark.parametrize(
    ("tensors", "config", "message"),
    [
        (None, None, "no cfg.json"),
        ("good", None, "no cfg.json"),
        (None, GOOD_CONFIG, "no sae_weights.safetensors"),
        ("good", "{not json", "not valid JSON"),
        ("no W_dec", GOOD_CONFIG, "no tensor 'W_dec'"),
        ("short b_enc", GOOD_CONFIG, "b_enc has shape"),
        ("good", {**GOOD_CONFIG, "d_sae": 12}, "d_sae=12"),
        (
            "good",
            {**GOOD_CONFIG, "architecture": "gated"},
            "unknown architecture 'gated'",
        ),
        (
            "no threshold",
            {**GOOD_CONFIG, "architecture": "jumprelu"},
            "no tensor 'threshold'",
        ),
        ("good", {**GOOD_CONFIG, "architecture": "topk"}, "needs k="),
        (
            "good",
            {**GOOD_CONFIG, "normalize_activations": "expected_average_only_in"},
            "normalize_activations",
        ),
        ("good", {**GOOD_CONFIG, "hook_head_index": 2}, "hook_head_index=2"),
        ("good", {**GOOD_CONFIG, "dtype": "float77"}, "not a torch dtype"),
    ],
)
def test_bad_sae_files_raise_model_load_errors(tmp_path, tensors, config, message):
    weights = random_weights(64)
    chosen = {
        None: None,
        "good": without(weights, "threshold"),
        "no W_dec": without(without(weights, "threshold"), "W_dec"),
        "short b_enc": {
            **without(weights, "threshold"),
            "b_enc": torch.zeros(D_SAE - 1),
        },
        "no threshold": without(weights, "threshold"),
    }[tensors]
    directory = write_sae_dir(tmp_path, chosen, config)
    with pytest.raises(ModelLoadError, match=message):
        load_sae(directory)


def test_a_missing_directory_raises(tmp_path):
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_sae(tmp_path / "nowhere")


def test_bad_arguments_raise_invalid_input_errors(tmp_path):
    weights = random_weights(64)
    parts = [weights[name] for name in ("W_enc", "b_enc", "W_dec", "b_dec")]
    with pytest.raises(InvalidInputError, match="W_dec has shape"):
        SparseAutoencoder(parts[0], parts[1], parts[2].T, parts[3])
    with pytest.raises(InvalidInputError, match="threshold="):
        SparseAutoencoder(*parts, architecture="jumprelu")
    sae = SparseAutoencoder(*parts, hook_name="blocks.0.hook_resid_post")
    with pytest.raises(InvalidInputError, match="last dimension 63"):
        sae.encode(torch.zeros(2, 63))
    with pytest.raises(InvalidInputError, match="one per index"):
        steer_features([1, 2], [1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match="at least one"):
        ablate_features([])
    with pytest.raises(LayerIndexError):
        ablate_features([D_SAE])(torch.zeros(2, D_SAE))
    model, _ = shared("llama")
    with pytest.raises(InvalidInputError, match="same shape"), model.trace(PROMPTS):
        splice_sae(model, sae, edit=lambda features: features[..., :3])
