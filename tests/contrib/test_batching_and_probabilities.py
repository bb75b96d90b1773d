"""GLM-MoE-DSA batching, MiMo-V2-Flash attention probabilities, and the reasons Reformer and
MusicGen are not standardized, each checked against the plain HF model with torch hooks.

- GLM-MoE-DSA's sparse-attention indexer keeps the top ``index_topk`` keys per query; the tiny
  spec gives it enough indexer heads that no two real keys tie at the top-k boundary, so the
  plain model keeps the same keys for a prompt in a left-padded batch as alone, and nnterp's
  batch equals the plain model run on each prompt alone.
- MiMo-V2-Flash's probabilities (sliding layers have learned sinks) equal the weights its eager
  attention returns; rows sum to 1 on full-attention layers and to less on sink layers.
- Reformer's two reversible streams and MusicGen's codebook embeddings/heads, as the
  ``NOT_STANDARDIZED`` reasons state them.
"""

from __future__ import annotations

import warnings

import nnsight
import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.contrib.families.audio_and_reversible import (
    NOT_STANDARDIZED,
    SPECS,
    TINY_CONFIGS,
    tiny_unstandardized_model,
)
from nnterp.contrib.families.llama_like import DSA, MIMO_V2_FLASH
from nnterp.errors import InvalidInputError, UnavailableComponentError
from nnterp.plugins import get_registry
from nnterp.testing import tiny_model, tiny_tokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

PROMPTS = ["The capital of France is", "Hello world", "The cat sat on the mat and the dog"]


def _padded(tokenizer, prompts=PROMPTS) -> dict[str, torch.Tensor]:
    encoding = tokenizer(list(prompts), return_tensors="pt", padding=True)
    return {"input_ids": encoding["input_ids"], "attention_mask": encoding["attention_mask"]}


def _mask_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


# -- GLM-MoE-DSA ---------------------------------------------------------------------------


def _indexer_selections(model, encoding) -> list[torch.Tensor]:
    """The top-k key indices each layer's DSA indexer returns in one plain forward."""
    selections: list[torch.Tensor] = []
    handles = [
        layer.self_attn.indexer.register_forward_hook(lambda _m, _a, out: selections.append(out.clone()))
        for layer in model.model.layers
    ]
    try:
        with torch.no_grad():
            model(**encoding)
    finally:
        for handle in handles:
            handle.remove()
    return selections


def test_glm_moe_dsa_spec_is_registered_with_its_tiny_indexer():
    spec = get_registry().spec_for_class_names(["GlmMoeDsaForCausalLM"])
    assert spec is DSA
    model = tiny_model("glm_moe_dsa")
    assert model.config.index_n_heads == DSA.tiny_config["index_n_heads"]
    # The sparse selection is exercised: the longest prompt has more keys than index_topk.
    longest = max(len(ids) for ids in tiny_tokenizer()(PROMPTS)["input_ids"])
    assert longest > model.config.index_topk


def test_glm_moe_dsa_plain_indexer_keeps_the_same_real_keys_in_a_padded_batch():
    model, tokenizer = tiny_model("glm_moe_dsa"), tiny_tokenizer()
    encoding = _padded(tokenizer)
    encoding["position_ids"] = _mask_positions(encoding["attention_mask"])
    batch = _indexer_selections(model, encoding)
    width = encoding["input_ids"].shape[1]
    for row, prompt in enumerate(PROMPTS):
        alone = _indexer_selections(model, dict(tokenizer([prompt], return_tensors="pt")))
        length = alone[0].shape[1]
        pad = width - length
        for layer, (in_batch, by_itself) in enumerate(zip(batch, alone)):
            for query in range(length):
                # Only the selected keys a query may attend to (real, not in its future) matter.
                kept = {int(k) - pad for k in in_batch[row, pad + query] if pad <= int(k) <= pad + query}
                kept_alone = {int(k) for k in by_itself[0, query] if int(k) <= query}
                assert kept == kept_alone, (row, layer, query)


