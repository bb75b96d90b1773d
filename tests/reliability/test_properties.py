"""Property-based tests (hypothesis): prompt utilities, and batch == one-by-one on random prompt sets."""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnterp.nnsight_utils import collect_token_activations_batched, get_token_activations
from nnterp.prompt_utils import Prompt, get_first_tokens, run_prompts
from nnterp.testing import tiny_tokenizer

TOKENIZER = tiny_tokenizer()
WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzPLMF", min_size=1, max_size=8)
PROMPT = st.lists(WORD, min_size=1, max_size=12).map(" ".join)
SLOW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@given(st.lists(WORD, min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_first_tokens_are_the_first_ids_of_both_spellings(words):
    tokens = get_first_tokens(words, TOKENIZER)
    expected = []
    for word in words:
        for variant in (word, " " + word):
            ids = TOKENIZER(variant, add_special_tokens=False)["input_ids"]
            expected.append(ids[0])
    assert set(tokens) <= set(expected)
    assert len(tokens) == len(set(tokens))
    for word in words:
        assert TOKENIZER(word, add_special_tokens=False)["input_ids"][0] in tokens


@given(PROMPT, st.lists(WORD, min_size=1, max_size=3), st.lists(WORD, min_size=1, max_size=3))
@settings(max_examples=60, deadline=None)
def test_prompt_categories_hold_first_tokens_and_collisions_are_detected(text, targets, traps):
    # nnterp 1.x semantics: a prompt whose categories share a first token is built, and
    # has_no_collisions() reports it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prompt = Prompt.from_strings(text, {"target": targets, "traps": traps}, TOKENIZER)
    shared = set(get_first_tokens(targets, TOKENIZER)) & set(get_first_tokens(traps, TOKENIZER))
    assert prompt.has_no_collisions() == (not shared)
    assert prompt.target_tokens["target"] == get_first_tokens(targets, TOKENIZER)


@given(st.lists(PROMPT, min_size=1, max_size=6), st.integers(min_value=1, max_value=4))
@SLOW
def test_batched_activations_equal_one_by_one(llama, prompts, batch_size):
    batched = collect_token_activations_batched(llama, prompts, batch_size=batch_size, tqdm=False)
    for row, prompt in enumerate(prompts):
        alone = get_token_activations(llama, [prompt])
        torch.testing.assert_close(batched[:, row], alone[:, 0], atol=1e-5, rtol=1e-4)


@given(st.lists(PROMPT, min_size=1, max_size=5), st.integers(min_value=1, max_value=3))
@SLOW
def test_run_prompts_batch_invariant(gpt2, texts, batch_size):
    prompts = [Prompt.from_strings(text, {"target": "Paris"}, TOKENIZER) for text in texts]
    batched = run_prompts(gpt2, prompts, batch_size=batch_size, tqdm=False)["target"]
    singles = torch.cat([run_prompts(gpt2, [prompt], batch_size=1, tqdm=False)["target"] for prompt in prompts])
    torch.testing.assert_close(batched, singles, atol=1e-6, rtol=1e-4)
