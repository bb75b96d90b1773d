"""nnterp 1.x's documented `prompt_utils` and `interventions` calls, run unchanged on 2.0.

Each call is written as nnterp 1.3's docstrings and the reference document spell it; its
result layout and values are checked against a hand computation on the plain HF model
(forward hooks, no nnterp) of tiny models and, in the slow tests, of SmolLM2-135M.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nnterp.errors import InvalidInputError, NnterpError
from nnterp.interventions import (
    TargetPrompt,
    TargetPromptBatch,
    it_repeat_prompt,
    logit_lens,
    patch_object_attn_lens,
    patchscope_generate,
    patchscope_lens,
    repeat_prompt,
    steer,
)
from nnterp.nnsight_utils import get_token_activations
from nnterp.prompt_utils import (
    Prompt,
    TokenizationError,
    get_first_tokens,
    next_token_probs_unsqueeze,
    run_prompts,
)
from nnterp.testing import tiny_tokenizer

from ..interventions.conftest import wrapped

ARCHITECTURES = ["llama", "gpt2", "gemma2"]
PEAR = "\U0001f350"


# ---------------------------------------------------------------- plain-HF hand computations


@pytest.fixture(params=ARCHITECTURES)
def pair(request):
    return wrapped(request.param)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def blocks(hf_model) -> list[torch.nn.Module]:
    base = getattr(hf_model, "model", None) or hf_model.transformer
    return list(base.layers if hasattr(base, "layers") else base.h)


def final_norm(hf_model) -> torch.nn.Module:
    base = getattr(hf_model, "model", None) or hf_model.transformer
    return base.norm if hasattr(base, "norm") else base.ln_f


def softcap(hf_model, logits: torch.Tensor) -> torch.Tensor:
    cap = getattr(hf_model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def attention_of(block: torch.nn.Module) -> torch.nn.Module:
    return block.self_attn if hasattr(block, "self_attn") else block.attn


class Run:
    """One plain HF forward of one prompt (no padding) with optional edits.

    ``edits[layer](hidden)`` rewrites block ``layer``'s (1, seq, hidden) output and
    ``attn_edits[layer](hidden)`` the hidden states its attention reads; both apply to the
    prompt's forward only. Records each block's output and each attention's input.
    """

    def __init__(self, hf_model, tokenizer, prompt, edits=None, attn_edits=None, steps=0):
        edits, attn_edits = edits or {}, attn_edits or {}
        self.outputs: list[torch.Tensor] = []
        self.attn_inputs: list[torch.Tensor] = []
        encoding = tokenizer(prompt, return_tensors="pt")
        self.ids = encoding["input_ids"][0]
        length = len(self.ids)
        handles = []
        for index, block in enumerate(blocks(hf_model)):
            handles.append(block.register_forward_hook(self._output_hook(index, edits, length)))
            handles.append(
                attention_of(block).register_forward_pre_hook(
                    self._input_hook(index, attn_edits, length), with_kwargs=True
                )
            )
        try:
            with torch.no_grad():
                self.logits = hf_model(**encoding).logits[0]
                if steps:
                    self.outputs, self.attn_inputs = [], []
                    out = hf_model.generate(**encoding, max_new_tokens=steps, do_sample=False, pad_token_id=0)
                    self.sequence = out[0]
        finally:
            for handle in handles:
                handle.remove()

    def _output_hook(self, index, edits, length):
        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.shape[1] == length:
                if index in edits:
                    hidden = edits[index](hidden.clone())
                if len(self.outputs) == index:
                    self.outputs.append(hidden[0])
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        return hook

    def _input_hook(self, index, attn_edits, length):
        def hook(module, args, kwargs):
            positional = len(args) > 0
            hidden = args[0] if positional else kwargs["hidden_states"]
            if hidden.shape[1] == length:
                if index in attn_edits:
                    hidden = attn_edits[index](hidden.clone())
                if len(self.attn_inputs) == index:
                    self.attn_inputs.append(hidden[0])
            if positional:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook


def lens_probs(hf_model, hidden: torch.Tensor) -> torch.Tensor:
    """softmax(softcap(lm_head(norm(h)))) by hand."""
    return softcap(hf_model, hf_model.lm_head(final_norm(hf_model)(hidden))).softmax(-1)


def put(position: int, value: torch.Tensor):
    def edit(hidden: torch.Tensor) -> torch.Tensor:
        hidden[0, position] = value
        return hidden

    return edit


def first_id(tokenizer, text: str) -> int:
    return tokenizer(text, add_special_tokens=False)["input_ids"][0]


def hand_first_tokens(tokenizer, words) -> list[int]:
    """1.x's rule: the first id of "word" and of " word", unless the latter is the bare space."""
    space = first_id(tokenizer, " ")
    ids = []
    for word in [words] if isinstance(words, str) else words:
        ids.append(first_id(tokenizer, word))
        if first_id(tokenizer, " " + word) != space:
            ids.append(first_id(tokenizer, " " + word))
    return list(dict.fromkeys(ids))


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=0)