def test_glm_moe_dsa_padded_batch_equals_each_prompt_alone_in_plain_hf():
    hf_model, tokenizer = tiny_model("glm_moe_dsa"), tiny_tokenizer()
    model = StandardizedTransformer(hf_model, tokenizer)
    with torch.no_grad(), model.trace(_padded(tokenizer)):
        batch_logits = nnsight.save(model.logits)
    for row, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            alone = hf_model(**tokenizer([prompt], return_tensors="pt")).logits
        torch.testing.assert_close(batch_logits[row, -alone.shape[1] :], alone[0], atol=1e-5, rtol=1e-4)


# -- MiMo-V2-Flash -------------------------------------------------------------------------


def _returned_weights(model, encoding) -> dict[int, torch.Tensor]:
    """The attention weights each layer's eager attention returns (its second output)."""
    weights: dict[int, torch.Tensor] = {}
    handles = [
        layer.self_attn.register_forward_hook(
            lambda _m, _a, out, index=index: weights.__setitem__(index, out[1].detach().clone())
        )
        for index, layer in enumerate(model.model.layers)
    ]
    try:
        with torch.no_grad():
            model(**encoding)
    finally:
        for handle in handles:
            handle.remove()
    return weights


@pytest.fixture(scope="module")
def mimo():
    hf_model, tokenizer = tiny_model("mimo_v2_flash"), tiny_tokenizer()
    return hf_model, tokenizer, StandardizedTransformer(hf_model, tokenizer, enable_attention_probs=True)


def test_mimo_probabilities_equal_the_plain_attention_weights(mimo):
    hf_model, tokenizer, model = mimo
    encoding = _padded(tokenizer)
    plain = _returned_weights(hf_model, {**encoding, "position_ids": _mask_positions(encoding["attention_mask"])})
    read = []
    with torch.no_grad(), model.trace(encoding):
        for layer in range(model.num_layers):
            read.append(nnsight.save(model.attention_probabilities[layer]))
    layer_types = hf_model.config.layer_types
    assert {"full_attention", "sliding_attention"} <= set(layer_types[: model.num_layers])
    for layer, probabilities in enumerate(read):
        assert probabilities.shape == plain[layer].shape
        torch.testing.assert_close(probabilities, plain[layer])
        # Rows of real query positions (a padding query attends to no real key: on sink layers
        # its whole weight goes to the sink).
        real = encoding["attention_mask"].bool()
        sums = probabilities.sum(-1).transpose(1, 2)[real]  # (real queries, heads)
        if hf_model.model.layers[layer].self_attn.sinks is None:
            torch.testing.assert_close(sums, torch.ones_like(sums))
        else:  # the sink takes a share of every row
            assert bool((sums < 1).all()) and bool((sums > 0).all())


def test_mimo_probability_edit_reaches_the_plain_computation(mimo):
    hf_model, tokenizer, model = mimo
    encoding = dict(tokenizer([PROMPTS[0]], return_tensors="pt"))
    sink_layer = next(i for i, layer in enumerate(hf_model.model.layers) if layer.self_attn.sinks is not None)
    with torch.no_grad(), model.trace(encoding):
        probabilities = model.attention_probabilities[sink_layer]
        model.attention_probabilities[sink_layer] = torch.zeros_like(probabilities)
        edited = nnsight.save(model.logits)
    # Plain HF with the same edit: zero weights make the attention's head outputs zero.
    handle = hf_model.model.layers[sink_layer].self_attn.o_proj.register_forward_pre_hook(
        lambda _m, args: (torch.zeros_like(args[0]),)
    )
    try:
        with torch.no_grad():
            expected = hf_model(**encoding).logits
    finally:
        handle.remove()
    torch.testing.assert_close(edited, expected)


