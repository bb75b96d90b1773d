"""Path patching against the two-step algorithm written by hand with plain HF hooks.

Three-layer tiny Llama (grouped-query: 4 query heads, 2 key/value heads) and GPT-2, so that
heads between the sender (layer 0) and the receivers (layer 2) exist and freezing them matters;
initialized with large weights (std 0.4), so paths carry effects far above float noise (with
the usual 0.02 a head's path moves the metric by about 1e-5).
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from nnterp import StandardizedTransformer
from nnterp.errors import InvalidInputError, LayerIndexError
from nnterp.interventions.metrics import evaluate_metric, logit_difference
from nnterp.interventions.path_patching import Node, path_patching, path_patching_heads
from nnterp.testing import tiny_model, tiny_tokenizer

from .reference import (
    NATIVE,
    capture,
    encode,
    family,
    first,
    hooks,
    native,
    replace_first,
)

CLEAN = ["The capital of France is", "The cat sat on the"]
CORRUPTED = ["The capital of Spain is", "The dog sat on the"]
METRIC = logit_difference([30, 40], [50, 60])
HEAD_DIM = 16
DEPTH = {
    "llama": {"num_hidden_layers": 3, "initializer_range": 0.4},
    "gpt2": {"n_layer": 3, "num_hidden_layers": 3, "initializer_range": 0.4},
}


@functools.cache
def deep(model_type: str):
    hf_model = tiny_model(model_type, config_overrides=DEPTH[model_type])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(hf_model, tiny_tokenizer())
    return model, hf_model


@pytest.fixture(params=["llama", "gpt2"])
def three(request):
    return deep(request.param)


# -- the hand-written reference ----------------------------------------------------------------


def projection(
    hf_model, part: str, layer: int, head: int | None, hidden: int, d: int = HEAD_DIM
):
    """(module, columns of its output) holding ``part`` ('q', 'k', 'v') of one head (all heads
    when ``head`` is None)."""
    names = NATIVE[family(hf_model)]
    if part in names:
        module, offset = native(hf_model, part, layer), 0
        width = module.out_features
    else:  # GPT-2's fused c_attn: [q | k | v] blocks of ``hidden`` columns
        module, offset, width = (
            native(hf_model, "fused", layer),
            "qkv".index(part) * hidden,
            hidden,
        )
    if head is None:
        return module, slice(offset, offset + width)
    return module, slice(offset + head * d, offset + (head + 1) * d)


def receiver_tap(hf_model, receiver, hidden, d: int = HEAD_DIM):
    """(module, side, columns) of a receiver: ('q'|'k'|'v', layer, head) or ('resid', layer)."""
    if receiver[0] == "resid":
        return native(hf_model, "layer", receiver[1]), "input", slice(None)
    module, columns = projection(
        hf_model, receiver[0], receiver[1], receiver[2], hidden, d
    )
    return module, "output", columns


def edit_hook(module, side, edit):
    if side == "input":
        return module.register_forward_pre_hook(
            lambda m, args: (edit(args[0]), *args[1:])
        )
    return module.register_forward_hook(
        lambda m, args, out: replace_first(out, edit(first(out)))
    )


def by_hand(
    model,
    hf_model,
    base,
    source,
    *,
    sender,
    receivers,
    positions=None,
    freeze=True,
    freeze_mlps=False,
    metric=METRIC,
):
    """Wang et al.'s two steps with torch hooks. ``sender``: ('z', layer, head), ('v', layer,
    kv_head) or ('mlp', layer). ``receivers``: a list of receiver tuples, or 'logits'."""
    layers, hidden = model.num_layers, model.hidden_size
    heads, kv_heads = model.num_heads, model.heads_output.layout.num_kv_heads
    d = model.heads_output.layout.head_dim
    base_inputs, source_inputs = (
        encode(model.tokenizer, base),
        encode(model.tokenizer, source),
    )
    rows = slice(None) if positions is None else positions
    o_proj = [native(hf_model, "o", layer) for layer in range(layers)]
    mlps = [native(hf_model, "mlp", layer) for layer in range(layers)]
    taps = {("z", layer): (o_proj[layer], "input") for layer in range(layers)}
    taps.update({("mlp", layer): (mlps[layer], "output") for layer in range(layers)})
    if sender[0] == "v":
        module, _ = projection(hf_model, "v", sender[1], None, hidden, d)
        taps["v"] = (module, "output")
    base_seen, _ = capture(hf_model, base_inputs, taps)
    source_seen, _ = capture(hf_model, source_inputs, taps)

    # Step 1: sender from the source run, every other head frozen to the base run.
    handles = []
    unfrozen = {}  # layer -> query heads the sender feeds (left unfrozen)
    if sender[0] == "v":
        group = heads // kv_heads
        unfrozen[sender[1]] = list(range(sender[2] * group, (sender[2] + 1) * group))
        module, columns = projection(hf_model, "v", sender[1], sender[2], hidden, d)

        def patch_v(x, columns=columns):
            x = x.clone()
            x[:, rows, columns] = source_seen["v"][:, rows, columns]
            return x

        handles.append(edit_hook(module, "output", patch_v))
    if sender[0] == "mlp":

        def patch_mlp(x):
            x = x.clone()
            x[:, rows] = source_seen[("mlp", sender[1])][:, rows]
            return x

        handles.append(edit_hook(mlps[sender[1]], "output", patch_mlp))
    for layer in range(layers):

        def freeze_z(x, layer=layer):
            z = base_seen[("z", layer)].clone() if freeze else x.clone()
            for head in unfrozen.get(layer, []):
                z[..., head * d : (head + 1) * d] = x[..., head * d : (head + 1) * d]
            if sender[0] == "z" and layer == sender[1]:
                columns = slice(sender[2] * d, (sender[2] + 1) * d)
                z[:, rows, columns] = source_seen[("z", layer)][:, rows, columns]
            return z

        handles.append(edit_hook(o_proj[layer], "input", freeze_z))
        if freeze_mlps and not (sender[0] == "mlp" and layer == sender[1]):
            handles.append(
                edit_hook(
                    mlps[layer],
                    "output",
                    lambda x, layer=layer: base_seen[("mlp", layer)].clone(),
                )
            )
    recorded = {}
    if receivers != "logits":
        for receiver in receivers:
            module, side, _ = receiver_tap(hf_model, receiver, hidden, d)

            def keep(m, args, out=None, receiver=receiver, side=side):
                recorded[receiver] = (
                    (args[0] if side == "input" else first(out)).detach().clone()
                )

            handles.append(
                module.register_forward_pre_hook(keep)
                if side == "input"
                else module.register_forward_hook(keep)
            )
    with hooks(*handles), torch.no_grad():
        step_one = hf_model(**base_inputs).logits
    if receivers == "logits":
        return metric(step_one)

    # Step 2: the base run with only the receivers patched.
    handles = []
    for receiver in receivers:
        module, side, columns = receiver_tap(hf_model, receiver, hidden, d)

        def patch(x, receiver=receiver, columns=columns):
            x = x.clone()
            x[..., columns] = recorded[receiver][..., columns]
            return x

        handles.append(edit_hook(module, side, patch))
    with hooks(*handles), torch.no_grad():
        return metric(hf_model(**base_inputs).logits)


def close(actual, expected):
    torch.testing.assert_close(actual, expected.reshape(()), atol=1e-5, rtol=1e-4)


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("receivers", "reference"),
    [
        (["queries.2.1"], [("q", 2, 1)]),
        (["keys.2.1", "values.2.0"], [("k", 2, 1), ("v", 2, 0)]),
        ("layers_input.2", [("resid", 2)]),
        ("logits", "logits"),
    ],
)
def test_head_to_receivers_equals_two_hooked_runs(three, receivers, reference):
    model, hf_model = three
    value = path_patching(
        model, CLEAN, CORRUPTED, METRIC, sender=(0, 2), receivers=receivers
    )
    expected = by_hand(
        model, hf_model, CLEAN, CORRUPTED, sender=("z", 0, 2), receivers=reference
    )
    close(value, expected)


def test_freezing_the_other_heads_matters(three):
    # Without the freeze the same two steps give another number: the test above would catch
    # a path patching that forgot to freeze layer 1's heads.
    model, hf_model = three
    frozen = by_hand(
        model, hf_model, CLEAN, CORRUPTED, sender=("z", 0, 2), receivers=[("q", 2, 1)]
    )
    unfrozen = by_hand(
        model,
        hf_model,
        CLEAN,
        CORRUPTED,
        sender=("z", 0, 2),
        receivers=[("q", 2, 1)],
        freeze=False,
    )
    assert abs(float(frozen - unfrozen)) > 1e-2
    # ...and the path is a real one: the result is not the clean metric.
    assert abs(float(frozen - evaluate_metric(model, CLEAN, METRIC))) > 1e-2


def test_denoising_runs_corrupted_with_the_clean_sender(three):
    model, hf_model = three
    value = path_patching(
        model,
        CLEAN,
        CORRUPTED,
        METRIC,
        Node("heads_output", 1, 3),
        "queries.2",
        direction="denoising",
    )
    expected = by_hand(
        model,
        hf_model,
        CORRUPTED,
        CLEAN,
        sender=("z", 1, 3),
        receivers=[("q", 2, None)],
    )
    close(value, expected)


def test_sender_positions(three):
    model, hf_model = three
    value = path_patching(
        model, CLEAN, CORRUPTED, METRIC, (0, 1), ["keys.2"], positions=[3]
    )
    expected = by_hand(
        model,
        hf_model,
        CLEAN,
        CORRUPTED,
        sender=("z", 0, 1),
        receivers=[("k", 2, None)],
        positions=[3],
    )
    close(value, expected)


def test_mlp_sender_and_frozen_mlps(three):
    model, hf_model = three
    value = path_patching(
        model, CLEAN, CORRUPTED, METRIC, "mlps_output.0", "queries.2.0"
    )
    expected = by_hand(
        model, hf_model, CLEAN, CORRUPTED, sender=("mlp", 0), receivers=[("q", 2, 0)]
    )
    close(value, expected)
    direct = path_patching(
        model, CLEAN, CORRUPTED, METRIC, (0, 3), "logits", freeze_mlps=True
    )
    expected = by_hand(
        model,
        hf_model,
        CLEAN,
        CORRUPTED,
        sender=("z", 0, 3),
        receivers="logits",
        freeze_mlps=True,
    )
    close(direct, expected)


def test_value_head_sender_of_a_grouped_query_model():
    # Key/value head 1 of the GQA Llama feeds query heads 2 and 3: those stay unfrozen.
    model, hf_model = deep("llama")
    assert model.heads_output.layout.num_kv_heads == 2
    value = path_patching(
        model, CLEAN, CORRUPTED, METRIC, "values.0.1", ["queries.2.1", "layers_input.1"]
    )
    expected = by_hand(
        model,
        hf_model,
        CLEAN,
        CORRUPTED,
        sender=("v", 0, 1),
        receivers=[("q", 2, 1), ("resid", 1)],
    )
    close(value, expected)


def test_head_sweep_equals_single_calls(three):
    model, hf_model = three
    grid = path_patching_heads(
        model, CLEAN, CORRUPTED, METRIC, "queries.2.1", batch_size=5
    )
    assert grid.shape == (3, 4)
    for layer, head in [(0, 0), (1, 3)]:
        expected = by_hand(
            model,
            hf_model,
            CLEAN,
            CORRUPTED,
            sender=("z", layer, head),
            receivers=[("q", 2, 1)],
        )
        close(grid[layer, head], expected)
    # Heads of layer 2 reach their own queries by no path: the clean metric.
    clean_metric = evaluate_metric(model, CLEAN, METRIC)
    torch.testing.assert_close(grid[2], clean_metric.expand(4), atol=1e-5, rtol=1e-4)
    chosen = path_patching_heads(
        model,
        CLEAN,
        CORRUPTED,
        METRIC,
        "queries.2.1",
        layers=[1],
        heads=[3, 0],
        batch_size=1,
    )
    torch.testing.assert_close(chosen, grid[1:2, [3, 0]], atol=1e-5, rtol=1e-4)


def test_bad_nodes():
    model, _ = deep("llama")
    with pytest.raises(InvalidInputError, match="direction"):
        path_patching(
            model, CLEAN, CORRUPTED, METRIC, (0, 1), "logits", direction="sideways"
        )
    with pytest.raises(LayerIndexError, match="head"):
        path_patching(model, CLEAN, CORRUPTED, METRIC, (0, 4), "logits")
    with pytest.raises(LayerIndexError, match="receiver head"):
        path_patching(
            model, CLEAN, CORRUPTED, METRIC, (0, 1), "keys.2.2"
        )  # 2 key/value heads
    with pytest.raises(LayerIndexError, match="layer"):
        path_patching(model, CLEAN, CORRUPTED, METRIC, (5, 1), "logits")
    with pytest.raises(InvalidInputError, match="unknown site"):
        path_patching(model, CLEAN, CORRUPTED, METRIC, "neurons.0", "logits")
    with pytest.raises(InvalidInputError, match="frozen"):
        path_patching(model, CLEAN, CORRUPTED, METRIC, (0, 1), "heads_output.2.0")
    with pytest.raises(InvalidInputError, match="no heads"):
        path_patching(model, CLEAN, CORRUPTED, METRIC, "mlps_output.0.1", "logits")
    with pytest.raises(InvalidInputError, match="alone"):
        path_patching(
            model, CLEAN, CORRUPTED, METRIC, (0, 1), ["logits", "queries.2.0"]
        )
    with pytest.raises(InvalidInputError, match="same number of tokens"):
        path_patching(
            model,
            CLEAN,
            ["The capital of the United Kingdom is", "x"],
            METRIC,
            (0, 1),
            "logits",
        )