# ---------------------------------------------------------------- prompt_utils


def test_get_first_tokens_takes_a_model_a_language_model_or_a_tokenizer(tokenizer):
    from nnsight import LanguageModel

    model, hf_model = wrapped("llama")
    expected = [first_id(tokenizer, w) for w in ("Paris", " Paris", "London", " London")]
    assert len(set(expected)) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nnsight 0.8 deprecates the name; 1.x code still uses it
        language_model = LanguageModel(hf_model, tokenizer=tokenizer)
    for given in (model, language_model, tokenizer):
        assert get_first_tokens(["Paris", "London"], given) == expected
        assert get_first_tokens("Paris", llm_or_tokenizer=given) == expected[:2]
    with pytest.raises(InvalidInputError, match="llm_or_tokenizer"):
        get_first_tokens("Paris", 42)


def test_get_first_tokens_hacky_implementation(tokenizer):
    # 1.x: the first token of the word written right after a pear emoji, no spaced variant.
    marker = tokenizer(PEAR, add_special_tokens=False)["input_ids"]
    expected = [tokenizer(PEAR + w, add_special_tokens=False)["input_ids"][len(marker)] for w in ("Paris", "London")]
    assert get_first_tokens(["Paris", "London"], tokenizer, use_hacky_implementation=True) == expected


