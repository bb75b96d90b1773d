"""The bad-input matrix: each row raises a typed nnterp error whose message names the fix."""

from __future__ import annotations

import warnings

import pytest
import torch

from nnterp import StandardizedTransformer
from nnterp.errors import InvalidInputError, LayerIndexError, PluginError, RenamingError, TokenPositionError
from nnterp.nnsight_utils import collect_token_activations_batched, get_token_activations
from nnterp.plugins import PluginInfo, Registry
from nnterp.spec import ArchitectureSpec
from nnterp.testing import tiny_model, tiny_tokenizer


def _load(hf_model, tokenizer, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StandardizedTransformer(hf_model, tokenizer, **kwargs)


def empty_prompt_list(model):
    with model.trace([]):
        pass


def empty_prompt_list_collect(model):
    collect_token_activations_batched(model, [], batch_size=2)


def empty_string(model):
    with model.trace(""):
        pass


def too_long_prompt(model):
    # GPT-2 has a learned position table: past it the model cannot run (a RoPE model only warns).
    gpt2 = _load(tiny_model("gpt2"), tiny_tokenizer())
    with gpt2.trace("hello world " * (gpt2.max_positions or 1024)):
        pass


def layer_out_of_range(model):
    with model.trace("Hello"):
        model.layers_output[model.num_layers].save()


def layer_out_of_range_negative(model):
    get_token_activations(model, ["Hello"], layers=[-model.num_layers - 1])


def steering_vector_wrong_size(model):
    with model.trace("Hello"):
        model.steer(layers=0, steering_vector=torch.ones(model.hidden_size + 1))


def token_positions_out_of_range(model):
    with model.trace("Hello"):
        model.steer(layers=0, steering_vector=torch.ones(model.hidden_size), token_positions=[50])


def batch_index_out_of_range(model):
    with model.trace(["Hello", "World"]):
        model.steer(layers=0, steering_vector=torch.ones(model.hidden_size), batch_index=2)


def unknown_architecture(model):
    from nnterp_toy import ToyConfig, ToyForCausalLM

    class UnregisteredToyForCausalLM(ToyForCausalLM):
        pass

    UnregisteredToyForCausalLM.__name__ = "UnregisteredToyForCausalLM"
    spec_free = UnregisteredToyForCausalLM(ToyConfig())
    # Its MRO contains ToyForCausalLM, which the toy plugin covers; hide that class name.
    from nnterp import standardized_transformer

    original = standardized_transformer._spec_from_plugins
    standardized_transformer._spec_from_plugins = lambda _model: None
    try:
        _load(spec_free, tiny_tokenizer())
    finally:
        standardized_transformer._spec_from_plugins = original


def model_without_tokenizer(model):
    _load(tiny_model("llama"), None)


def non_causal_model(model):
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    _load(BertForMaskedLM(config), tiny_tokenizer())


def two_plugins_same_class(model):
    spec = ArchitectureSpec(name="dup", model_classes=("DupForCausalLM",))
    registry = Registry(architectures=[(spec, PluginInfo("a", "dist-a", "1")), (spec, PluginInfo("b", "dist-b", "1"))])
    registry.spec_for_class_names(["DupForCausalLM"])


def wrong_idx_for_short_prompt(model):
    get_token_activations(model, ["Hi", "The capital of France is"], idx=5)


def spec_pointing_at_missing_module(model):
    bad = ArchitectureSpec(name="broken-spec", model_classes=("LlamaForCausalLM",), ln_final="model.final_norm")
    _load(tiny_model("llama"), tiny_tokenizer(), spec=bad)


def colliding_prompt_targets(model):
    from nnterp.prompt_utils import Prompt

    Prompt.from_strings("The capital of France is", {"target": "Paris", "trap": "Paris"}, model.tokenizer, allow_collisions=False)


CASES = [
    (colliding_prompt_targets, InvalidInputError, "allow_collisions=True"),
    (empty_prompt_list, InvalidInputError, "at least one prompt"),
    (empty_prompt_list_collect, InvalidInputError, "at least one prompt"),
    (empty_string, InvalidInputError, "give it text"),
    (too_long_prompt, InvalidInputError, "truncat"),
    (layer_out_of_range, LayerIndexError, "use 0..1"),
    (layer_out_of_range_negative, LayerIndexError, "-2..-1"),
    (steering_vector_wrong_size, InvalidInputError, "last dimension must be 64"),
    (token_positions_out_of_range, TokenPositionError, "use 0..1 or -2..-1"),
    (batch_index_out_of_range, LayerIndexError, "use 0..1"),
    (unknown_architecture, RenamingError, "rename="),
    (model_without_tokenizer, InvalidInputError, "tokenizer="),
    (non_causal_model, InvalidInputError, "AutoModelForCausalLM"),
    (two_plugins_same_class, PluginError, "spec="),
    (wrong_idx_for_short_prompt, TokenPositionError, "outside prompt 0"),
    (spec_pointing_at_missing_module, RenamingError, "rename="),
]


@pytest.mark.parametrize("case,error,fix", CASES, ids=[case.__name__ for case, _, _ in CASES])
def test_bad_input_raises_typed_error_naming_the_fix(llama, case, error, fix):
    with pytest.raises(error) as raised:
        case(llama)
    assert fix in str(raised.value)


def test_unknown_architecture_message_lists_candidates():
    with pytest.raises(RenamingError) as raised:
        unknown_architecture(None)
    message = str(raised.value)
    assert "trunk.blocks (3 x ToyBlock)" in message
    assert "trunk.token_table" in message and "readout" in message


def test_negative_layer_indices_work_like_python(llama):
    with torch.no_grad(), llama.trace("Hello"):
        last = llama.layers_output[-1].save()
        also_last = llama.layers_output[llama.num_layers - 1].save()
    assert torch.equal(last, also_last)


def test_steering_vector_dtype_is_converted(llama):
    vector = torch.ones(llama.hidden_size, dtype=torch.float64)
    with torch.no_grad(), llama.trace("Hello"):
        clean = llama.layers_output[0].save()
    with torch.no_grad(), llama.trace("Hello"):
        llama.steer(layers=0, steering_vector=vector)
        steered = llama.layers_output[0].save()
    assert steered.dtype == torch.float32
    torch.testing.assert_close(steered, clean + 1)


def test_tokenizer_without_pad_token_is_handled():
    tokenizer = tiny_tokenizer(with_pad_token=False)
    model = _load(tiny_model("llama"), tokenizer)
    assert tokenizer.pad_token is None
    assert model.tokenizer.pad_token == tokenizer.eos_token
    with torch.no_grad(), model.trace(["Hello", "The capital of France is"]):
        logits = model.logits.save()
    with torch.no_grad(), model.trace("Hello"):
        alone = model.logits.save()
    torch.testing.assert_close(logits[0, -alone.shape[1]:], alone[0], atol=1e-5, rtol=1e-4)


def test_right_padding_tokenizer_is_handled():
    model = _load(tiny_model("gpt2"), tiny_tokenizer(padding_side="right"))
    with torch.no_grad(), model.trace(["Hello", "The capital of France is"]):
        probs = model.next_token_probs.save()
    with torch.no_grad(), model.trace("Hello"):
        alone = model.next_token_probs.save()
    torch.testing.assert_close(probs[0], alone[0], atol=1e-6, rtol=1e-4)
