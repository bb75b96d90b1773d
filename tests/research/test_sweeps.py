"""Patching sweeps against the same patches made by hand on a plain HF twin of each model:
(layer, position, head) grids of every per-head site, attention-pattern patching, the
every-block sweep, and attribution patching's grids of the same shapes."""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator

import pytest
import torch
from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.metrics import evaluate_metric, logit_difference
from nnterp.interventions.patching import (
    activation_patching,
    attention_pattern_patching,
)
from nnterp.interventions.sweeps import every_block_patching
from nnterp.testing import tiny_model

from .conftest import MODEL_TYPES, shared
from .reference import NATIVE, encode, family, first, hooks, native, replace_first

CLEAN = ["The capital of France is", "The cat sat on the"]
CORRUPTED = ["The capital of Spain is", "The dog sat on the"]
METRIC = logit_difference([30, 40], [50, 60])
HEAD_DIM = 16
HEAD_SITES = [
    "queries",
    "keys",
    "values",
    "queries_rotated",
    "keys_rotated",
    "attention_scores",
    "attention_probabilities",
    "heads_output",
    "heads_result",
]
#: Neuron and mid-block residual sites: (native module of each family, and whether its input).
POSITION_TAPS = {
    "mlps_hidden": {
        "llama": "mlp.down_proj",
        "gpt2": "mlp.c_proj",
        "gpt_neox": "mlp.dense_4h_to_h",
    },
    "layers_mid": {"llama": "post_attention_layernorm", "gpt2": "ln_2"},
}
ROTARY = {"llama", "gpt_neox"}


@functools.cache
def twin(model_type: str) -> torch.nn.Module:
    """A fresh HF model with the same weights, never wrapped by nnterp or NNsight."""
    model = tiny_model(model_type)
    wrapped = shared(model_type)[1]
    for (name, mine), (_, theirs) in zip(
        model.state_dict().items(), wrapped.state_dict().items()
    ):
        assert torch.equal(mine, theirs), name
    return model


def sites_of(model_type: str) -> list[str]:
    return [
        site for site in HEAD_SITES if "rotated" not in site or model_type in ROTARY
    ]


@contextlib.contextmanager
def at_site(
    hf_model: torch.nn.Module, site: str, layer: int, fn: Callable[[torch.Tensor], None]
) -> Iterator[None]:
    """During one forward, call ``fn(view)`` on layer ``layer``'s value of ``site`` seen as a
    (batch, seq or query, heads, ...) view; ``fn`` may edit the view in place to patch it."""
    names = NATIVE[family(hf_model)]
    if site in ("queries", "keys", "values"):
        part = site[0]
        if part in names:
            module = native(hf_model, part, layer)

            def view(x):
                return x.view(*x.shape[:2], -1, HEAD_DIM)
        else:
            module, offset = native(hf_model, "fused", layer), "qkv".index(part)
            if names["fused_layout"] == "blocks":

                def view(x):
                    width = x.shape[-1] // 3
                    return x[..., offset * width : (offset + 1) * width].view(
                        *x.shape[:2], -1, HEAD_DIM
                    )
            else:

                def view(x):
                    return x.view(*x.shape[:2], -1, 3 * HEAD_DIM)[
                        ..., offset * HEAD_DIM : (offset + 1) * HEAD_DIM
                    ]

        def edit(m, args, out):
            value = first(out).clone()
            fn(view(value))
            return replace_first(out, value)

        with hooks(module.register_forward_hook(edit)):
            yield
    elif site == "heads_output":

        def edit_input(m, args):
            value = args[0].clone()
            fn(value.view(*value.shape[:2], -1, HEAD_DIM))
            return (value, *args[1:])

        with hooks(native(hf_model, "o", layer).register_forward_pre_hook(edit_input)):
            yield
    elif site.endswith("_rotated"):
        module = importlib.import_module(type(hf_model).__module__)
        original, calls = module.apply_rotary_pos_emb, []

        def rotate(*args, **kwargs):
            q, k = original(*args, **kwargs)
            calls.append(1)
            if len(calls) - 1 == layer:
                which = 0 if site == "queries_rotated" else 1
                value = (q, k)[which].clone()
                fn(value.transpose(1, 2))
                q, k = (value, k) if which == 0 else (q, value)
            return q, k

        module.apply_rotary_pos_emb = rotate
        try:
            yield
        finally:
            module.apply_rotary_pos_emb = original
        assert calls, "the rotary embedding was not called through the module"
    else:  # attention scores / probabilities: the softmax of each layer's eager attention, in order
        original, calls = torch.nn.functional.softmax, []

        def softmax(x, *args, **kwargs):
            if x.dim() != 4:
                return original(x, *args, **kwargs)
            calls.append(1)
            if len(calls) - 1 == layer and site == "attention_scores":
                x = x.clone()
                fn(x.transpose(1, 2))
            out = original(x, *args, **kwargs)
            if len(calls) - 1 == layer and site == "attention_probabilities":
                out = out.clone()
                fn(out.transpose(1, 2))
            return out

        torch.nn.functional.softmax = softmax
        try:
            yield
        finally:
            torch.nn.functional.softmax = original
        assert calls


