"""Load-time validation of the unembedding path on models that reach their logits in
unusual ways: each must pass, and the spec's post-processing must be what makes it pass."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from nnterp import StandardizedTransformer
from nnterp.errors import RenamingError
from nnterp.testing import tiny_model, tiny_tokenizer


def load(model_type, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StandardizedTransformer(tiny_model(model_type), tiny_tokenizer(), **kwargs)


def test_a_final_norm_also_applied_to_the_embeddings_validates():
    # NanoChat calls model.norm on the embeddings and again after the last layer.
    hf_model = tiny_model("nanochat")
    calls = []
    handle = hf_model.model.norm.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        hf_model(input_ids=torch.tensor([[5, 6, 7]]))
    handle.remove()
    assert len(calls) == 2
    model = load("nanochat")
    with torch.no_grad(), model.trace("a b c"):
        last = model.layers_output[-1].save()
        logits = model.logits.save()
    torch.testing.assert_close(model.project_on_vocab(last), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", ["minicpm3", "nanochat"])
def test_dropping_the_logit_postprocessing_fails_validation(model_type):
    model = load(model_type)
    assert model.spec.logits_postprocess
    bare = dataclasses.replace(model.spec, logits_postprocess=())
    with pytest.raises(RenamingError, match="logits_postprocess"):
        load(model_type, spec=bare)
