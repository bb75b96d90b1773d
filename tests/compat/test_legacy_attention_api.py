"""nnterp 1.x's attention-probability API and tokenizer helper, as 1.x documents them:
``RenameConfig(attn_prob_source=<AttnProbFunction>)``, ``model.attention_probabilities.enabled``,
``.disable()``, ``.check_source()``, and ``model.add_prefix_false_tokenizer``.

Expected probabilities come from the plain HF model run with ``output_attentions=True``; expected
tokens from the `tokenizers` library's own pre-tokenizer.
"""

from __future__ import annotations

from types import SimpleNamespace

import nnterp
import pytest
import torch
from nnterp.errors import RenamingError, UnavailableComponentError
from nnterp.rename_utils import AttnProbFunction, RenameConfig  # 1.x's import path
from nnterp.testing import tiny_model, tiny_tokenizer
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast

PROMPT = "The capital of France is"


class CurrentLabels(AttnProbFunction):
    """A 1.x-style locator written against NNsight 0.8's ``.source`` labels."""

    def get_attention_prob_source(self, attention_module, return_module_source=False):
        inner = attention_module.source.attention_interface_1.source
        return inner if return_module_source else inner.nn_functional_dropout_0


class Labels1x(AttnProbFunction):
    """nnterp 1.3's default locator, verbatim: NNsight 0.8 numbers these operations differently."""

    def get_attention_prob_source(self, attention_module, return_module_source=False):
        inner = attention_module.source.attention_interface_0.source
        return inner if return_module_source else inner.nn_functional_dropout_0


def _hf_attentions(hf_model, tokenizer, prompt):
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        return hf_model(**ids, output_attentions=True).attentions


@pytest.mark.parametrize("locator", [CurrentLabels(), CurrentLabels().get_attention_prob_source])
def test_a_1x_attention_probability_function_locates_the_probabilities(locator):
    hf_model = tiny_model("llama")
    model = nnterp.StandardizedTransformer(
        hf_model, tiny_tokenizer(), enable_attention_probs=True, rename_config=RenameConfig(attn_prob_source=locator)
    )
    expected = _hf_attentions(hf_model, model.tokenizer, PROMPT)
    read = []
    with torch.no_grad(), model.trace(PROMPT):
        for layer in range(model.num_layers):
            read.append(model.attention_probabilities[layer].save())
    for layer in range(model.num_layers):
        torch.testing.assert_close(read[layer], expected[layer], rtol=1e-5, atol=1e-6)


def test_a_1x_function_with_stale_labels_fails_with_the_fix():
    config = RenameConfig(attn_prob_source=Labels1x())
    with pytest.raises(RenamingError, match="print_source"):
        nnterp.StandardizedTransformer(tiny_model("llama"), tiny_tokenizer(), enable_attention_probs=True, rename_config=config)
    model = nnterp.StandardizedTransformer(
        tiny_model("llama"), tiny_tokenizer(), enable_attention_probs=True, rename_config=config, check_renaming=False
    )
    with pytest.raises(UnavailableComponentError, match="Labels1x.*print_source"):
        with model.trace(PROMPT):
            model.attention_probabilities[0].save()


def test_enabled_disable_and_check_source():
    model = nnterp.StandardizedTransformer(tiny_model("llama"), tiny_tokenizer(), enable_attention_probs=True)
    assert model.attention_probabilities.enabled is True
    model.attention_probabilities.check_source(layer=1)
    model.attention_probabilities.disable()
    assert model.attention_probabilities.enabled is False and model.attn_probs_available is False
    with pytest.raises(UnavailableComponentError, match="enable_attention_probs=True"):
        with model.trace(PROMPT):
            model.attention_probabilities[0].save()
    off = nnterp.StandardizedTransformer(tiny_model("llama"), tiny_tokenizer())
    assert off.attention_probabilities.enabled is False


def test_check_source_names_a_locator_that_points_at_the_wrong_tensor():
    def queries(attention_module, return_module_source=False):  # right place to hook, wrong tensor
        return attention_module.q_proj

    model = nnterp.StandardizedTransformer(
        tiny_model("llama"), tiny_tokenizer(), enable_attention_probs=True,
        rename_config=RenameConfig(attn_prob_source=queries), check_renaming=False,
    )
    with pytest.raises(RenamingError, match="layer 0: attention probabilities have shape"):
        model.attention_probabilities.check_source()


def _prefix_space_tokenizer():
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    raw.decoder = decoders.ByteLevel()
    corpus = ["Paris is the capital of France", "The city of Paris", "Berlin and Rome are cities"] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    raw.train_from_iterator(corpus, trainer)
    return GPT2TokenizerFast(tokenizer_object=raw, add_prefix_space=True, eos_token="<|endoftext|>"), raw


def test_add_prefix_false_tokenizer_tokenizes_words_as_mid_text():
    tokenizer, raw = _prefix_space_tokenizer()
    model = nnterp.StandardizedTransformer(tiny_model("gpt2"), tokenizer)
    without = model.add_prefix_false_tokenizer
    assert without is model.add_prefix_false_tokenizer  # built once
    # What the byte-level BPE gives for "Paris" with no space in front, straight from `tokenizers`.
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    expected = raw.encode("Paris", add_special_tokens=False).ids
    assert without("Paris", add_special_tokens=False).input_ids == expected
    assert model.tokenizer("Paris", add_special_tokens=False).input_ids != expected


@pytest.mark.parametrize(
    "kind, locator_name",
    [
        ("llama", "default_attention_prob_source"),
        ("gpt2", "gpt2_attention_prob_source"),
        ("gptj", "gptj_attention_prob_source"),
        ("bloom", "bloom_attention_prob_source"),
    ],
)
def test_1x_built_in_locators_find_each_familys_probabilities(kind, locator_name):
    from nnterp import rename_utils

    hf_model = tiny_model(kind)
    locator = getattr(rename_utils, locator_name)
    model = nnterp.StandardizedTransformer(
        hf_model, tiny_tokenizer(), enable_attention_probs=True, rename_config=RenameConfig(attn_prob_source=locator)
    )
    expected = _hf_attentions(hf_model, model.tokenizer, PROMPT)
    with torch.no_grad(), model.trace(PROMPT):
        read = locator(model.layers[1].self_attn).output.save()
    torch.testing.assert_close(read, expected[1], rtol=1e-5, atol=1e-6)


def test_1x_config_size_helpers_read_the_config_or_the_rename_config():
    from nnterp.rename_utils import get_hidden_size, get_num_attention_heads, get_vocab_size

    hf_model = tiny_model("gpt2")
    config = hf_model.config
    assert get_num_attention_heads(hf_model) == config.n_head
    assert get_hidden_size(hf_model) == config.n_embd
    assert get_vocab_size(hf_model) == config.vocab_size
    assert get_num_attention_heads(hf_model, rename_config=RenameConfig(attn_head_config_key=7)) == 7
    custom = SimpleNamespace(config=SimpleNamespace(width=99, heads=3))
    assert get_hidden_size(custom, rename_config=RenameConfig(hidden_size_config_key=["nope", "width"])) == 99
    assert get_num_attention_heads(custom, raise_error=False) is None
    with pytest.raises(RenamingError, match="attn_head_config_key"):
        get_num_attention_heads(custom)
    assert get_num_attention_heads(custom, rename_config=RenameConfig(attn_head_config_key="heads")) == 3