class MergingTokenizer:
    """A stand-in tokenizer whose ids for the marker and for ``marker + word`` disagree."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [5] if text == PEAR else ([9, 1] if text.startswith(PEAR) else [])}


def test_tokenization_error_is_1x_name_and_a_typed_value_error():
    import nnterp.errors

    assert TokenizationError is nnterp.errors.TokenizationError
    assert issubclass(TokenizationError, NnterpError) and issubclass(TokenizationError, ValueError)
    with pytest.raises(TokenizationError, match="use_hacky_implementation=False"):
        get_first_tokens("Paris", MergingTokenizer(), use_hacky_implementation=True)
    with pytest.raises(TokenizationError, match="no token"):
        get_first_tokens("Paris", MergingTokenizer())


def test_prompt_from_strings_with_the_model(tokenizer):
    model, _ = wrapped("llama")
    prompt = Prompt.from_strings("The quick brown fox", "jumps", model)
    assert prompt.prompt == "The quick brown fox"
    assert prompt.target_tokens == {"target": hand_first_tokens(tokenizer, "jumps")}
    both = Prompt.from_strings("Hello world", {"greeting": "hello", "object": ["world", "Paris"]}, model)
    assert both.target_tokens == {
        "greeting": hand_first_tokens(tokenizer, "hello"),
        "object": hand_first_tokens(tokenizer, ["world", "Paris"]),
    }
    assert len(both.target_tokens["object"]) >= 3


def test_colliding_categories_are_built_and_reported(tokenizer):
    model, _ = wrapped("llama")
    with pytest.warns(UserWarning, match="'greeting' and 'greeting2' both track"):
        prompt = Prompt.from_strings(
            "Hello world", {"greeting": "hello", "punctuation": ".", "greeting2": "hello"}, model
        )
    assert prompt.target_tokens["greeting"] == prompt.target_tokens["greeting2"]
    assert prompt.has_no_collisions() is False
    assert prompt.has_no_collisions(ignore_targets="greeting") is True
    assert prompt.has_no_collisions(ignore_targets=["greeting", "punctuation"]) is True


def test_get_target_probs_with_and_without_layer(tokenizer):
    prompt = Prompt.from_strings("The quick brown fox", {"target": "jumps", "animal": "fox"}, tokenizer)
    probs = torch.rand(1, 3, 512)
    everything = prompt.get_target_probs(probs)
    for category, tokens in prompt.target_tokens.items():
        hand = sum(probs[:, :, t] for t in tokens)
        assert everything[category].shape == (1, 3)
        close(everything[category], hand)
        at_layer = prompt.get_target_probs(probs, layer=1)[category]
        assert at_layer.shape == (1,)
        close(at_layer, hand[:, 1])
    with pytest.raises(InvalidInputError, match="layer="):
        prompt.get_target_probs(probs[0], layer=1)


def test_prompt_run_with_the_logit_lens(pair, tokenizer):
    model, hf_model = pair
    prompt = Prompt.from_strings("The quick brown fox", {"target": "jumps"}, model)
    result = prompt.run(model, lambda nn_model, text: logit_lens(nn_model, text))
    run = Run(hf_model, tokenizer, prompt.prompt)
    hand = torch.stack([lens_probs(hf_model, hidden[-1]) for hidden in run.outputs])
    assert result["target"].shape == (1, model.num_layers)
    close(result["target"][0], hand[:, prompt.target_tokens["target"]].sum(-1))


def test_next_token_probs_unsqueeze(pair, tokenizer):
    model, hf_model = pair
    probs = next_token_probs_unsqueeze(model, "Hello world")
    assert probs.shape == (1, 1, model.vocab_size)
    close(probs[0, 0], Run(hf_model, tokenizer, "Hello world").logits[-1].softmax(-1))


def test_run_prompts_1x_calls(pair, tokenizer):
    model, hf_model = pair
    prompts = [
        Prompt.from_strings("Hello world", {"target": "!"}, model),
        Prompt.from_strings("The quick brown", {"target": "fox"}, model),
    ]
    # batch_size, get_probs_func, func_kwargs, remote: 1.x's positional order.
    result = run_prompts(model, prompts, 2, None, None, False)
    assert result["target"].shape == (2,)
    for row, prompt in enumerate(prompts):
        hand = Run(hf_model, tokenizer, prompt.prompt).logits[-1].softmax(-1)
        close(result["target"][row], hand[prompt.target_tokens["target"]].sum())
    per_layer = run_prompts(model, prompts, batch_size=1, get_probs_func=next_token_probs_unsqueeze)
    assert per_layer["target"].shape == (2, 1)
    close(per_layer["target"][:, 0], result["target"])


# ---------------------------------------------------------------- target prompts


def test_repeat_prompt_is_1x():
    default = repeat_prompt()
    assert default == TargetPrompt("king king\n1135 1135\nhello hello\n?", index_to_patch=-1)
    custom = repeat_prompt(words=["cat", "dog"], rel="->", sep=" | ", placeholder="X", index_to_patch=3)
    assert custom == TargetPrompt("cat->cat | dog->dog | X", index_to_patch=3)


def test_target_prompt_batch_1x_forms():
    batch = TargetPromptBatch.from_target_prompts([TargetPrompt("Hello", -1), TargetPrompt("World", 0)])
    assert batch.prompts == ["Hello", "World"] and batch.index_to_patch.tolist() == [-1, 0]
    assert [(p.prompt, p.index_to_patch) for p in batch] == [("Hello", -1), ("World", 0)]
    assert TargetPromptBatch.auto(TargetPrompt("Hi", -1), batch_size=3).prompts == ["Hi"] * 3
    assert TargetPromptBatch.from_prompts("Hello", -1).index_to_patch.tolist() == [-1]
    assert TargetPromptBatch.from_target_prompt(TargetPrompt("T", -1), 3).index_to_patch.tolist() == [-1] * 3


TEMPLATE = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}"


def test_it_repeat_prompt_renders_1x_conversation():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = TEMPLATE
    lines = "king king\n1135 1135\nhello hello\n?"
    with pytest.warns(DeprecationWarning, match="repeat_prompt_chat"):
        target = it_repeat_prompt(tokenizer)
    assert target == TargetPrompt(
        "[system]You are a helpful assistant."
        "[user]I will provide you with a series of sentences. Your task is to guess the next word "
        "in the sentence. You must answer with the next word only."
        f"[assistant]Ok.[user]{lines}[assistant]{lines}",
        -1,
    )
    with pytest.warns(DeprecationWarning):
        bare = it_repeat_prompt(
            tokenizer, words=["a"], complete_prompt=False, add_user_instr=False, use_system_prompt=False
        )
    assert bare.prompt == (
        "[user]Guess the next word in the following sentence (answer only the next word): a a\n?[assistant]"
    )


# ---------------------------------------------------------------- patchscopes


SOURCES = ["Hello world", "The cat sat"]
TARGET = TargetPrompt("a b c ?", -1)


def hand_patchscope(hf_model, tokenizer, sources, target, layers):
    """(num_sources, len(layers), vocab): target's next-token probs with its layer-l output at
    ``target.index_to_patch`` replaced by the source's last-token layer-l output."""
    rows = []
    for source in sources:
        outputs = Run(hf_model, tokenizer, source).outputs
        rows.append(torch.stack([
            Run(hf_model, tokenizer, target.prompt, {l: put(target.index_to_patch, outputs[l][-1])}).logits[-1].softmax(-1)
            for l in layers
        ]))
    return torch.stack(rows)