def test_mimo_per_head_sites_follow_each_layers_head_sizes_and_counts(mimo):
    # Query/key heads are head_dim wide, value heads v_head_dim, and sliding-window layers have
    # twice the key/value heads of full layers: keys and values split per layer against the
    # plain projections' outputs.
    hf_model, tokenizer, model = mimo
    config = hf_model.config
    assert config.head_dim != config.v_head_dim
    full, sliding = (
        next(i for i, layer in enumerate(hf_model.model.layers) if layer.self_attn.layer_type == kind)
        for kind in ("full_attention", "sliding_attention")
    )
    attentions = [hf_model.model.layers[i].self_attn for i in (full, sliding)]
    assert attentions[1].k_proj.out_features == 2 * attentions[0].k_proj.out_features
    seen = {}
    handles = [
        getattr(attention, name).register_forward_hook(
            lambda _m, _a, out, key=(layer, name): seen.__setitem__(key, out.detach())
        )
        for layer, attention in zip((full, sliding), attentions)
        for name in ("k_proj", "v_proj", "o_proj")
    ]
    handles += [
        attention.o_proj.register_forward_pre_hook(
            lambda _m, args, layer=layer: seen.__setitem__((layer, "z"), args[0].detach())
        )
        for layer, attention in zip((full, sliding), attentions)
    ]
    encoding = dict(tokenizer([PROMPTS[0]], return_tensors="pt"))
    try:
        with torch.no_grad():
            hf_model(**encoding)
    finally:
        for handle in handles:
            handle.remove()
    values = {}  # made outside the trace: NNsight pushes back the body's updates to it
    with torch.no_grad(), model.trace(encoding):
        for layer in sorted((full, sliding)):
            values[layer] = (
                nnsight.save(model.keys[layer]),
                nnsight.save(model.values[layer]),
                nnsight.save(model.heads_output[layer]),
            )
    for layer in (full, sliding):
        keys, vals, heads = values[layer]
        kv_heads = seen[(layer, "k_proj")].shape[-1] // config.head_dim
        torch.testing.assert_close(keys, seen[(layer, "k_proj")].unflatten(-1, (kv_heads, config.head_dim)))
        torch.testing.assert_close(vals, seen[(layer, "v_proj")].unflatten(-1, (kv_heads, config.v_head_dim)))
        torch.testing.assert_close(heads, seen[(layer, "z")].unflatten(-1, (config.num_attention_heads, config.v_head_dim)))
    support = model.support()
    assert "sink" in support["attention_scores"]
    with pytest.raises(UnavailableComponentError, match="sink"), model.trace(PROMPTS[0]):
        model.attention_scores[1].save()


# -- Reformer and MusicGen: not standardized -----------------------------------------------


def test_not_standardized_types_have_no_spec_and_build_tiny():
    registry = get_registry()
    assert SPECS == ()
    assert set(TINY_CONFIGS) == set(NOT_STANDARDIZED)
    for model_type in NOT_STANDARDIZED:
        class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
        assert registry.spec_for_class_names([class_name]) is None, model_type
        assert type(tiny_unstandardized_model(model_type)).__name__ == class_name
    with pytest.raises(InvalidInputError, match="model_type"):
        tiny_unstandardized_model("llama")


def test_reformer_layers_carry_two_reversible_streams():
    model, tokenizer = tiny_unstandardized_model("reformer"), tiny_tokenizer()
    seen: dict = {}
    handles = []
    for index, layer in enumerate(model.reformer.encoder.layers):
        handles.append(
            layer.register_forward_hook(
                lambda _m, _a, kwargs, out, i=index: seen.__setitem__(("layer", i), (kwargs, out)),
                with_kwargs=True,
            )
        )
        handles.append(
            layer.attention.register_forward_hook(lambda _m, _a, out, i=index: seen.__setitem__(("attn", i), out))
        )
        handles.append(
            layer.feed_forward.register_forward_hook(lambda _m, _a, out, i=index: seen.__setitem__(("ff", i), out))
        )
    handles.append(
        model.reformer.encoder.layer_norm.register_forward_pre_hook(lambda _m, args: seen.__setitem__("norm", args[0]))
    )
    encoding = dict(tokenizer([PROMPTS[2]], return_tensors="pt"))
    try:
        with torch.no_grad():
            logits = model(**encoding).logits
    finally:
        for handle in handles:
            handle.remove()
    hidden = model.config.hidden_size
    for index in range(len(model.reformer.encoder.layers)):
        kwargs, out = seen[("layer", index)]
        x1, x2 = kwargs["prev_attn_output"], kwargs["hidden_states"]
        # Y1 = X1 + attention(X2): the attention adds to the first stream only ...
        torch.testing.assert_close(out.attn_output - x1, seen[("attn", index)].hidden_states)
        # ... and Y2 = X2 + feed_forward(Y1): the feed-forward adds to the second.
        torch.testing.assert_close(out.hidden_states - x2, seen[("ff", index)])
    last = seen[("layer", len(model.reformer.encoder.layers) - 1)][1]
    assert seen["norm"].shape[-1] == 2 * hidden
    torch.testing.assert_close(seen["norm"], torch.cat([last.attn_output, last.hidden_states], dim=-1))
    # The layers see the input padded to a multiple of the chunk length.
    length = encoding["input_ids"].shape[1]
    assert logits.shape[1] == length
    assert last.hidden_states.shape[1] > length
    assert last.hidden_states.shape[1] % model.config.local_attn_chunk_length == 0


