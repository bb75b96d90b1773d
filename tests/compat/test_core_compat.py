"""nnterp 1.x's core API, called as 1.x documents it, against plain HF forwards with hooks.

Covers `nnterp.nnsight_utils` (every public name, on a `StandardizedTransformer` and on a plain
NNsight model with Llama naming), ``get_token_activations(..., tracer=tracer)``,
`nnterp.ModuleAccessor`, ``attn_probs_available`` / ``input_size``, ``steer(positions=...)``
and ``RenameConfig`` / ``rename_config=``. Every expected value is computed on the plain HF
model: forward hooks, one prompt at a time (no padding), and the final norm and head applied
by hand.
"""

from __future__ import annotations

import warnings

import nnsight
import nnterp
import pytest
import torch
from nnterp import nnsight_utils as nu
from nnterp.errors import InvalidInputError, RenamingError, UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

PROMPTS = ["The capital of France is", "Hi", "one two three four five", "cat sat"]

#: The public names of nnterp 1.3's ``nnterp.nnsight_utils`` (its functions and classes, and
#: the names it re-exported).
NNSIGHT_UTILS_1X = [
    "get_embed_tokens", "get_layers", "get_num_layers", "get_layer", "get_layer_input",
    "get_layer_output", "get_attention", "get_attention_output", "get_mlp", "get_mlp_output",
    "get_logits", "get_unembed_norm", "get_unembed", "project_on_vocab", "get_next_token_probs",
    "set_layer_output", "ModuleAccessor", "get_token_activations",
    "collect_last_token_activations_session", "collect_token_activations_batched",
    "compute_next_token_probs", "GetModuleOutput", "TraceTensor", "unpack_tuple",
    "StandardizedTransformer", "get_rename_dict", "RenameConfig", "LanguageModel", "NNsight", "Envoy",
]


# -- the hand computation -------------------------------------------------------------------


def _hidden(value):
    return value[0] if isinstance(value, tuple) else value


def hooked(hf_model, prompt, tokenizer, layers_path="model.layers", parts=("self_attn", "mlp")):
    """One prompt through the plain HF model: per layer its input, output and each part's
    output (seq, dim), and the logits (seq, vocab)."""
    layers = hf_model.get_submodule(layers_path)
    record: dict = {"input": [], "output": [], **{part: [] for part in parts}}
    handles = []
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(
            lambda _m, args, kwargs: record["input"].append((args[0] if args else kwargs["hidden_states"])[0]),
            with_kwargs=True))
        handles.append(layer.register_forward_hook(lambda _m, _i, out: record["output"].append(_hidden(out)[0])))
        for part in parts:
            handles.append(layer.get_submodule(part).register_forward_hook(
                lambda _m, _i, out, part=part: record[part].append(_hidden(out)[0])))
    try:
        with torch.no_grad():
            logits = hf_model(**tokenizer(prompt, return_tensors="pt")).logits[0]
    finally:
        for handle in handles:
            handle.remove()
    record = {key: torch.stack(values) for key, values in record.items()}  # (layers, seq, dim)
    record["logits"] = logits
    return record


def close(actual, expected):
    torch.testing.assert_close(actual, expected, atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def llama_pair():
    """(StandardizedTransformer, its plain HF model) for a tiny Llama, attention probabilities on."""
    hf_model = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nnterp.StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)
    return model, hf_model


@pytest.fixture(scope="module")
def plain_llama():
    """A plain NNsight ``LanguageModel`` (Llama naming, no nnterp renaming) and its HF model."""
    from nnsight import LanguageModel

    hf_model = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LanguageModel(hf_model, tokenizer=tiny_tokenizer())
    return model, hf_model


# -- nnsight_utils ---------------------------------------------------------------------------


def test_every_public_name_of_nnsight_utils_1x_is_there():
    missing = [name for name in NNSIGHT_UTILS_1X if not hasattr(nu, name)]
    assert missing == []
    assert nu.ModuleAccessor is nnterp.ModuleAccessor
    assert nu.StandardizedTransformer is nnterp.StandardizedTransformer


