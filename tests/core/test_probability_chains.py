"""A spec may give several attention-probability chains, tried in order (an attention that a
transformers release rewrote). Checked against HF's own ``output_attentions`` weights."""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.architectures import LLAMA
from nnterp.errors import NnterpError
from nnterp.spec import DEFAULT_ATTENTION_PROBABILITIES, chain_alternatives
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "hello world foo bar"
MISSING = ("no_such_call", "nn.functional.dropout")


def _load(chains):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = tiny_model("llama")
        model = StandardizedTransformer(
            hf, tokenizer=tiny_tokenizer(), enable_attention_probs=True,
            spec=LLAMA.with_classes("LlamaForCausalLM", attention_probabilities=chains),
        )
    return hf, model


def test_the_first_chain_the_forward_has_is_read():
    hf, model = _load((MISSING, DEFAULT_ATTENTION_PROBABILITIES))
    encoding = model.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        expected = hf(**encoding, output_attentions=True).attentions
    probabilities, scores = [], []
    with torch.no_grad(), model.trace(PROMPT):
        for layer in range(model.num_layers):
            scores.append(model.attention_scores[layer].save())
            probabilities.append(model.attention_probabilities[layer].save())
    for layer in range(model.num_layers):
        torch.testing.assert_close(probabilities[layer], expected[layer], rtol=0, atol=0)
        # The scores are the softmax's input: their softmax is the probabilities.
        torch.testing.assert_close(scores[layer].softmax(-1), expected[layer], rtol=0, atol=1e-6)


def test_no_chain_in_the_forward_is_a_typed_error_naming_each():
    with pytest.raises(NnterpError) as raised:
        _load((MISSING, ("also_missing", "nn.functional.softmax")))
    message = str(raised.value)
    assert "no_such_call" in message and "also_missing" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ((), ()),
        (DEFAULT_ATTENTION_PROBABILITIES, (DEFAULT_ATTENTION_PROBABILITIES,)),
        ((MISSING, DEFAULT_ATTENTION_PROBABILITIES), (MISSING, DEFAULT_ATTENTION_PROBABILITIES)),
    ],
)
def test_chain_alternatives(value, expected):
    assert chain_alternatives(value) == expected