@pytest.mark.parametrize("model_type", ["musicgen", "musicgen_melody"])
def test_musicgen_decodes_parallel_codebooks(model_type):
    model = tiny_unstandardized_model(model_type)
    decoder = model.model.decoder
    codebooks, vocab = model.config.num_codebooks, model.config.vocab_size
    assert isinstance(decoder.embed_tokens, torch.nn.ModuleList) and len(decoder.embed_tokens) == codebooks
    assert isinstance(model.lm_heads, torch.nn.ModuleList) and len(model.lm_heads) == codebooks
    batch, seq = 2, 5
    codes = torch.randint(0, vocab, (batch * codebooks, seq), generator=torch.Generator().manual_seed(0))
    seen: dict = {}
    handles = [
        table.register_forward_hook(lambda _m, _a, out, k=k: seen.__setitem__(("embed", k), out))
        for k, table in enumerate(decoder.embed_tokens)
    ]
    handles.append(decoder.embed_positions.register_forward_hook(lambda _m, _a, out: seen.__setitem__("pos", out)))
    handles.append(
        decoder.layers[0].register_forward_pre_hook(
            lambda _m, args, kwargs: seen.__setitem__("layer0", args[0] if args else kwargs["hidden_states"]),
            with_kwargs=True,
        )
    )
    try:
        with torch.no_grad():
            logits = model(input_ids=codes).logits
    finally:
        for handle in handles:
            handle.remove()
    # The layers' batch is the input's rows divided by the codebooks; each position's embedding
    # is the sum of one embedding per codebook (plus positions).
    assert seen["layer0"].shape == (batch, seq, model.config.hidden_size)
    summed = sum(seen[("embed", k)] for k in range(codebooks))
    torch.testing.assert_close(seen["layer0"], summed + seen["pos"])
    assert logits.shape == (batch * codebooks, seq, vocab)


# -- (batch * heads, query, key) probabilities: XGLM, MVP, TrOCR -----------------------------


@pytest.mark.parametrize("model_type", ["xglm", "mvp", "trocr"])
def test_merged_head_probabilities_are_read_and_written_per_head(model_type):
    # These attentions compute their weights with bmm over (batch * heads); nnterp reads them
    # as (batch, heads, query, key), equal to what HF returns with output_attentions, and a
    # write goes back into the merged tensor (zero weights: the output projection reads zeros).
    hf_model, tokenizer = tiny_model(model_type), tiny_tokenizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tokenizer, enable_attention_probs=True)
    encoding = dict(tokenizer([PROMPTS[0]], return_tensors="pt"))
    with torch.no_grad():
        expected = hf_model(**encoding, output_attentions=True).attentions
    with torch.no_grad(), model.trace(encoding):
        first = nnsight.save(model.attention_probabilities[0])
        last = nnsight.save(model.attention_probabilities[1])
    assert first.shape == expected[0].shape and first.dim() == 4
    torch.testing.assert_close(first, expected[0])
    torch.testing.assert_close(last, expected[1])

    with torch.no_grad(), model.trace(encoding):
        model.attention_probabilities[1] = torch.zeros_like(model.attention_probabilities[1])
        edited = nnsight.save(model.logits)
    out_proj = model._module.get_submodule(model.paths["layers"])[1].get_submodule(model.paths["self_attn"]).out_proj
    handle = out_proj.register_forward_pre_hook(lambda _m, args: (torch.zeros_like(args[0]),))
    try:
        with torch.no_grad():
            zeroed = hf_model(**encoding).logits
    finally:
        handle.remove()
    torch.testing.assert_close(edited, zeroed)