def test_patchscope_lens_latents_in_1x_layout(pair, tokenizer):
    model, hf_model = pair
    assert len(SOURCES) == model.num_layers  # the case a swapped layout would get silently wrong
    latents = get_token_activations(model, SOURCES)
    assert latents.shape == (model.num_layers, len(SOURCES), model.hidden_size)
    expected = hand_patchscope(hf_model, tokenizer, SOURCES, TARGET, range(model.num_layers))
    from_latents = patchscope_lens(model, source_prompts=None, target_patch_prompts=TARGET, latents=latents)
    assert from_latents.shape == (len(SOURCES), model.num_layers, model.vocab_size)
    close(from_latents, expected)
    close(patchscope_lens(model, SOURCES, TARGET), expected)
    one_layer = patchscope_lens(model, target_patch_prompts=TARGET, layers=[1], latents=latents)
    close(one_layer, expected[:, 1:])


def test_patchscope_lens_rejects_the_swapped_layout():
    model, _ = wrapped("llama")
    latents = torch.zeros(3, model.num_layers, model.hidden_size)
    with pytest.raises(InvalidInputError, match=r"transpose\(0, 1\)"):
        patchscope_lens(model, target_patch_prompts=TARGET, latents=latents)


def test_patchscope_generate_1x_keywords(pair, tokenizer):
    model, hf_model = pair
    source, target = "The capital of France", TargetPrompt("Paris is located in", -1)
    with pytest.warns(DeprecationWarning) as caught:
        result = patchscope_generate(model, prompts=[source], target_patch_prompt=target, max_length=3, layers=[0, 1])
    named = " ".join(str(w.message) for w in caught)
    assert all(name in named for name in ("source_prompts=", "target_patch_prompts=", "max_new_tokens="))
    assert sorted(result) == [0, 1]
    outputs = Run(hf_model, tokenizer, source).outputs
    for layer, ids in result.items():
        hand = Run(hf_model, tokenizer, target.prompt, {layer: put(-1, outputs[layer][-1])}, steps=3).sequence
        assert ids.shape == (1, len(hand))
        assert ids[0].tolist() == hand.tolist()  # 1.x's layout: prompt ids then new ids
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        positional = patchscope_generate(model, [source], target, 3, [0])
    assert torch.equal(positional[0], result[0])


