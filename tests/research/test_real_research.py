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


def test_sae_features_on_smollm2_against_hooked_runs(smol, tmp_path):
    # A random SAE on layer 10's MLP output (576 wide); expected values from the plain model
    # with a torch hook and the SAE formulas written out (tests/research/test_saes.py).
    from nnterp.interventions.sae_analysis import feature_logit_attribution, feature_patching
    from nnterp.interventions.saes import splice_sae

    from .reference import capture, first, hooks, replace_first
    from .test_saes import hand_encode, random_weights, saved_and_loaded

    model, plain, metric = smol
    paris, rome = ids(model, " Paris"), ids(model, " Rome")
    weights = random_weights(model.hidden_size, 11)
    sae = saved_and_loaded(tmp_path, weights, "blocks.10.hook_mlp_out")
    mlp = native(plain, "mlp", 10)

    def mlp_and_residual(prompts):
        seen, logits = capture(plain, encode(model.tokenizer, prompts), {"x": (mlp, "output"), "r": (native(plain, "layer", 29), "output")})
        return seen["x"], seen["r"], logits

    clean_x, _, _ = mlp_and_residual(CLEAN)
    x, residual, logits = mlp_and_residual(CORRUPTED)

    with model.trace(CORRUPTED):
        splice_sae(model, sae)
        spliced = model.logits.save()
    torch.testing.assert_close(spliced, logits, atol=0, rtol=0)

    norm = native(plain, "norm")
    scale = (residual[:, -1].pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
    unembedding = plain.get_output_embeddings().weight.detach()
    readout = norm.weight.detach() * (unembedding[paris] - unembedding[rome]) / scale  # (1, hidden)
    features = hand_encode(weights, x[:, -1])
    dla = feature_logit_attribution(model, CORRUPTED, sae, paris, baseline=rome)
    torch.testing.assert_close(dla.contributions, features * (readout @ weights["W_dec"].T), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dla.site_total, (x[:, -1] * readout).sum(-1), atol=1e-4, rtol=1e-4)

    chosen = [int(i) for i in (hand_encode(weights, clean_x) - hand_encode(weights, x)).abs().sum((0, 1)).topk(3).indices]
    delta = hand_encode(weights, clean_x) - hand_encode(weights, x)
    expected = []
    for feature in chosen:
        edit = lambda out, f=feature: out + delta[..., f, None] * weights["W_dec"][f]
        handle = mlp.register_forward_hook(lambda m, a, out, e=edit: replace_first(out, e(first(out))))
        with hooks(handle), torch.no_grad():
            patched = plain(**encode(model.tokenizer, CORRUPTED)).logits[:, -1]
        expected.append(float((patched[:, paris] - patched[:, rome]).mean()))
    grid = feature_patching(model, CLEAN, CORRUPTED, metric, sae, features=chosen, by_position=False)
    torch.testing.assert_close(grid, torch.tensor(expected), atol=1e-3, rtol=1e-4)
