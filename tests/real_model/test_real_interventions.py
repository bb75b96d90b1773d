"""Interventions on the real SmolLM2-135M-Instruct: known facts about the model, and each result
recomputed by hand with the plain transformers model (forward hooks, no nnterp)."""

from __future__ import annotations

import pytest
import torch

from nnterp.interventions import logit_lens, patchscope_lens, repeat_prompt_chat
from nnterp.nnsight_utils import get_token_activations
from nnterp.prompt_utils import Prompt, get_first_tokens, run_prompts

from .helpers import rank_of, token_id

pytestmark = pytest.mark.slow

FRANCE = "The capital of France is"
STEER_LAYER = 12
FOOD = "Honestly, the food was"
POSITIVE_WORDS = ["great", "good", "amazing", "wonderful", "fantastic", "excellent"]
NEGATIVE_WORDS = ["bad", "terrible", "awful", "boring", "horrible", "disappointing"]


def _layer_hook(hf_model, layer, change):
    """Register a forward hook on decoder layer ``layer`` that rewrites its hidden output."""

    def hook(module, args, output):
        if isinstance(output, tuple):
            return (change(output[0]),) + tuple(output[1:])
        return change(output)

    return hf_model.model.layers[layer].register_forward_hook(hook)


def test_logit_lens_finds_paris_only_at_the_last_layer(smollm2, plain_hf):
    hf_model, hf_tokenizer = plain_hf
    paris = token_id(smollm2.tokenizer, " Paris")
    probs = logit_lens(smollm2, FRANCE)
    assert probs.shape == (1, 30, 49152)
    lens = probs[0]
    ranks = [rank_of(lens[layer], paris) for layer in range(30)]
    # The model's answer, and only the last layer gives it.
    assert ranks[29] == 0
    assert min(ranks[:29]) >= 1, f"' Paris' ranked first before the last layer: {ranks}"

    # By hand, every layer: HF's hidden states through the final norm and the LM head.
    encoding = hf_tokenizer(FRANCE, return_tensors="pt")
    with torch.no_grad():
        out = hf_model(**encoding, output_hidden_states=True)
        for layer in range(29):
            hidden = out.hidden_states[layer + 1][0, -1]
            expected = hf_model.lm_head(hf_model.model.norm(hidden)).softmax(-1)
            # One batched unembedding for all layers: float32 rounding differs by a few 1e-6.
            assert torch.allclose(lens[layer], expected, atol=1e-5), (layer, float((lens[layer] - expected).abs().max()))
        assert torch.allclose(lens[29], out.logits[0, -1].softmax(-1), atol=1e-6)


def test_run_prompts_prefers_paris_to_the_traps(smollm2, plain_hf):
    hf_model, hf_tokenizer = plain_hf
    prompt = Prompt.from_strings(
        "The capital of France (not England or Spain) is",
        {"target": "Paris", "traps": ["London", "Madrid"]},
        smollm2.tokenizer,
    )
    results = run_prompts(smollm2, [prompt], tqdm=False)
    assert set(results) == {"target", "traps"}
    assert results["target"].shape == (1,)
    assert float(results["target"][0]) > 2 * float(results["traps"][0]) > 0

    with torch.no_grad():
        logits = hf_model(**hf_tokenizer(prompt.prompt, return_tensors="pt")).logits[0, -1]
    probs = logits.softmax(-1)
    for category, words in (("target", ["Paris"]), ("traps", ["London", "Madrid"])):
        ids = get_first_tokens(words, hf_tokenizer)
        assert token_id(hf_tokenizer, " " + words[0]) in ids
        assert float(results[category][0]) == pytest.approx(float(probs[ids].sum()), abs=1e-6)

    per_layer = run_prompts(smollm2, [prompt], get_probs_func=logit_lens, tqdm=False)
    assert per_layer["target"].shape == (1, 30)
    assert float(per_layer["target"][0, -1]) == pytest.approx(float(results["target"][0]), abs=1e-6)
    assert float(per_layer["target"][0, 20]) < 0.01


def test_steering_moves_probability_towards_the_positive_words(smollm2, plain_hf):
    hf_model, hf_tokenizer = plain_hf
    positive = get_token_activations(smollm2, ["I loved it, it was", "This is wonderful, I am so happy. It was"], layers=[STEER_LAYER])
    negative = get_token_activations(smollm2, ["I hated it, it was", "This is awful, I am so sad. It was"], layers=[STEER_LAYER])
    vector = (positive[0].mean(0) - negative[0].mean(0)).detach()
    positive_ids = get_first_tokens(POSITIVE_WORDS, smollm2.tokenizer)
    negative_ids = get_first_tokens(NEGATIVE_WORDS, smollm2.tokenizer)

    masses = {}
    for factor in (-2.0, 0.0, 2.0):
        with torch.no_grad(), smollm2.trace(FOOD):
            smollm2.steer(layers=STEER_LAYER, steering_vector=vector, factor=factor)
            probs = smollm2.next_token_probs.save()
        masses[factor] = (float(probs[0, positive_ids].sum()), float(probs[0, negative_ids].sum()))
        # By hand: the same addition with a forward hook on the plain model.
        handle = _layer_hook(hf_model, STEER_LAYER, lambda hidden, f=factor: hidden + f * vector)
        try:
            with torch.no_grad():
                expected = hf_model(**hf_tokenizer(FOOD, return_tensors="pt")).logits[0, -1].softmax(-1)
        finally:
            handle.remove()
        assert torch.allclose(probs[0], expected, atol=1e-6)

    assert masses[-2.0][0] < masses[0.0][0] < masses[2.0][0]
    assert masses[2.0][1] < masses[0.0][1]
    assert masses[2.0][0] / masses[2.0][1] > 4 * masses[0.0][0] / masses[0.0][1]


def test_patchscope_with_the_identity_prompt_decodes_the_source_token(smollm2, plain_hf):
    hf_model, hf_tokenizer = plain_hf
    target = repeat_prompt_chat(smollm2.tokenizer)
    assert target.prompt.endswith("king king\nhello hello\nworld world\n?")
    sources = ["I saw a cat", "The capital of France is Paris"]
    layers = [3, 8]
    probs = patchscope_lens(smollm2, sources, target, layers=layers)
    assert probs.shape == (2, 2, 49152)
    for row, word in enumerate([" cat", " Paris"]):
        for column in range(len(layers)):
            assert int(probs[row, column].argmax()) == token_id(smollm2.tokenizer, word)
            assert float(probs[row, column].max()) > 0.5

    # By hand for source 0 at layer 3: HF hidden state of "cat" replaces the "?" position.
    with torch.no_grad():
        source = hf_model(**hf_tokenizer(sources[0], return_tensors="pt"), output_hidden_states=True)
        latent = source.hidden_states[layers[0] + 1][0, -1]

        def put_latent(hidden):
            patched = hidden.clone()
            patched[0, -1] = latent
            return patched

        handle = _layer_hook(hf_model, layers[0], put_latent)
        try:
            expected = hf_model(**hf_tokenizer(target.prompt, return_tensors="pt")).logits[0, -1].softmax(-1)
        finally:
            handle.remove()
    assert torch.allclose(probs[0, 0], expected, atol=1e-5)