def by_hand(
    model_type: str, site: str, layer: int, cells: list[tuple[int, int]]
) -> torch.Tensor:
    """The metric of the corrupted run with ``site``'s clean values patched at each (position, head)."""
    if site == "heads_result":
        # o_proj is affine: swapping a head's share of its output is swapping the head's input.
        site = "heads_output"
    hf_model = twin(model_type)
    tokenizer = shared(model_type)[0].tokenizer
    seen = {}
    with (
        at_site(
            hf_model, site, layer, lambda view: seen.setdefault("clean", view.clone())
        ),
        torch.no_grad(),
    ):
        hf_model(**encode(tokenizer, CLEAN))

    def patch(view):
        for position, head in cells:
            view[:, position, head] = seen["clean"][:, position, head]

    with at_site(hf_model, site, layer, patch), torch.no_grad():
        return METRIC(hf_model(**encode(tokenizer, CORRUPTED)).logits)


def head_count(model, site: str) -> int:
    return (
        model.heads_output.layout.num_kv_heads
        if site.startswith(("keys", "values"))
        else model.num_heads
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_layer_position_head_grids_equal_hand_patching(model_type):
    model, _ = shared(model_type)
    seq = encode(model.tokenizer, CLEAN)["input_ids"].shape[1]
    for site in sites_of(model_type):
        grid = activation_patching(
            model, CLEAN, CORRUPTED, METRIC, site=site, by_position=True
        )
        heads = head_count(model, site)
        assert grid.shape == (model.num_layers, seq, heads), site
        expected = torch.stack(
            [
                torch.stack(
                    [
                        torch.stack(
                            [
                                by_hand(model_type, site, layer, [(p, h)])
                                for h in range(heads)
                            ]
                        )
                        for p in range(seq)
                    ]
                )
                for layer in range(model.num_layers)
            ]
        )
        torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-4, msg=site)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_head_grids_at_chosen_positions_equal_hand_patching(model_type):
    model, _ = shared(model_type)
    for site in sites_of(model_type):
        grid = activation_patching(
            model, CLEAN, CORRUPTED, METRIC, site=site, positions=[-1, 2], heads=[1, 0]
        )
        assert grid.shape == (model.num_layers, 2), site
        for layer in range(model.num_layers):
            for column, head in enumerate([1, 0]):
                expected = by_hand(model_type, site, layer, [(4, head), (2, head)])
                torch.testing.assert_close(
                    grid[layer, column], expected, atol=1e-5, rtol=1e-4, msg=site
                )


@pytest.mark.parametrize(
    ("site", "model_type"),
    [(site, t) for site, taps in POSITION_TAPS.items() for t in taps],
)
def test_neuron_and_mid_block_grids_equal_hand_patching(site, model_type):
    model, _ = shared(model_type)
    grid = activation_patching(model, CLEAN, CORRUPTED, METRIC, site=site)
    assert grid.shape == (model.num_layers, 5)
    hf_model, tokenizer = twin(model_type), model.tokenizer
    for layer in range(model.num_layers):
        module = native(hf_model, "layer", layer).get_submodule(
            POSITION_TAPS[site][model_type]
        )
        seen = {}

        def read(m, args, seen=seen):
            seen["clean"] = args[0].clone()

        with hooks(module.register_forward_pre_hook(read)), torch.no_grad():
            hf_model(**encode(tokenizer, CLEAN))
        for position in range(5):

            def patch(m, args, position=position, seen=seen):
                seen["corrupted"] = args[0].clone()
                value = args[0].clone()
                value[:, position] = seen["clean"][:, position]
                return (value, *args[1:])

            def carry(m, args, out, position=position, seen=seen):
                # The stream itself goes on from the patched value: what leaves the block is it
                # plus the MLP's output, so move the block's output by the same difference.
                value = first(out).clone()
                value[:, position] += (
                    seen["clean"][:, position] - seen["corrupted"][:, position]
                )
                return replace_first(out, value)

            handles = [module.register_forward_pre_hook(patch)]
            if site == "layers_mid":
                handles.append(
                    native(hf_model, "layer", layer).register_forward_hook(carry)
                )
            with hooks(*handles), torch.no_grad():
                expected = METRIC(hf_model(**encode(tokenizer, CORRUPTED)).logits)
            torch.testing.assert_close(
                grid[layer, position], expected, atol=1e-5, rtol=1e-4
            )


