"""Cache ergonomics: (site, layer) keys, TransformerLens names, site filters, per-prompt
positions, and cached values bit-for-bit equal to the values read inside a trace."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from nnterp.cache import SiteKeyError, cache_activations
from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.interventions.gradients import compute_gradients
from nnterp.interventions.metrics import token_logit
from nnterp.sites import SITES

from .conftest import shared
from .reference import capture, encode, native

PROMPTS = ["The cat sat on the mat", "Hello world"]


def every_name(model) -> list[str]:
    """Canonical names of every site of the table the model offers, for every layer (written
    out by hand from the table and ``model.support()``, which defines what a filter may pick)."""
    report = model.support()
    names = []
    for site in SITES:
        reason = report[site.name]
        if not site.per_layer:
            names += [site.name] if reason is None else []
            continue
        for layer in range(model.num_layers):
            if (reason.get(layer) if isinstance(reason, dict) else reason) is None:
                names.append(f"{site.name}.{layer}")
    return names


def test_tuple_keys_negative_layers_and_transformer_lens_names(llama):
    cache = cache_activations(
        llama, PROMPTS, ["layers_output", "mlps_output.0", "heads_output.1", "logits"]
    )
    last = cache["layers_output.1"]
    assert cache["layers_output", 1] is last
    assert cache["layers_output", -1] is last
    assert cache["layers_output.-1"] is last
    assert cache["resid_post", -1] is last
    assert cache["mlp_out", 0] is cache["mlps_output.0"]
    assert cache["z", 1] is cache["heads_output.1"]
    assert cache["logits"] is cache["logits", None]
    assert ("layers_output", -2) in cache and ("resid_post", 0) in cache
    assert (
        ("mlps_output", 1) not in cache
        and ("layers_output", 7) not in cache
        and ("nope", 0) not in cache
    )
    assert cache.get(("mlps_output", 1)) is None
    assert cache.get(("mlps_output", 0)) is cache["mlps_output.0"]
    assert set(cache) == {
        "layers_output.0",
        "layers_output.1",
        "mlps_output.0",
        "heads_output.1",
        "logits",
    }


def test_bad_keys_raise_typed_errors(llama):
    cache = cache_activations(llama, PROMPTS, ["layers_output", "logits"])
    with pytest.raises(LayerIndexError, match="out of range"):
        cache["layers_output", 2]
    with pytest.raises(SiteKeyError, match="unknown site 'resid_pots'") as error:
        cache["resid_pots", 0]
    assert isinstance(error.value, KeyError) and isinstance(
        error.value, InvalidInputError
    )
    with pytest.raises(SiteKeyError, match="one value per layer"):
        cache["layers_output"]
    with pytest.raises(SiteKeyError, match="has no layers"):
        cache["logits", 0]
    with pytest.raises(SiteKeyError, match="integer"):
        cache["layers_output.last"]
    with pytest.raises(KeyError, match="was not cached"):
        cache["mlps_output", 0]


def test_stack_by_layer(llama):
    cache = cache_activations(
        llama, PROMPTS, ["layers_output", "attentions_output.1"], positions=-1
    )
    torch.testing.assert_close(
        cache.stack("layers_output"),
        torch.stack([cache["layers_output.0"], cache["layers_output.1"]]),
    )
    assert torch.equal(
        cache.stack("resid_post", layers=[1, 0]),
        torch.stack([cache["layers_output.1"], cache["layers_output.0"]]),
    )
    assert cache.stack("attn_out").shape == (1, 2, llama.hidden_size)
    with pytest.raises(KeyError):
        cache.stack("attentions_output", layers=[0])
    with pytest.raises(SiteKeyError, match="no layers"):
        cache.stack("logits")


@pytest.mark.parametrize("pattern", ["layers_*", "*_output.1", "mlps_*", "*"])
def test_globs_select_the_matching_sites_the_model_offers(pattern):
    for model_type in ("llama", "gpt2"):
        model, _ = shared(model_type)
        cache = cache_activations(model, PROMPTS, pattern, positions=-1)
        expected = {
            name for name in every_name(model) if fnmatch.fnmatchcase(name, pattern)
        }
        assert expected and set(cache) == expected, model_type
    # GPT-2's positions are not rotary: no rotated queries among the sites it offers.
    assert not any(
        "rotated" in key for key in cache_activations(shared("gpt2")[0], PROMPTS, "*")
    )


def test_filters_and_mixed_lists(llama):
    def wanted(name: str) -> bool:
        return name.startswith("mlps_") and name.endswith(".0")

    chosen = cache_activations(llama, PROMPTS, wanted)
    expected = {name for name in every_name(llama) if wanted(name)}
    assert {"mlps_input.0", "mlps_output.0"} <= expected
    assert set(chosen) == expected
    mixed = cache_activations(llama, PROMPTS, ["logits", "attentions_*.1"])
    expected = {
        name
        for name in every_name(llama)
        if fnmatch.fnmatchcase(name, "attentions_*.1")
    }
    assert {"attentions_input.1", "attentions_output.1"} <= expected
    assert set(mixed) == {"logits"} | expected
    result = compute_gradients(llama, PROMPTS, token_logit(5), "mlps_output.*")
    assert set(result.gradients) == {"mlps_output.0", "mlps_output.1"}
    with pytest.raises(InvalidInputError, match="selects no site"):
        cache_activations(llama, PROMPTS, "resid_*")
    with pytest.raises(InvalidInputError, match="site filter selects no site"):
        cache_activations(llama, PROMPTS, lambda name: False)
    with pytest.raises(InvalidInputError, match="filter"):
        cache_activations(llama, PROMPTS, [3])


def test_filters_skip_sites_the_model_lacks():
    model, _ = shared("llama", enable_attention_probs=False)
    assert not any(
        key.startswith("attention_probabilities")
        for key in cache_activations(model, PROMPTS, "*")
    )
    with pytest.raises(InvalidInputError, match="selects no site"):
        cache_activations(model, PROMPTS, "attention_probabilities*")


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox"])
def test_cached_values_equal_traced_values_exactly(model_type):
    model, _ = shared(model_type)
    cache = cache_activations(model, PROMPTS, "*")
    assert len(cache) > 20
    for key, value in cache.items():
        name, _, layer = key.partition(".")
        with model.trace(PROMPTS):
            accessor = getattr(model, name)
            traced = (accessor[int(layer)] if layer else accessor).save()
        assert torch.equal(value, traced), key


def test_per_prompt_positions_equal_native_hooks(pair):
    model, hf_model = pair
    inputs = encode(model.tokenizer, PROMPTS)
    seen, logits = capture(
        hf_model, inputs, {"h": (native(hf_model, "layer", 0), "output")}
    )
    seq = inputs["input_ids"].shape[1]
    lengths = inputs["attention_mask"].sum(-1).tolist()
    wanted = [[0, -1], [1, -2]]
    cache = cache_activations(
        model, PROMPTS, ["layers_output.0", "logits"], positions=wanted
    )
    for row, positions in enumerate(wanted):
        columns = [seq - lengths[row] + p if p >= 0 else seq + p for p in positions]
        torch.testing.assert_close(
            cache["layers_output.0"][row], seen["h"][row, columns]
        )
        torch.testing.assert_close(cache["logits"][row], logits[row, columns])
    with pytest.raises(InvalidInputError, match="one list per prompt"):
        cache_activations(model, PROMPTS, "layers_output.0", positions=[[0], [1], [2]])
    with pytest.raises(InvalidInputError, match="same number"):
        cache_activations(model, PROMPTS, "layers_output.0", positions=[[0], [1, 2]])
