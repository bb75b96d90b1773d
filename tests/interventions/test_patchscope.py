"""Patchscopes against hand-patched forwards of the plain HF model (forward hooks)."""

from __future__ import annotations

import pytest
import torch

from nnterp.errors import InvalidInputError, TokenPositionError
from nnterp.interventions import (
    TargetPrompt,
    TargetPromptBatch,
    patchscope_generate,
    patchscope_lens,
    repeat_prompt,
    repeat_prompt_chat,
)
from nnterp.testing import tiny_tokenizer

SOURCE = "The capital of France is"


def patch_at(layer: int, position: int, latent: torch.Tensor):
    """A layer-output edit putting ``latent`` at ``position`` of ``layer``."""

    def edit(index: int, hidden: torch.Tensor) -> torch.Tensor:
        if index == layer:
            hidden[0, position] = latent
        return hidden

    return edit


def test_patching_a_prompt_into_itself_reproduces_it(pair, hf_run):
    model, hf_model = pair
    run = hf_run(hf_model, SOURCE)
    expected = run.logits[-1].softmax(-1)
    from_source = patchscope_lens(model, SOURCE, TargetPrompt(SOURCE, -1))
    assert from_source.shape == (1, model.num_layers, model.vocab_size)
    for layer in range(model.num_layers):
        torch.testing.assert_close(from_source[0, layer], expected, atol=1e-5, rtol=0)
    # Every position, with the prompt's own hidden states given as latents.
    for position in range(run.ids.shape[1]):
        latents = torch.stack([hidden[position] for hidden in run.layer_outputs])[:, None]  # (layers, 1, hidden)
        patched = patchscope_lens(model, target_patch_prompts=TargetPrompt(SOURCE, position), latents=latents)
        torch.testing.assert_close(patched[0], expected.expand(model.num_layers, -1), atol=1e-5, rtol=0)


def test_repeat_prompt_matches_a_hand_patch(pair, hf_run, prompts):
    model, hf_model = pair
    target = repeat_prompt()
    assert target == TargetPrompt("king king\n1135 1135\nhello hello\n?", -1)  # nnterp 1.x's words
    probs = patchscope_lens(model, prompts, target)
    assert probs.shape == (len(prompts), model.num_layers, model.vocab_size)
    unpatched = hf_run(hf_model, target.prompt).logits[-1].softmax(-1)
    for row, prompt in enumerate(prompts):
        source = hf_run(hf_model, prompt)
        for layer in range(model.num_layers):
            latent = source.layer_outputs[layer][-1]
            expected = hf_run(hf_model, target.prompt, patch_at(layer, -1, latent)).logits[-1].softmax(-1)
            torch.testing.assert_close(probs[row, layer], expected, atol=1e-5, rtol=0)
            assert (probs[row, layer] - unpatched).abs().max() > 1e-4


def test_layer_subset_and_a_single_latent_for_several_targets(pair, hf_run):
    model, hf_model = pair
    targets = [TargetPrompt("The cat sat on the mat", 2), TargetPrompt("Hello world", -2)]
    latents = torch.randn(model.num_layers, 1, model.hidden_size)  # 1.x's (layers, sources, hidden)
    probs = patchscope_lens(model, target_patch_prompts=targets, layers=[1], latents=latents)
    assert probs.shape == (2, 1, model.vocab_size)
    for row, target in enumerate(targets):
        edit = patch_at(1, target.index_to_patch, latents[1, 0])
        expected = hf_run(hf_model, target.prompt, edit).logits[-1].softmax(-1)
        torch.testing.assert_close(probs[row, 0], expected, atol=1e-5, rtol=0)
    # Latents given for the requested layers only mean the same thing.
    again = patchscope_lens(model, target_patch_prompts=targets, layers=[1], latents=latents[1:])
    assert torch.equal(again, probs)


def test_readme_keyword_layer_to_patch_still_names_the_layers(pair, hf_run):
    model, hf_model = pair
    target = TargetPrompt("The cat sat on the mat", -1)
    with pytest.warns(DeprecationWarning, match="layer_to_patch"):
        probs = patchscope_lens(model, source_prompts=[SOURCE], target_patch_prompts=target, layer_to_patch=1)
    latent = hf_run(hf_model, SOURCE).layer_outputs[1][-1]
    expected = hf_run(hf_model, target.prompt, patch_at(1, -1, latent)).logits[-1].softmax(-1)
    assert probs.shape == (1, 1, model.vocab_size)
    torch.testing.assert_close(probs[0, 0], expected, atol=1e-5, rtol=0)
    with pytest.raises(InvalidInputError, match="layer_to_patch"):
        patchscope_lens(model, [SOURCE], target, layers=1, layer_to_patch=1)