def test_read_only_sites_are_not_patched(llama):
    with pytest.raises(InvalidInputError, match="cannot patch site 'mlps_norm_scale'"):
        activation_patching(llama, CLEAN, CORRUPTED, METRIC, site="mlps_norm_scale")


def test_grouped_query_key_sites_have_the_key_value_heads(llama):
    assert llama.heads_output.layout.num_kv_heads == 2 < llama.num_heads == 4
    for site in ("keys", "values", "keys_rotated", "queries"):
        heads = 2 if site != "queries" else 4
        exact = activation_patching(
            llama,
            CLEAN,
            CORRUPTED,
            METRIC,
            site=site,
            by_position=True,
            positions=[0, -1],
        )
        estimate = attribution_patching(
            llama,
            CLEAN,
            CORRUPTED,
            METRIC,
            site=site,
            by_position=True,
            positions=[0, -1],
        )
        assert exact.shape == estimate.shape == (2, 2, heads), site
    with pytest.raises(LayerIndexError, match="heads"):
        activation_patching(llama, CLEAN, CORRUPTED, METRIC, site="keys", heads=[2])


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_attention_pattern_patching_equals_hand_patching(model_type):
    model, _ = shared(model_type)
    grid = attention_pattern_patching(model, CLEAN, CORRUPTED, METRIC)
    assert grid.shape == (model.num_layers, model.num_heads)
    for layer in range(model.num_layers):
        for head in range(model.num_heads):
            expected = by_hand(
                model_type,
                "attention_probabilities",
                layer,
                [(p, head) for p in range(5)],
            )
            torch.testing.assert_close(
                grid[layer, head], expected, atol=1e-5, rtol=1e-4
            )
    # Position 0 attends only to itself in both runs: patching its pattern changes nothing.
    per_query = attention_pattern_patching(
        model, CLEAN, CORRUPTED, METRIC, by_position=True
    )
    corrupted = evaluate_metric(model, CORRUPTED, METRIC)
    torch.testing.assert_close(
        per_query[:, 0],
        corrupted.expand(model.num_layers, model.num_heads),
        atol=1e-6,
        rtol=0,
    )


@contextlib.contextmanager
def grab_raw(
    hf_model: torch.nn.Module, site: str, layer: int, seen: dict
) -> Iterator[None]:
    """Keep (with its gradient retained) the tensor the forward uses: o_proj's input, or the
    softmax output of ``layer``."""
    if site == "heads_output":

        def grab(m, args):
            args[0].retain_grad()
            seen["raw"] = args[0]

        with hooks(native(hf_model, "o", layer).register_forward_pre_hook(grab)):
            yield
        return
    original, calls = torch.nn.functional.softmax, []

    def softmax(x, *args, **kwargs):
        out = original(x, *args, **kwargs)
        if x.dim() == 4:
            calls.append(1)
            if len(calls) - 1 == layer:
                out.retain_grad()
                seen["raw"] = out
        return out

    torch.nn.functional.softmax = softmax
    try:
        yield
    finally:
        torch.nn.functional.softmax = original


@pytest.mark.parametrize("site", ["heads_output", "attention_probabilities"])
def test_attribution_by_position_is_gradient_times_difference(site):
    # Plain autograd on the twin: d metric / d value of every (position, head) cell.
    model, _ = shared("llama")
    hf_model = twin("llama")
    tokenizer = model.tokenizer
    for layer in range(model.num_layers):
        seen: dict = {}
        with (
            at_site(
                hf_model,
                site,
                layer,
                lambda view, seen=seen: seen.setdefault("clean", view.clone()),
            ),
            torch.no_grad(),
        ):
            hf_model(**encode(tokenizer, CLEAN))

        with grab_raw(hf_model, site, layer, seen):
            metric = METRIC(hf_model(**encode(tokenizer, CORRUPTED)).logits)
        metric.backward()
        hf_model.zero_grad(set_to_none=True)
        raw = seen["raw"]
        if site == "heads_output":
            value, grad = (
                raw.view(*raw.shape[:2], -1, HEAD_DIM),
                raw.grad.view(*raw.shape[:2], -1, HEAD_DIM),
            )
        else:
            value, grad = raw.transpose(1, 2), raw.grad.transpose(1, 2)
        expected = metric.detach() + ((seen["clean"] - value.detach()) * grad).sum(
            dim=(0, 3)
        )
        estimate = attribution_patching(
            model, CLEAN, CORRUPTED, METRIC, site=site, layers=[layer], by_position=True
        )
        torch.testing.assert_close(estimate[0], expected, atol=1e-5, rtol=1e-4)