@pytest.mark.parametrize("kind", ["standardized", "plain"])
def test_getters_read_what_the_hf_modules_compute(kind, llama_pair, plain_llama):
    model, hf_model = llama_pair if kind == "standardized" else plain_llama
    tokenizer = model.tokenizer
    expected = hooked(hf_model, PROMPTS[0], tokenizer)
    last = hf_model.config.num_hidden_layers - 1
    assert nu.get_num_layers(model) == hf_model.config.num_hidden_layers
    assert nu.get_layer(model, -1)._module is hf_model.model.layers[last]
    assert nu.get_attention(model, 1)._module is hf_model.model.layers[1].self_attn
    assert nu.get_mlp(model, 1)._module is hf_model.model.layers[1].mlp
    assert nu.get_unembed_norm(model)._module is hf_model.model.norm
    assert nu.get_unembed(model)._module is hf_model.lm_head
    assert nu.get_embed_tokens(model)._module is hf_model.model.embed_tokens
    assert nu.get_layers(model)[0]._module is hf_model.model.layers[0]
    with torch.no_grad(), model.trace(PROMPTS[0]):
        layer_in = nu.get_layer_input(model, 0).save()
        attn = nu.get_attention_output(model, 0).save()
        mlp = nu.get_mlp_output(model, 0).save()
        layer_out = nu.get_layer_output(model, last).save()
        projected = nu.project_on_vocab(model, layer_out).save()
        logits = nu.get_logits(model).save()
        probs = nu.get_next_token_probs(model).save()
    close(layer_in[0], expected["input"][0])
    close(attn[0], expected["self_attn"][0])
    close(mlp[0], expected["mlp"][0])
    close(layer_out[0], expected["output"][last])
    close(logits[0], expected["logits"])
    by_hand = hf_model.lm_head(hf_model.model.norm(expected["output"][last]))
    close(projected[0], by_hand.detach())
    close(probs[0], expected["logits"][-1].softmax(-1))


@pytest.mark.parametrize("kind", ["standardized", "plain"])
def test_set_layer_output_replaces_what_the_layer_returns(kind, llama_pair, plain_llama):
    model, hf_model = llama_pair if kind == "standardized" else plain_llama
    with torch.no_grad(), model.trace(PROMPTS[0]):
        nu.set_layer_output(model, 1, nu.get_layer_output(model, 0) * 3.0)
        logits = nu.get_logits(model).save()
    # By hand: layer 1 returns three times what layer 0 returned.
    layer0 = hooked(hf_model, PROMPTS[0], model.tokenizer)["output"][0]
    handle = hf_model.model.layers[1].register_forward_hook(lambda _m, _i, out: layer0[None] * 3.0)
    try:
        with torch.no_grad():
            expected = hf_model(**model.tokenizer(PROMPTS[0], return_tensors="pt")).logits[0]
    finally:
        handle.remove()
    close(logits[0], expected)


@pytest.mark.parametrize("kind", ["standardized", "plain"])
@pytest.mark.parametrize("idx", [-1, 0, 1])
def test_get_token_activations_1x_call_gives_each_prompts_token(kind, idx, llama_pair, plain_llama):
    model, hf_model = llama_pair if kind == "standardized" else plain_llama
    # 1.x positional order: (model, prompts, layers, get_activations, remote, idx)
    acts = nu.get_token_activations(model, PROMPTS, [1, 0], None, False, idx)
    mlps = nu.get_token_activations(model, PROMPTS, layers=[1], get_activations=nu.get_mlp_output, idx=idx)
    assert acts.shape == (2, len(PROMPTS), hf_model.config.hidden_size)
    for row, prompt in enumerate(PROMPTS):
        expected = hooked(hf_model, prompt, model.tokenizer)
        close(acts[0, row], expected["output"][1, idx])
        close(acts[1, row], expected["output"][0, idx])
        close(mlps[0, row], expected["mlp"][1, idx])


