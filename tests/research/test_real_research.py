"""The research tools of issue 18 on the real SmolLM2-135M (30 layers, 9 heads, 3 key/value
heads, head_dim 64), against the plain transformers model loaded from the same files.

"The capital of France is" vs "The capital of Italy is", metric logit(" Paris") - logit(" Rome").
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from nnterp.interventions import (
    accumulated_resid,
    apply_ln_to_stack,
    logit_attribution,
    path_patching,
)
from nnterp.interventions.metrics import evaluate_metric, logit_difference
from nnterp.interventions.patching import activation_patching

from .reference import encode, native
from .test_path_patching import by_hand

pytestmark = pytest.mark.slow

CLEAN, CORRUPTED = ["The capital of France is"], ["The capital of Italy is"]


@functools.cache
def models():
    """(SmolLM2 as a StandardizedTransformer, the plain HF model from the same directory)."""
    from nnterp import load_default_model
    from nnterp.default_model import default_model_path
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_default_model(enable_attention_probs=True)
        plain = AutoModelForCausalLM.from_pretrained(
            default_model_path(),
            attn_implementation="eager",
            local_files_only=True,
            use_safetensors=True,
        ).eval()
    return model, plain


def ids(model, text: str) -> int:
    (token,) = model.tokenizer.encode(text, add_special_tokens=False)
    return token


@pytest.fixture(scope="module")
def smol():
    model, plain = models()
    metric = logit_difference(ids(model, " Paris"), ids(model, " Rome"))
    return model, plain, metric


def test_path_patching_equals_two_hooked_runs(smol):
    model, plain, metric = smol
    layout = model.heads_output.layout
    assert (layout.num_heads, layout.num_kv_heads, layout.head_dim) == (9, 3, 64)
    value = path_patching(
        model, CLEAN, CORRUPTED, metric, (3, 4), ["queries.20.1", "keys.20.2"]
    )
    expected = by_hand(
        model,
        plain,
        CLEAN,
        CORRUPTED,
        sender=("z", 3, 4),
        receivers=[("q", 20, 1), ("k", 20, 2)],
        metric=metric,
    )
    torch.testing.assert_close(value, expected.reshape(()), atol=1e-4, rtol=1e-4)
    # A key/value head of layer 3 feeds query heads 6-8, which stay unfrozen.
    value = path_patching(model, CLEAN, CORRUPTED, metric, "values.3.2", "logits")
    expected = by_hand(
        model,
        plain,
        CLEAN,
        CORRUPTED,
        sender=("v", 3, 2),
        receivers="logits",
        metric=metric,
    )
    torch.testing.assert_close(value, expected.reshape(()), atol=1e-4, rtol=1e-4)


def test_layer_position_head_grid_and_stacks(smol):
    model, plain, metric = smol
    grid = activation_patching(
        model, CLEAN, CORRUPTED, metric, site="keys", layers=[0, 29], by_position=True
    )
    assert grid.shape == (2, 5, 3)
    corrupted = evaluate_metric(model, CORRUPTED, metric)
    clean = evaluate_metric(model, CLEAN, metric)
    assert float(clean) > 5 and float(corrupted) < -5
    # Positions 0-2 ("The capital of") are the same tokens in both runs: nothing changes there.
    torch.testing.assert_close(
        grid[:, :3], corrupted.expand(2, 3, 3), atol=1e-4, rtol=1e-4
    )

    stack = accumulated_resid(model, CLEAN, positions=-1)
    inputs = encode(model.tokenizer, CLEAN)
    with torch.no_grad():
        logits = plain(**inputs).logits[:, -1]
    unembedding = plain.get_output_embeddings().weight.detach()
    normed = apply_ln_to_stack(model, stack)
    assert normed.shape == (31, 1, 576)
    torch.testing.assert_close(normed[-1] @ unembedding.T, logits, atol=1e-3, rtol=1e-4)
    with torch.no_grad():
        lens = native(plain, "norm")(stack)
    torch.testing.assert_close(
        apply_ln_to_stack(model, stack, frozen=False), lens, atol=1e-5, rtol=1e-5
    )

    # Attribution to the direction W_U[Paris] - W_U[Rome] is the logit difference itself.
    direction = unembedding[ids(model, " Paris")] - unembedding[ids(model, " Rome")]
    along = logit_attribution(model, CLEAN, direction=direction)
    paris, rome = ids(model, " Paris"), ids(model, " Rome")
    torch.testing.assert_close(
        along.total, logits[:, paris] - logits[:, rome], atol=1e-3, rtol=1e-4
    )