def block_by_hand(
    model_type: str, part: str, side: str, layer: int, position: int
) -> torch.Tensor:
    hf_model = twin(model_type)
    tokenizer = shared(model_type)[0].tokenizer
    module = native(hf_model, part, layer)
    seen = {}

    def read(m, args, out=None):
        seen["clean"] = (args[0] if side == "input" else first(out)).detach().clone()

    def patch(x):
        x = x.clone()
        x[:, position] = seen["clean"][:, position]
        return x

    handle = (
        module.register_forward_pre_hook(read)
        if side == "input"
        else module.register_forward_hook(read)
    )
    with hooks(handle), torch.no_grad():
        hf_model(**encode(tokenizer, CLEAN))
    if side == "input":
        handle = module.register_forward_pre_hook(
            lambda m, args: (patch(args[0]), *args[1:])
        )
    else:
        handle = module.register_forward_hook(
            lambda m, args, out: replace_first(out, patch(first(out)))
        )
    with hooks(handle), torch.no_grad():
        return METRIC(hf_model(**encode(tokenizer, CORRUPTED)).logits)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_every_block_sweep_equals_hand_patching(model_type):
    model, _ = shared(model_type)
    result = every_block_patching(model, CLEAN, CORRUPTED, METRIC, batch_size=7)
    assert result.sites == ("layers_input", "attentions_output", "mlps_output")
    assert result.stack().shape == (3, model.num_layers, 5)
    assert list(result.as_dict()) == list(result.sites)
    for grid, (part, side) in zip(
        (result.residual, result.attention, result.mlp),
        [("layer", "input"), ("attn", "output"), ("mlp", "output")],
    ):
        expected = torch.tensor(
            [
                [
                    float(block_by_hand(model_type, part, side, layer, p))
                    for p in range(5)
                ]
                for layer in range(model.num_layers)
            ]
        )
        torch.testing.assert_close(grid, expected, atol=1e-5, rtol=1e-4, msg=part)
    after = every_block_patching(
        model,
        CLEAN,
        CORRUPTED,
        METRIC,
        residual="layers_output",
        layers=[1],
        positions=[-1, 0],
    )
    expected = torch.tensor(
        [[float(block_by_hand(model_type, "layer", "output", 1, p)) for p in (4, 0)]]
    )
    torch.testing.assert_close(after.residual, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after.mlp, result.mlp[1:, [4, 0]], atol=1e-5, rtol=1e-4)
    assert after.layers == [1] and after.positions == [4, 0]


def test_attribution_grids_have_the_patching_shapes(gpt2):
    for site, by_position in [
        ("attention_probabilities", False),
        ("attention_probabilities", True),
        ("queries", True),
        ("mlps_output", False),
    ]:
        exact = activation_patching(
            gpt2, CLEAN, CORRUPTED, METRIC, site=site, by_position=by_position
        )
        estimate = attribution_patching(
            gpt2, CLEAN, CORRUPTED, METRIC, site=site, by_position=by_position
        )
        assert exact.shape == estimate.shape, site


def test_bad_sweep_arguments(llama):
    with pytest.raises(InvalidInputError, match="residual must be"):
        every_block_patching(llama, CLEAN, CORRUPTED, METRIC, residual="mlps_output")
    with pytest.raises(InvalidInputError, match="no head dimension"):
        activation_patching(
            llama, CLEAN, CORRUPTED, METRIC, site="mlps_output", heads=[0]
        )
    with pytest.raises(InvalidInputError, match="cannot patch site 'neurons'"):
        activation_patching(llama, CLEAN, CORRUPTED, METRIC, site="neurons")
    with pytest.raises(LayerIndexError, match="layers"):
        activation_patching(llama, CLEAN, CORRUPTED, METRIC, site="queries", layers=[2])
    with pytest.raises(LayerIndexError, match="positions"):
        attention_pattern_patching(llama, CLEAN, CORRUPTED, METRIC, positions=[9])
    from nnterp.errors import UnavailableComponentError

    without, _ = shared("llama", enable_attention_probs=False)
    with pytest.raises(UnavailableComponentError, match="enable_attention_probs"):
        attention_pattern_patching(without, CLEAN, CORRUPTED, METRIC)
