"""Loading a masked-LM (bidirectional) checkpoint of a family with causal ones warns.

XLM's ``causal=False`` checkpoints and the BERT-family configs saved as encoders
(``is_decoder=False``) attend to the whole input. Whether a model does is measured on the plain
HF model: its first position's logits change when only the last token changes. nnterp must warn
exactly then.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import BidirectionalModelWarning
from nnterp.testing import tiny_model, tiny_tokenizer

CASES = [
    ("xlm", {"causal": False}),
    ("xlm", {"causal": True}),
    ("bert", {"is_decoder": False}),
    ("bert", {"is_decoder": True}),
    ("roberta", {"is_decoder": False}),
    ("electra", {"is_decoder": False}),
    ("bert-generation", {"is_decoder": False}),
    ("bert-generation", {"is_decoder": True}),
]


def _sees_later_tokens(hf_model) -> bool:
    ids = torch.tensor([[5, 6, 7, 8]])
    changed = ids.clone()
    changed[0, -1] = 9
    with torch.no_grad():
        return not torch.allclose(hf_model(input_ids=ids).logits[0, 0], hf_model(input_ids=changed).logits[0, 0])


@pytest.mark.parametrize(("model_type", "overrides"), CASES, ids=[f"{t}-{o}" for t, o in CASES])
def test_warns_exactly_when_positions_see_later_tokens(model_type, overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own "add is_decoder=True" notice
        hf_model = tiny_model(model_type, config_overrides=overrides)
    bidirectional = _sees_later_tokens(hf_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StandardizedTransformer(hf_model, tiny_tokenizer())
    warned = [w for w in caught if issubclass(w.category, BidirectionalModelWarning)]
    assert bool(warned) == bidirectional
    if warned:
        assert "masked-LM" in str(warned[0].message)