def test_target_batch_equals_each_target_alone(model, prompts):
    batch = TargetPromptBatch.from_target_prompts(
        [TargetPrompt("The cat sat on the mat", 1), TargetPrompt("Hi", 0), TargetPrompt("king king\n?", -1)]
    )
    together = patchscope_lens(model, prompts, batch)
    for row, (prompt, target) in enumerate(zip(prompts, batch)):
        alone = patchscope_lens(model, prompt, target)
        torch.testing.assert_close(together[row], alone[0], atol=1e-5, rtol=0)


def test_generate_matches_a_hand_patched_generation(pair, hf_run, prompts):
    model, hf_model = pair
    target = repeat_prompt(["car", "cross"])
    generations = patchscope_generate(model, prompts, target, layers=[0, 1], max_new_tokens=4)
    assert sorted(generations) == [0, 1]
    for row, prompt in enumerate(prompts):
        source = hf_run(hf_model, prompt)
        for layer, ids in generations.items():
            edit = patch_at(layer, -1, source.layer_outputs[layer][-1])
            run = hf_run(hf_model, target.prompt, edit, steps=4)
            # nnterp 1.x's layout: the target prompt's ids, then the generated ones.
            assert ids[row].tolist() == run.ids[0].tolist() + run.generated.tolist()


def test_target_prompt_batch_forms():
    batch = TargetPromptBatch.from_prompts(["a b", "c"], -1)
    assert batch.index_to_patch.tolist() == [-1, -1]
    assert list(batch) == [TargetPrompt("a b", -1), TargetPrompt("c", -1)]
    repeated = TargetPromptBatch.auto(TargetPrompt("x", 0), 3)
    assert repeated.prompts == ["x"] * 3 and repeated.index_to_patch.tolist() == [0, 0, 0]
    with pytest.raises(InvalidInputError, match="one index_to_patch per prompt"):
        TargetPromptBatch(["a", "b", "c"], [0, 1])
    with pytest.raises(InvalidInputError, match="TargetPrompt"):
        TargetPromptBatch.auto("a plain string", 1)


def test_repeat_prompt_options():
    target = repeat_prompt(words=["a", "b"], rel=" -> ", sep="; ", placeholder="X")
    assert target == TargetPrompt("a -> a; b -> b; X", -1)


def test_chat_variant_uses_the_template():
    tokenizer = tiny_tokenizer()
    with pytest.raises(InvalidInputError, match="no chat template.*repeat_prompt"):
        repeat_prompt_chat(tokenizer)
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
        "{% if not (loop.last and continue_final_message) %}<|end|>\n{% endif %}{% endfor %}"
    )
    target = repeat_prompt_chat(tokenizer, words=["king"], instruction="Repeat.")
    # The tiny tokenizer adds no BOS itself, so the template's stays.
    assert target == TargetPrompt("<s><|user|>\nRepeat.<|end|>\n<|assistant|>\nking king\n?", -1)


def test_bad_arguments_raise_typed_errors(model):
    latents = torch.zeros(model.num_layers, 1, model.hidden_size)
    with pytest.raises(InvalidInputError, match="exactly one of source_prompts or latents"):
        patchscope_lens(model, SOURCE, latents=latents)
    with pytest.raises(InvalidInputError, match="exactly one"):
        patchscope_lens(model)
    with pytest.raises(InvalidInputError, match="2 sources but 3 target prompts"):
        patchscope_lens(model, ["a", "b"], [TargetPrompt("x", -1)] * 3)
    with pytest.raises(InvalidInputError, match="hidden size"):
        patchscope_lens(model, latents=torch.zeros(model.num_layers, 1, 3))
    with pytest.raises(TokenPositionError, match="index_to_patch 5 is outside prompt 0"):
        patchscope_lens(model, SOURCE, TargetPrompt("Hello", 5))


class BosAddingTokenizer:
    """A tokenizer stand-in whose template writes the BOS that tokenizing adds again."""

    chat_template = "unused"
    bos_token, bos_token_id = "<bos>", 1

    def apply_chat_template(self, messages, tokenize, continue_final_message):
        assert not tokenize and continue_final_message
        return "<bos>" + "".join(f"[{m['role']}] {m['content']}" for m in messages)

    def __call__(self, text):
        return {"input_ids": [self.bos_token_id, 7]}


def test_chat_variant_drops_a_bos_the_tokenizer_adds_again():
    target = repeat_prompt_chat(BosAddingTokenizer(), words=["a"], instruction="Go")
    assert target == TargetPrompt("[user] Go[assistant] a a\n?", -1)