@pytest.mark.parametrize("kind", ["standardized", "plain"])
def test_get_token_activations_with_tracer_is_1x_logit_lens(kind, llama_pair, plain_llama):
    """nnterp 1.x's own ``logit_lens`` body, run unchanged."""
    model, hf_model = llama_pair if kind == "standardized" else plain_llama
    with torch.no_grad(), model.trace(PROMPTS) as tracer:
        hiddens_l = nu.get_token_activations(model, PROMPTS, tracer=tracer)
        probs_l = []
        for hiddens in hiddens_l:
            logits = nu.project_on_vocab(model, hiddens)
            probs_l.append(logits.softmax(-1).cpu())
        probs = torch.stack(probs_l).transpose(0, 1).save()
    assert probs.shape == (len(PROMPTS), hf_model.config.num_hidden_layers, hf_model.config.vocab_size)
    for row, prompt in enumerate(PROMPTS):
        states = hooked(hf_model, prompt, model.tokenizer)["output"][:, -1]
        by_hand = hf_model.lm_head(hf_model.model.norm(states)).softmax(-1)
        close(probs[row], by_hand.detach())


def test_get_token_activations_with_tracer_and_a_first_token_index(llama_pair):
    model, hf_model = llama_pair
    with torch.no_grad(), model.trace(PROMPTS) as tracer:
        first = nu.get_token_activations(model, tracer=tracer, layers=[0], idx=0).save()
    for row, prompt in enumerate(PROMPTS):
        close(first[0, row], hooked(hf_model, prompt, model.tokenizer)["output"][0, 0])


def test_plain_model_padding_right_still_counts_within_each_prompt():
    from nnsight import LanguageModel

    hf_model = tiny_model("llama")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LanguageModel(hf_model, tokenizer=tiny_tokenizer(padding_side="right"))
    model.tokenizer.padding_side = "right"
    encoding = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    assert encoding["attention_mask"][1, -1] == 0  # really right-padded
    with torch.no_grad(), model.trace(dict(encoding)) as tracer:
        second = nu.get_token_activations(model, tracer=tracer, layers=[1], idx=1).save()
    with torch.no_grad(), model.trace(dict(encoding)) as tracer:
        last = nu.get_token_activations(model, tracer=tracer, layers=[1], idx=-1).save()
    for row, prompt in enumerate(PROMPTS):
        expected = hooked(hf_model, prompt, model.tokenizer)["output"][1]
        close(second[0, row], expected[1])
        close(last[0, row], expected[-1])


def test_get_token_activations_without_prompts_or_tracer_names_both(llama_pair):
    with pytest.raises(InvalidInputError, match="tracer"):
        nu.get_token_activations(llama_pair[0])


@pytest.mark.parametrize("kind", ["standardized", "plain"])
def test_batched_and_session_collection_in_the_callers_order(kind, llama_pair, plain_llama):
    model, hf_model = llama_pair if kind == "standardized" else plain_llama
    prompts = PROMPTS * 2 + ["The weather today is"]
    seen = []

    def progress(iterable):
        seen.append("bar")
        return iterable

    batched = nu.collect_token_activations_batched(model, prompts, 3, [0, 1], None, False, -1, progress)
    quiet = nu.collect_token_activations_batched(model, prompts, batch_size=2, tqdm=None, idx=0)
    session = nu.collect_last_token_activations_session(model, prompts, 2, layers=[1])
    assert seen == ["bar"]
    assert batched.shape == (2, len(prompts), hf_model.config.hidden_size)
    assert quiet.shape == (hf_model.config.num_hidden_layers, len(prompts), hf_model.config.hidden_size)
    assert session.shape == (1, len(prompts), hf_model.config.hidden_size)
    for row, prompt in enumerate(prompts):
        expected = hooked(hf_model, prompt, model.tokenizer)["output"]
        close(batched[:, row], expected[:, -1])
        close(quiet[:, row], expected[:, 0])
        close(session[0, row], expected[1, -1])


@pytest.mark.parametrize("kind", ["standardized", "plain"])
def test_compute_next_token_probs(kind, llama_pair, plain_llama):
    model, hf_model = llama_pair if kind == "standardized" else plain_llama
    probs = nu.compute_next_token_probs(model, PROMPTS)
    single = nu.compute_next_token_probs(model, PROMPTS[1])
    assert probs.shape == (len(PROMPTS), hf_model.config.vocab_size) and probs.device.type == "cpu"
    for row, prompt in enumerate(PROMPTS):
        close(probs[row], hooked(hf_model, prompt, model.tokenizer)["logits"][-1].softmax(-1))
    close(single[0], probs[1])


