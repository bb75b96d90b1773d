"""The GPT-2 lineage's per-head sites (specs derived from core's GPT-2 spec) against plain HF.

Each family's query/key/value split is written here by hand from its HF attention code; the
values are then checked against the model's own computation: every head's output is its
attention probabilities times its values.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from nnterp import StandardizedTransformer
from nnterp.errors import UnavailableComponentError
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "The cat sat on the mat. Hello world"


def _split(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    return tensor.view(*tensor.shape[:-1], heads, -1)


def _separate(attention, seen, heads):
    return tuple(_split(seen[part], heads) for part in "qkv")


def _blocks(attention, seen, heads):
    # OpenAI GPT: c_attn(x).split(split_size, dim=2); MPT: Wqkv(x).chunk(3, dim=2).
    return tuple(_split(part, heads) for part in seen["fused"].chunk(3, dim=-1))


def _bloom(attention, seen, heads):
    # BLOOM's own split of query_key_value, (batch, heads, seq, head_dim) each.
    return tuple(part.transpose(1, 2) for part in attention._reshape(seen["fused"]))


#: model type: (attention module, its q/k/v projections, output projection, hand split).
#: No projections: the fused layout depends on the config, so only heads_output is exposed.
FAMILIES = {
    "gptj": ("transformer.h.0.attn", {"q": "q_proj", "k": "k_proj", "v": "v_proj"}, "out_proj", _separate),
    "gpt_neo": (
        "transformer.h.0.attn.attention", {"q": "q_proj", "k": "k_proj", "v": "v_proj"}, "out_proj", _separate
    ),
    "ctrl": ("transformer.h.0.multi_head_attention", {"q": "Wq", "k": "Wk", "v": "Wv"}, "dense", _separate),
    "openai-gpt": ("transformer.h.0.attn", {"fused": "c_attn"}, "c_proj", _blocks),
    "mpt": ("transformer.blocks.0.attn", {"fused": "Wqkv"}, "out_proj", _blocks),
    "bloom": ("transformer.h.0.self_attention", {"fused": "query_key_value"}, "dense", _bloom),
    "gpt_bigcode": ("transformer.h.0.attn", {}, "c_proj", None),
    "codegen": ("transformer.h.0.attn", {}, "out_proj", None),
}


def _hooked(hf_model, attention, projections, output_projection, inputs):
    seen: dict[str, torch.Tensor] = {}
    handles = [
        attention.get_submodule(path).register_forward_hook(
            lambda _m, _i, out, part=part: seen.__setitem__(part, out)
        )
        for part, path in projections.items()
    ]
    handles.append(
        attention.get_submodule(output_projection).register_forward_pre_hook(
            lambda _m, args: seen.__setitem__("z", args[0])
        )
    )
    try:
        with torch.no_grad():
            hf_model(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_per_head_sites_equal_the_hf_attention(model_type: str) -> None:
    hf_model = tiny_model(model_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer(), enable_attention_probs=True)
    path, projections, output_projection, split = FAMILIES[model_type]
    attention = hf_model.get_submodule(path)
    encoded = tiny_tokenizer()(PROMPT, return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    seen = _hooked(hf_model, attention, projections, output_projection, inputs)
    heads = model.num_heads

    if split is None:
        with pytest.raises(UnavailableComponentError, match="no query/key/value projection"), model.trace(inputs):
            model.queries[0]
        with torch.no_grad(), model.trace(inputs):
            z = model.heads_output[0].save()
        torch.testing.assert_close(z, _split(seen["z"], heads))
        return

    with torch.no_grad(), model.trace(inputs):
        q = model.queries[0].save()
        k = model.keys[0].save()
        v = model.values[0].save()
        probs = model.attention_probabilities[0].save()
        z = model.heads_output[0].save()
    expected_q, expected_k, expected_v = split(attention, seen, heads)
    torch.testing.assert_close(q, expected_q)
    torch.testing.assert_close(k, expected_k)
    torch.testing.assert_close(v, expected_v)
    torch.testing.assert_close(z, _split(seen["z"], heads))
    # The model's own attention: each head's output is its probabilities times its values.
    torch.testing.assert_close(z, torch.einsum("bhqk,bkhd->bqhd", probs, v), atol=1e-5, rtol=1e-4)


def test_partial_rotary_models_say_why_rotated_queries_are_unavailable():
    # GPT-J rotates only the first rotary_dim channels of each head, in a call nnterp cannot
    # read as whole rotated queries: the error must not claim the model does not rotate.
    hf_model = tiny_model("gptj")
    assert hf_model.config.rotary_dim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    with pytest.raises(UnavailableComponentError, match="cannot read where it does") as raised:  # noqa: SIM117 - NNsight runs the body
        with model.trace(PROMPT):
            model.queries_rotated[0]
    assert "rotary_embedding=None" in str(raised.value)
