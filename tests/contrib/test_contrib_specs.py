"""nnterp-models-contrib: its specs are registered, share their families, and standardize models.

Each model below is a tiny random one; every value is compared with the plain HuggingFace
model run on the same inputs.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import transformers

from nnterp import StandardizedTransformer
from nnterp.architectures import CORE_SPECS
from nnterp.contrib.specs import CONTRIB_SPECS
from nnterp.errors import UnavailableComponentError
from nnterp.plugins import get_registry
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "The cat sat on the mat. Hello world"

#: Representative model types: (type, attention probabilities exposed).
WITH_PROBABILITIES = [
    "phi3", "olmo2", "starcoder2", "stablelm", "persimmon", "cohere", "granite", "llama4_text",
    "mixtral", "qwen2_moe", "gpt_oss", "deepseek_v3", "gemma3", "gpt_neo", "gptj", "codegen",
    "bloom", "falcon", "mpt", "gpt_neox", "opt", "bart", "bert", "roberta",
]
WITHOUT_ATTENTION = ["mamba", "rwkv", "mamba2"]
ENCODERS = ["bert", "roberta"]


def _wrap(model_type: str, enable_attention_probs: bool) -> tuple[StandardizedTransformer, torch.nn.Module]:
    hf_model = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=enable_attention_probs)
    return model, hf_model


def _inputs() -> dict[str, torch.Tensor]:
    encoded = tiny_tokenizer()(PROMPT, return_tensors="pt")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def _lens_and_logits(model: StandardizedTransformer) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad(), model.trace(_inputs()):
        lens = model.project_on_vocab(model.layers_output[-1]).save()
        logits = model.logits.save()
    return lens, logits


def test_every_contrib_class_is_registered_to_its_spec() -> None:
    registry = get_registry()
    for spec in CONTRIB_SPECS:
        for class_name in spec.model_classes:
            assert registry.spec_for_class_names([class_name]) == spec, class_name
            assert hasattr(transformers, class_name), f"{spec.name}: transformers has no {class_name}"


def test_contrib_covers_no_core_class_and_no_class_twice() -> None:
    core_classes = {name for spec in CORE_SPECS for name in spec.model_classes}
    contrib_classes = [name for spec in CONTRIB_SPECS for name in spec.model_classes]
    assert len(contrib_classes) == len(set(contrib_classes))
    assert core_classes.isdisjoint(contrib_classes)


def test_families_are_shared_not_copied() -> None:
    # Two specs that differ only in their name and classes should be one spec.
    stripped = [dataclasses.replace(spec, name="", model_classes=()) for spec in CONTRIB_SPECS]
    for index, spec in enumerate(stripped):
        duplicates = [CONTRIB_SPECS[j].name for j in range(index + 1, len(stripped)) if stripped[j] == spec]
        assert not duplicates, f"{CONTRIB_SPECS[index].name} repeats {duplicates}: list the classes in one spec"
    names = [spec.name for spec in CONTRIB_SPECS]
    assert len(names) == len(set(names))
    # Sharing is used: fewer specs than classes (a spec states a family's wiring, so families
    # that add their sublayers differently need specs of their own).
    assert len(CONTRIB_SPECS) < sum(len(spec.model_classes) for spec in CONTRIB_SPECS)


@pytest.mark.parametrize("model_type", WITH_PROBABILITIES)
def test_standardized_model_matches_hf(model_type: str) -> None:
    model, hf_model = _wrap(model_type, enable_attention_probs=True)  # validates at load
    inputs = _inputs()
    with torch.no_grad():
        expected = hf_model(**inputs, output_attentions=True)
    with torch.no_grad(), model.trace(inputs):
        probs = model.attention_probabilities[0].save()
        lens = model.project_on_vocab(model.layers_output[-1]).save()
        logits = model.logits.save()
    seq = inputs["input_ids"].shape[1]
    assert torch.equal(logits, expected.logits)
    assert torch.allclose(lens, expected.logits, atol=1e-5)
    assert tuple(probs.shape) == (1, model.num_heads, seq, seq)
    sums = probs.sum(dim=-1)
    if model.spec.attention_sinks:  # the sinks take some of the mass
        assert torch.all((sums > 0) & (sums <= 1 + 1e-6))
    else:
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert torch.all(probs.triu(diagonal=1) == 0), "a causal model attends to no later position"
    if expected.attentions is not None and expected.attentions[0] is not None:
        assert torch.allclose(probs, expected.attentions[0], atol=1e-6)


@pytest.mark.parametrize("model_type", WITHOUT_ATTENTION)
def test_models_without_attention(model_type: str) -> None:
    model, hf_model = _wrap(model_type, enable_attention_probs=False)
    lens, logits = _lens_and_logits(model)
    with torch.no_grad():
        expected = hf_model(**_inputs()).logits
    assert torch.equal(logits, expected)
    assert torch.allclose(lens, expected, atol=1e-5)
    with pytest.raises(UnavailableComponentError):
        model.attentions_output[0]
    with pytest.raises(UnavailableComponentError):
        StandardizedTransformer(tiny_model(model_type), tiny_tokenizer(), enable_attention_probs=True)


@pytest.mark.parametrize("model_type", ENCODERS)
def test_encoders_run_causally(model_type: str) -> None:
    hf_model = tiny_model(model_type)
    assert hf_model.config.is_decoder
    inputs = _inputs()
    changed = {key: value.clone() for key, value in inputs.items()}
    changed["input_ids"][0, -1] = (changed["input_ids"][0, -1] + 1) % hf_model.config.vocab_size
    with torch.no_grad():
        before = hf_model(**inputs).logits
        after = hf_model(**changed).logits
    assert torch.equal(before[:, :-1], after[:, :-1])
    assert not torch.equal(before[:, -1], after[:, -1])