def test_unpack_tuple():
    hidden = torch.ones(2)
    assert nu.unpack_tuple((hidden, None)) is hidden and nu.unpack_tuple(hidden) is hidden


# -- ModuleAccessor ---------------------------------------------------------------------------


def test_module_accessor_names_the_hf_modules():
    gpt2 = tiny_model("gpt2")
    accessor = nnterp.ModuleAccessor(gpt2)
    assert accessor.get_layers() is gpt2.transformer.h and accessor.layers is gpt2.transformer.h
    assert accessor.get_attention(1) is gpt2.transformer.h[1].attn
    assert accessor.get_mlp(-1) is gpt2.transformer.h[1].mlp
    assert accessor.get_embed_tokens() is gpt2.transformer.wte and accessor.embed_tokens is gpt2.transformer.wte
    assert accessor.get_unembed_norm() is gpt2.transformer.ln_f and accessor.ln_final is gpt2.transformer.ln_f
    assert accessor.get_unembed() is gpt2.lm_head and accessor.lm_head is gpt2.lm_head
    assert accessor.transformer is gpt2.transformer
    with pytest.raises(AttributeError, match="not a module"):
        accessor.config


# -- StandardizedTransformer's 1.x names ---------------------------------------------------------


def test_attn_probs_available_and_input_size(llama_pair):
    model, hf_model = llama_pair
    assert model.attn_probs_available is True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        without = nnterp.StandardizedTransformer(tiny_model("llama"), tiny_tokenizer())
    assert without.attn_probs_available is False
    encoding = model.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad(), model.trace(PROMPTS):
        size = nnsight.save(model.input_size)
    assert tuple(size) == tuple(encoding["input_ids"].shape)


def test_steer_positions_is_the_deprecated_name_of_token_positions(llama_pair):
    model, hf_model = llama_pair
    vector = torch.randn(hf_model.config.hidden_size)
    prompt = PROMPTS[0]
    with pytest.warns(DeprecationWarning, match="token_positions"):
        with torch.no_grad(), model.trace(prompt):
            model.steer(layers=1, steering_vector=vector, factor=2.0, positions=[-1])
            keyword = model.logits.save()
    with pytest.warns(DeprecationWarning, match="token_positions"):
        with torch.no_grad(), model.trace(prompt):
            model.steer(1, vector, 2.0, [-1])  # 1.x positional order: positions fourth
            positional = model.logits.save()

    def add_at_last(_module, _inputs, output):
        hidden = _hidden(output).clone()
        hidden[:, -1] += 2.0 * vector
        return hidden

    handle = hf_model.model.layers[1].register_forward_hook(add_at_last)
    try:
        with torch.no_grad():
            expected = hf_model(**model.tokenizer(prompt, return_tensors="pt")).logits
    finally:
        handle.remove()
    close(keyword, expected)
    close(positional, expected)
    with pytest.raises(InvalidInputError, match="token_positions only"):
        with torch.no_grad(), model.trace(prompt):
            model.steer(layers=1, steering_vector=vector, positions=[-1], token_positions=[-1])


def test_trust_remote_code_as_second_positional_argument_warns():
    with pytest.warns(DeprecationWarning, match="trust_remote_code"):
        with pytest.raises(InvalidInputError, match="tokenizer"):
            nnterp.StandardizedTransformer(tiny_model("llama"), False)


# -- RenameConfig ---------------------------------------------------------------------------------


class LegacyConfig(PretrainedConfig):
    """Sizes under keys no default knows (width, heads, vocab, depth)."""

    model_type = "legacy_names"

    def __init__(self, vocab=512, width=32, depth=2, heads=4, with_mlp=True, **kwargs):
        self.vocab, self.width, self.depth, self.heads, self.with_mlp = vocab, width, depth, heads, with_mlp
        super().__init__(**kwargs)


class LegacyMixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.out = nn.Linear(config.width, config.width)

    def forward(self, x, padding_mask):
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (width // self.heads) ** 0.5
        allowed = torch.ones(length, length, dtype=torch.bool).tril()[None, None] & padding_mask[:, None, None].bool()
        weights = torch.softmax(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), dim=-1)
        return self.out((weights @ v).transpose(1, 2).reshape(batch, length, width))


class LegacyBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm_a, self.norm_b = nn.LayerNorm(config.width), nn.LayerNorm(config.width)
        self.mixer = LegacyMixer(config)
        if config.with_mlp:
            self.feed_forward = nn.Sequential(nn.Linear(config.width, 64), nn.GELU(), nn.Linear(64, config.width))

    def forward(self, x, padding_mask):
        x = x + self.mixer(self.norm_a(x), padding_mask)
        if not hasattr(self, "feed_forward"):
            return x
        return x + self.feed_forward(self.norm_b(x))


class LegacyBackbone(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab, config.width)
        self.stack = nn.ModuleList(LegacyBlock(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(config.width)


class LegacyNamesForCausalLM(PreTrainedModel, GenerationMixin):
    """A causal LM no plugin covers: ``backbone.stack[i].mixer`` / ``.feed_forward``,
    ``backbone.final_norm``, ``unembed``."""

    config_class = LegacyConfig

    def __init__(self, config):
        super().__init__(config)
        self.backbone = LegacyBackbone(config)
        self.unembed = nn.Linear(config.width, config.vocab, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, **kwargs):
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.backbone.embed_tokens(input_ids)
        for block in self.backbone.stack:
            x = block(x, mask)
        return CausalLMOutput(logits=self.unembed(self.backbone.final_norm(x)))


LEGACY_RENAME = dict(
    model_name="backbone", layers_name="stack", attn_name="mixer", mlp_name="feed_forward",
    ln_final_name="final_norm", lm_head_name="unembed",
    hidden_size_config_key="width", vocab_size_config_key="vocab",
)


def _legacy_model(**config):
    torch.manual_seed(0)
    return LegacyNamesForCausalLM(LegacyConfig(**config)).eval()


def test_rename_config_describes_a_model_no_plugin_covers():
    hf_model = _legacy_model()
    with pytest.raises(RenamingError):
        nnterp.StandardizedTransformer(hf_model, tiny_tokenizer())
    config = nnterp.RenameConfig(attn_head_config_key="heads", **LEGACY_RENAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nnterp.StandardizedTransformer(hf_model, tiny_tokenizer(), rename_config=config)
    assert model.layers[1].self_attn._module is hf_model.backbone.stack[1].mixer
    assert model.layers[0].mlp._module is hf_model.backbone.stack[0].feed_forward
    assert model.ln_final._module is hf_model.backbone.final_norm
    assert model.lm_head._module is hf_model.unembed
    assert (model.hidden_size, model.num_heads, model.num_layers) == (32, 4, 2)
    expected = hooked(hf_model, PROMPTS[0], model.tokenizer, "backbone.stack", ("mixer", "feed_forward"))
    with torch.no_grad(), model.trace(PROMPTS[0]):
        attn = model.attentions_output[0].save()
        mlp = model.mlps_output[1].save()
        out = model.layers_output[1].save()
        lens = model.project_on_vocab(out).save()
        logits = model.logits.save()
    close(attn[0], expected["mixer"][0])
    close(mlp[0], expected["feed_forward"][1])
    close(out[0], expected["output"][1])
    close(logits[0], expected["logits"])
    close(lens[0], expected["logits"])
    accessor = nnterp.ModuleAccessor(hf_model, rename_config=config)
    assert accessor.get_attention(0) is hf_model.backbone.stack[0].mixer
    assert accessor.get_unembed_norm() is hf_model.backbone.final_norm


def test_rename_config_number_of_heads_given_as_an_int():
    hf_model = _legacy_model()
    config = nnterp.RenameConfig(attn_head_config_key=2, **LEGACY_RENAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nnterp.StandardizedTransformer(hf_model, tiny_tokenizer(), rename_config=config)
    assert model.num_heads == 2 and hf_model.config.heads == 4


def test_rename_config_ignore_mlp_for_attention_only_layers():
    hf_model = _legacy_model(with_mlp=False)
    config = nnterp.RenameConfig(ignore_mlp=True, attn_head_config_key="heads", **LEGACY_RENAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nnterp.StandardizedTransformer(hf_model, tiny_tokenizer(), rename_config=config)
    expected = hooked(hf_model, PROMPTS[2], model.tokenizer, "backbone.stack", ("mixer",))
    with torch.no_grad(), model.trace(PROMPTS[2]):
        attn = model.attentions_output[1].save()
        out = model.layers_output[1].save()
    close(attn[0], expected["mixer"][1])
    close(out[0], expected["output"][1])
    with pytest.raises(UnavailableComponentError):
        with model.trace(PROMPTS[0]):
            model.mlps_output[0].save()


def test_rename_config_attention_probabilities_chain():
    hf_model = _legacy_model()
    without_chain = nnterp.RenameConfig(attn_head_config_key="heads", **LEGACY_RENAME)
    with pytest.raises((RenamingError, UnavailableComponentError)):
        nnterp.StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True, rename_config=without_chain)
    config = nnterp.RenameConfig(attn_prob_source=("torch.softmax",), attn_head_config_key="heads", **LEGACY_RENAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = nnterp.StandardizedTransformer(
            hf_model, tiny_tokenizer(), enable_attention_probs=True, rename_config=config
        )
    assert model.attn_probs_available
    with torch.no_grad(), model.trace(PROMPTS[0]):
        probs = model.attention_probabilities[1].save()
    # By hand: the softmax of layer 1's scaled, causally masked query-key scores.
    mixer = hf_model.backbone.stack[1].mixer
    entering = []
    handle = mixer.register_forward_pre_hook(lambda _m, args: entering.append(args[0]))
    try:
        with torch.no_grad():
            hf_model(**model.tokenizer(PROMPTS[0], return_tensors="pt"))
    finally:
        handle.remove()
    x = entering[0]
    length = x.shape[1]
    q, k, _ = mixer.qkv(x).view(1, length, 3, 4, 8).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2) / 8**0.5).masked_fill(~torch.ones(length, length, dtype=torch.bool).tril(), -1e30)
    close(probs, scores.softmax(-1).detach())


def test_get_rename_dict_is_1x_alias_table_for_plain_nnsight():
    from nnsight import NNsight

    table = nnterp.get_rename_dict(nnterp.RenameConfig(attn_name="mixer"))
    assert table["transformer"] == "model" and table["h"] == "layers" and table["mixer"] == "self_attn"
    gpt2 = tiny_model("gpt2")
    renamed = NNsight(gpt2, rename=table)
    assert renamed.model.layers[0].self_attn._module is gpt2.transformer.h[0].attn
    assert renamed.model.ln_final._module is gpt2.transformer.ln_f


# -- the real model ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    from nnterp import load_default_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_default_model()


@pytest.mark.slow
def test_real_model_1x_logit_lens_and_activations(smollm2):
    model, hf_model = smollm2, smollm2._module
    prompts = ["The capital of France is", "The weather today is nice and"]
    layers = [0, 14, 29]
    with torch.no_grad(), model.trace(prompts) as tracer:
        hiddens = nu.get_token_activations(model, prompts, layers, tracer=tracer)
        lens = nu.project_on_vocab(model, hiddens).softmax(-1).save()
    acts = nu.collect_token_activations_batched(model, prompts, 1, layers, tqdm=None)
    probs = nu.compute_next_token_probs(model, prompts)
    for row, prompt in enumerate(prompts):
        expected = hooked(hf_model, prompt, model.tokenizer)
        states = expected["output"][layers, -1]
        close(acts[:, row], states)
        by_hand = hf_model.lm_head(hf_model.model.norm(states)).softmax(-1)
        torch.testing.assert_close(lens[:, row], by_hand.detach(), atol=1e-5, rtol=1e-3)
        torch.testing.assert_close(probs[row], expected["logits"][-1].softmax(-1), atol=1e-5, rtol=1e-3)
    assert model.tokenizer.decode(int(probs[0].argmax())) == " Paris"
    accessor = nnterp.ModuleAccessor(hf_model)
    assert accessor.get_attention(29) is hf_model.model.layers[29].self_attn