def test_patchscope_generate_rejects_both_names():
    model, _ = wrapped("llama")
    with pytest.raises(InvalidInputError, match="source_prompts= only"):
        patchscope_generate(model, ["a"], TARGET, 1, prompts=["b"])


def test_positive_index_in_a_padded_target_batch_warns_and_counts_within_each_prompt(tokenizer):
    model, hf_model = wrapped("llama")
    targets = [TargetPrompt("The cat sat on the mat", 1), TargetPrompt("Hello", 0)]
    with pytest.warns(UserWarning, match="left-padded batch") as caught:
        probs = patchscope_lens(model, ["Hello world", "The cat"], targets, layers=[0])
    assert caught[0].filename == __file__  # the warning points at the caller
    for row, (source, target) in enumerate(zip(["Hello world", "The cat"], targets)):
        close(probs[row], hand_patchscope(hf_model, tokenizer, [source], target, [0])[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patchscope_lens(model, ["Hello world", "The cat"], [TargetPrompt("The cat sat", -2), TargetPrompt("Hi", -1)], layers=[0])


# ---------------------------------------------------------------- attention lens, steering, logit lens


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_patch_object_attn_lens(model_type, tokenizer):
    model, hf_model = wrapped(model_type)
    source, target, index = "Hello world", "The cat sat on", 1
    result = patch_object_attn_lens(model, source_prompts=[source], target_prompts=[target], attn_idx_patch=index, num_patches=1)
    assert result.shape == (1, model.num_layers, model.vocab_size)
    inputs = Run(hf_model, tokenizer, source).attn_inputs
    for layer in range(model.num_layers):
        hand = Run(hf_model, tokenizer, target, attn_edits={layer: put(index, inputs[layer][-1])})
        close(result[0, layer], hand.logits[-1].softmax(-1))
    both = patch_object_attn_lens(model, source, target, index, num_patches=2)
    hand = Run(hf_model, tokenizer, target, attn_edits={l: put(index, inputs[l][-1]) for l in (0, 1)})
    close(both[0, 0], hand.logits[-1].softmax(-1))


def test_steer_positions_alias_warns_and_matches_a_hand_edit(pair, tokenizer):
    model, hf_model = pair
    vector = torch.randn(model.hidden_size)
    with model.trace("The weather today is"):
        with pytest.warns(DeprecationWarning, match="token_positions"):
            steer(model, layers=[1], steering_vector=vector, factor=1.5, positions=-1)
        logits = model.logits.save()

    def add(hidden):
        hidden[0, -1] += 1.5 * vector
        return hidden

    close(logits[0], Run(hf_model, tokenizer, "The weather today is", {1: add}).logits, atol=1e-4)
    with pytest.raises(InvalidInputError, match="token_positions"):
        with model.trace("x"):
            steer(model, 0, vector, positions=-1, token_positions=-1)


def test_logit_lens_1x_positional_and_inverse_logits(pair, tokenizer):
    model, hf_model = pair
    prompts = ["Hello world", "The cat sat"]
    with pytest.warns(DeprecationWarning, match="remote="):
        probs = logit_lens(model, prompts, False)
    probs2, inverse = logit_lens(model, prompts, return_inv_logits=True)
    assert probs.shape == inverse.shape == (2, model.num_layers, model.vocab_size)
    close(probs2, probs)
    norm = final_norm(hf_model)
    for row, prompt in enumerate(prompts):
        outputs = Run(hf_model, tokenizer, prompt).outputs
        for layer, hidden in enumerate(outputs):
            close(probs[row, layer], lens_probs(hf_model, hidden[-1]))
            hand_inverse = softcap(hf_model, hf_model.lm_head(-norm(hidden[-1]))).softmax(-1)
            close(inverse[row, layer], hand_inverse)


# ---------------------------------------------------------------- the reference document on SmolLM2


@pytest.fixture(scope="module")
def smollm2():
    from nnterp import load_default_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_default_model()


@pytest.fixture(scope="module")
def smollm2_hf():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nnterp.default_model import default_model_path

    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
    model.eval()
    return model, AutoTokenizer.from_pretrained(path, local_files_only=True)


@pytest.mark.slow
def test_reference_target_tracking(smollm2, smollm2_hf):
    hf_model, hf_tokenizer = smollm2_hf
    text = "The capital of France (not England or Spain) is"
    categories = {"target": "Paris", "traps": ["London", "Madrid"], "concept": ["France", "country"]}
    prompts = [Prompt.from_strings(text, categories, smollm2.tokenizer)]
    assert Prompt.from_strings(text, categories, smollm2).target_tokens == prompts[0].target_tokens
    results = run_prompts(smollm2, prompts, batch_size=2)
    hand = Run(hf_model, hf_tokenizer, text).logits[-1].softmax(-1)
    for category, words in categories.items():
        ids = hand_first_tokens(hf_tokenizer, words)
        assert results[category].shape == (1,)
        close(results[category][0], hand[ids].sum(), atol=1e-4)


@pytest.mark.slow
def test_reference_logit_lens_with_target_tracking(smollm2, smollm2_hf):
    hf_model, hf_tokenizer = smollm2_hf
    prompts = [
        Prompt.from_strings("The translation of 'car' in French is", {"target": ["voiture", "bagnole"], "english": "car"}, smollm2.tokenizer),
        Prompt.from_strings("The translation of 'cat' in Spanish is", {"target": ["gato", "minino"], "english": "cat"}, smollm2.tokenizer),
    ]
    results = run_prompts(smollm2, prompts, batch_size=2, get_probs_func=logit_lens)
    for row, prompt in enumerate(prompts):
        outputs = Run(hf_model, hf_tokenizer, prompt.prompt).outputs
        hand = torch.stack([lens_probs(hf_model, hidden[-1]) for hidden in outputs])
        for category, tokens in prompt.target_tokens.items():
            assert results[category].shape == (2, smollm2.num_layers)
            close(results[category][row], hand[:, tokens].sum(-1), atol=1e-4)


@pytest.mark.slow
def test_reference_patchscope(smollm2, smollm2_hf):
    hf_model, hf_tokenizer = smollm2_hf
    assert TargetPrompt("The capital of France is", index_to_patch=-1).index_to_patch == -1
    target = repeat_prompt(words=["king", "hello", "world"])
    sources = ["The capital of France is", "The capital of England is"]
    probs = patchscope_lens(smollm2, source_prompts=sources, target_patch_prompts=target)
    assert probs.shape == (2, smollm2.num_layers, smollm2.vocab_size)
    layers = [0, smollm2.num_layers // 2, smollm2.num_layers - 1]
    close(probs[:, layers], hand_patchscope(hf_model, hf_tokenizer, sources, target, layers), atol=1e-4)


@pytest.mark.slow
def test_reference_steer(smollm2, smollm2_hf):
    hf_model, hf_tokenizer = smollm2_hf
    steering_vector = torch.randn(smollm2.config.hidden_size)
    with smollm2.trace("The weather today is"):
        steer(smollm2, layers=[5, 10], steering_vector=steering_vector, factor=1.5)
        steered_output = smollm2.logits.save()

    def add(hidden):
        return hidden + 1.5 * steering_vector

    hand = Run(hf_model, hf_tokenizer, "The weather today is", {5: add, 10: add}).logits
    close(steered_output[0], hand, atol=1e-3)
