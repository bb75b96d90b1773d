"""Target-token tracking: first tokens, collisions, run_prompts against hand computations."""

from __future__ import annotations

import pytest
import torch

from nnterp.errors import InvalidInputError
from nnterp.interventions import logit_lens
from nnterp.prompt_utils import Prompt, get_first_tokens, run_prompts
from nnterp.testing import tiny_tokenizer

CATEGORIES = {"target": "Paris", "traps": ["London", "Madrid"], "concept": ["France", "country"]}
TEXTS = ["The capital of France is", "Hello", "The cat sat on the mat"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def first_token(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)[0]


def test_first_tokens_of_both_spellings(tokenizer):
    expected = [first_token(tokenizer, t) for t in ["Paris", " Paris", "London", " London"]]
    assert len(set(expected)) == 4
    assert get_first_tokens(["Paris", "London"], tokenizer) == expected
    assert get_first_tokens("Paris", tokenizer) == expected[:2]
    assert get_first_tokens(["Paris", "Paris", "Paris"], tokenizer) == expected[:2]


def test_a_bare_space_first_token_is_skipped(tokenizer):
    # The tiny BPE has no merge for " zq": it splits as " " + "z" + "q".
    assert first_token(tokenizer, " zq") == first_token(tokenizer, " ")
    assert get_first_tokens("zq", tokenizer) == [first_token(tokenizer, "zq")]


def test_empty_words_are_rejected(tokenizer):
    with pytest.raises(InvalidInputError, match="non-empty"):
        get_first_tokens(["Paris", " "], tokenizer)
    with pytest.raises(InvalidInputError, match="non-empty"):
        get_first_tokens([], tokenizer)


def test_prompt_from_strings(tokenizer):
    prompt = Prompt.from_strings("The capital of France is", CATEGORIES, tokenizer)
    assert prompt.prompt == "The capital of France is"
    assert prompt.target_strings == {"target": ["Paris"], "traps": ["London", "Madrid"], "concept": ["France", "country"]}
    assert prompt.target_tokens == {
        category: get_first_tokens(words, tokenizer) for category, words in CATEGORIES.items()
    }
    bare = Prompt.from_strings("x", ["Paris"], tokenizer)
    assert bare.target_strings == {"target": ["Paris"]}


def test_collisions_between_categories(tokenizer):
    # "Paris" and "Parrot" both start with the token "Par".
    assert first_token(tokenizer, "Paris") == first_token(tokenizer, "Parrot")
    # nnterp 1.x builds the prompt (here with a warning); raising is asked for explicitly.
    with pytest.warns(UserWarning, match=r"'city' and 'bird' both track token \d+ \('Par'\).*has_no_collisions"):
        built = Prompt.from_strings("x", {"city": "Paris", "bird": "Parrot"}, tokenizer)
    assert not built.has_no_collisions()
    with pytest.raises(InvalidInputError, match=r"'city' and 'bird' both track token \d+ \('Par'\).*allow_collisions"):
        Prompt.from_strings("x", {"city": "Paris", "bird": "Parrot"}, tokenizer, allow_collisions=False)
    allowed = Prompt.from_strings("x", {"city": "Paris", "bird": "Parrot"}, tokenizer, allow_collisions=True)
    assert not allowed.has_no_collisions()
    assert allowed.has_no_collisions(ignore_targets="bird")
    assert allowed.collisions() == [("city", "bird", first_token(tokenizer, "Paris"))]


def build(tokenizer, texts=TEXTS):
    return [Prompt.from_strings(text, CATEGORIES, tokenizer) for text in texts]


def test_run_prompts_equals_a_hand_sum(pair, hf_run, tokenizer):
    model, hf_model = pair
    prompts = build(tokenizer)
    results = run_prompts(model, prompts, batch_size=2, tqdm=False)
    assert list(results) == list(CATEGORIES)
    for category, values in results.items():
        assert values.shape == (len(prompts),)
        for row, prompt in enumerate(prompts):
            probs = hf_run(hf_model, prompt.prompt).logits[-1].softmax(-1)
            expected = sum(probs[token] for token in prompt.target_tokens[category])
            torch.testing.assert_close(values[row], expected, atol=1e-6, rtol=0)


def test_run_prompts_with_the_logit_lens(pair, hf_run, unembed, tokenizer):
    model, hf_model = pair
    prompts = build(tokenizer)
    per_layer = run_prompts(model, prompts, get_probs_func=logit_lens, tqdm=False)
    final = run_prompts(model, prompts, tqdm=False)
    for category, values in per_layer.items():
        assert values.shape == (len(prompts), model.num_layers)
        torch.testing.assert_close(values[:, -1], final[category], atol=1e-6, rtol=0)
    first_layer = run_prompts(model, prompts, get_probs_func=logit_lens, func_kwargs={"layers": [0]}, tqdm=False)
    for row, prompt in enumerate(prompts):
        with torch.no_grad():
            probs = unembed(hf_model, hf_run(hf_model, prompt.prompt).layer_outputs[0][-1]).softmax(-1)
        expected = probs[prompt.target_tokens["traps"]].sum()
        torch.testing.assert_close(first_layer["traps"][row, 0], expected, atol=1e-6, rtol=0)


def test_batch_size_does_not_change_results(model, tokenizer):
    prompts = build(tokenizer)
    for get_probs_func in (None, logit_lens):
        one = run_prompts(model, prompts, batch_size=1, get_probs_func=get_probs_func, tqdm=False)
        three = run_prompts(model, prompts, batch_size=3, get_probs_func=get_probs_func, tqdm=False)
        for category in CATEGORIES:
            torch.testing.assert_close(one[category], three[category], atol=1e-5, rtol=0)


def test_progress_bar_can_be_turned_off(tiny_llama, tokenizer, capsys):
    prompts = build(tokenizer)
    quiet = run_prompts(tiny_llama, prompts, batch_size=2, tqdm=False)
    assert capsys.readouterr().err == ""
    shown = run_prompts(tiny_llama, prompts, batch_size=2, tqdm=True)
    assert "Running prompts" in capsys.readouterr().err
    seen = []
    run_prompts(tiny_llama, prompts, batch_size=2, tqdm=lambda batches, **_: seen.extend(batches) or batches)
    assert seen == [0, 2]
    for category in CATEGORIES:
        assert torch.equal(quiet[category], shown[category])


def test_run_prompts_rejects_bad_input(model, tokenizer):
    assert run_prompts(model, [], tqdm=False) == {}
    mixed = [Prompt.from_strings("a", {"x": "Paris"}, tokenizer), Prompt.from_strings("b", {"y": "Paris"}, tokenizer)]
    with pytest.raises(InvalidInputError, match="same categories"):
        run_prompts(model, mixed, tqdm=False)
    with pytest.raises(InvalidInputError, match="Prompt objects"):
        run_prompts(model, ["a plain string"], tqdm=False)
    with pytest.raises(InvalidInputError, match="batch_size"):
        run_prompts(model, build(tokenizer), batch_size=0, tqdm=False)
    out_of_vocab = Prompt("a", {"target": [model.vocab_size + 3]})
    with pytest.raises(InvalidInputError, match="vocabulary"):
        run_prompts(model, [out_of_vocab], tqdm=False)
