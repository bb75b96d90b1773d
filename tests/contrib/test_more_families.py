"""The leftover causal-LM families: the reasons registry and the pending specs' meanings.

``NOT_STANDARDIZED`` must name real causal-LM types that no registered spec covers. The specs
are checked as data against plain HF forward hooks on a tiny model (the modules they name
compute what the spec says they do), and ModernBERT-decoder, whose standard ``lm_head`` is not
its native ``lm_head``, through the standard tree and the renaming seam that binds it.
"""

from __future__ import annotations

import nnsight
import pytest
import torch
from nnsight.modeling.transformers import TransformersModel
from nnterp import StandardizedTransformer
from nnterp.contrib.families.more import (
    GIT,
    MODERNBERT_DECODER,
    NOT_STANDARDIZED,
    PENDING_SPECS,
    SPECS,
)
from nnterp.errors import RenamingError
from nnterp.nnsight_seams import mount_over_child
from nnterp.plugins import get_registry
from nnterp.renaming import bind_displaced, rename_mapping, resolve_paths, split_aliases
from nnterp.testing import tiny_model, tiny_tokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

PROMPTS = ["The cat sat on the mat", "Hello world"]


def _run_with_hooks(
    model: torch.nn.Module, paths: list[str], positions_from_mask: bool = False
) -> tuple[torch.Tensor, dict]:
    """Logits of a left-padded batch and ``{(path, "in" | "out"): tensor}`` for each module path
    (with ``positions_from_mask``, each row's positions counted from its first real token)."""
    seen: dict = {}
    handles = []
    for path in paths:
        module = model.get_submodule(path)

        def hook(_module, args, kwargs, output, path=path):
            seen[(path, "in")] = (args[0] if args else next(iter(kwargs.values()))).detach().clone()
            seen[(path, "out")] = (output[0] if isinstance(output, tuple) else output).detach().clone()

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    encoding = dict(tiny_tokenizer()(PROMPTS, return_tensors="pt", padding=True))
    if positions_from_mask:
        encoding["position_ids"] = (encoding["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    try:
        with torch.no_grad():
            logits = model(**encoding).logits
    finally:
        for handle in handles:
            handle.remove()
    return logits, seen


def test_not_standardized_types_are_causal_lms_without_a_spec():
    registry = get_registry()
    for model_type, reason in NOT_STANDARDIZED.items():
        class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
        assert registry.spec_for_class_names([class_name]) is None, model_type
        assert len(reason) > 40, model_type
    for spec in (*SPECS, *PENDING_SPECS):
        assert set(spec.model_classes) <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()), spec.name
    pending = {c for spec in PENDING_SPECS for c in spec.model_classes}
    listed = {MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[t] for t in NOT_STANDARDIZED}
    assert pending <= listed


def test_modernbert_decoder_spec_reads_the_additive_sublayers_and_the_head_chain():
    model = tiny_model("modernbert-decoder")
    layers = MODERNBERT_DECODER.path("layers")[0]
    n_layers = len(model.get_submodule(layers))
    attn, mlp = MODERNBERT_DECODER.path("self_attn")[0], MODERNBERT_DECODER.path("mlp")[0]
    paths = [f"{layers}.{i}{suffix}" for i in range(n_layers) for suffix in ("", f".{attn}", f".{mlp}")]
    embeddings, embed = "model.embeddings", MODERNBERT_DECODER.path("embed_tokens")[0]
    logits, seen = _run_with_hooks(model, [*paths, embeddings, embed])

    ids = tiny_tokenizer()(PROMPTS, return_tensors="pt", padding=True).input_ids
    assert torch.equal(seen[(embed, "out")], model.get_submodule(embed).weight[ids])
    # The stream starts at the embeddings' LayerNorm of the token embeddings.
    assert torch.equal(seen[(f"{layers}.0", "in")], seen[(embeddings, "out")])
    for i in range(n_layers):
        layer = f"{layers}.{i}"
        total = seen[(layer, "in")] + seen[(f"{layer}.{attn}", "out")] + seen[(f"{layer}.{mlp}", "out")]
        torch.testing.assert_close(total, seen[(layer, "out")], rtol=0, atol=1e-5)
    last = seen[(f"{layers}.{n_layers - 1}", "out")]
    with torch.no_grad():
        chain = model.get_submodule(MODERNBERT_DECODER.path("ln_final")[0])(last)
        chain = model.get_submodule(MODERNBERT_DECODER.unembedding_projection)(chain)
        chain = model.get_submodule(MODERNBERT_DECODER.path("lm_head")[0])(chain)
    torch.testing.assert_close(chain, logits, rtol=0, atol=1e-5)


def test_git_spec_is_a_post_norm_stack_whose_last_layer_feeds_the_unembedding():
    model = tiny_model("git")
    layers = GIT.path("layers")[0]
    n_layers = len(model.get_submodule(layers))
    paths = [f"{layers}.{i}{suffix}" for i in range(n_layers) for suffix in ("", ".output.LayerNorm")]
    embed = GIT.path("embed_tokens")[0]
    logits, seen = _run_with_hooks(model, [*paths, embed, GIT.path("lm_head")[0]])

    ids = tiny_tokenizer()(PROMPTS, return_tensors="pt", padding=True).input_ids
    assert torch.equal(seen[(embed, "out")], model.get_submodule(embed).weight[ids])
    for i in range(n_layers):
        # Post-norm: each block ends with LayerNorm(feed-forward + residual).
        assert torch.equal(seen[(f"{layers}.{i}", "out")], seen[(f"{layers}.{i}.output.LayerNorm", "out")])
    assert GIT.post_norm is True and GIT.ln_final is None
    torch.testing.assert_close(seen[(GIT.path("lm_head")[0], "in")], seen[(f"{layers}.{n_layers - 1}", "out")])
    torch.testing.assert_close(seen[(GIT.path("lm_head")[0], "out")], logits, rtol=0, atol=0)


def _encoding() -> dict:
    return dict(tiny_tokenizer()(PROMPTS, return_tensors="pt", padding=True))


def test_modernbert_decoder_standard_tree_reads_what_plain_hooks_read():
    model = tiny_model("modernbert-decoder")
    layers = [f"model.layers.{i}" for i in range(len(model.model.layers))]
    paths = [*layers, *(f"{layer}.{part}" for layer in layers for part in ("attn", "mlp"))]
    logits, seen = _run_with_hooks(model, [*paths, "model.final_norm", "lm_head", "decoder"], positions_from_mask=True)
    real = _encoding()["attention_mask"].bool()

    st = StandardizedTransformer(model, tokenizer=tiny_tokenizer())
    assert st.lm_head._module is model.decoder and st.E_lm_head._module is model.lm_head
    outputs = []
    with st.trace(_encoding()):
        for i in range(len(layers)):
            outputs.append((st.attentions_output[i].save(), st.mlps_output[i].save(), st.layers_output[i].save()))
        head = st.E_lm_head.output.save()
        unembedding_input = st.lm_head.input.save()
        unembedded = st.lm_head.output.save()
        model_logits = st.logits.save()
    for layer, (attention, mlp, output) in zip(layers, outputs):
        torch.testing.assert_close(attention[real], seen[(f"{layer}.attn", "out")][real], rtol=0, atol=0)
        torch.testing.assert_close(mlp[real], seen[(f"{layer}.mlp", "out")][real], rtol=0, atol=0)
        torch.testing.assert_close(output[real], seen[(layer, "out")][real], rtol=0, atol=0)
    # The native prediction head feeds the standard lm_head (the decoder), which gives the logits.
    torch.testing.assert_close(head[real], seen[("lm_head", "out")][real], rtol=0, atol=0)
    torch.testing.assert_close(unembedding_input[real], seen[("decoder", "in")][real], rtol=0, atol=0)
    torch.testing.assert_close(unembedded[real], logits[real], rtol=0, atol=0)
    torch.testing.assert_close(model_logits[real], logits[real], rtol=0, atol=0)
    # The lens: ln_final -> prediction head -> decoder of the last layer's output is the logits.
    lens = st.project_on_vocab(outputs[-1][2])
    torch.testing.assert_close(lens[real], logits[real], rtol=0, atol=1e-5)


def test_bind_displaced_mounts_the_unembedding_over_the_native_lm_head():
    model = tiny_model("modernbert-decoder")
    logits, seen = _run_with_hooks(model, ["lm_head", "decoder"], positions_from_mask=True)
    real = _encoding()["attention_mask"].bool()
    paths = resolve_paths(model, MODERNBERT_DECODER)
    rename, displaced = split_aliases(model, paths, rename_mapping(paths))
    assert displaced == {"lm_head": paths["lm_head"]}
    assert "lm_head" not in rename.values()
    # Plain NNsight refuses the alias over the native child; the split rename it accepts.
    with pytest.raises(ValueError, match="would shadow"):
        TransformersModel(model, tokenizer=tiny_tokenizer(), rename=rename_mapping(paths))
    wrapped = TransformersModel(model, tokenizer=tiny_tokenizer(), rename=rename)
    bind_displaced(wrapped, paths, displaced)
    with wrapped.trace(_encoding()):
        head = wrapped.E_lm_head.output.save()
        unembedded = wrapped.lm_head.output.save()
    torch.testing.assert_close(head[real], seen[("lm_head", "out")][real], rtol=0, atol=0)
    torch.testing.assert_close(unembedded[real], logits[real], rtol=0, atol=0)
    # Writes go through the moved child: a zeroed prediction head leaves the decoder's bias.
    with wrapped.trace(_encoding()):
        wrapped.E_lm_head.output[:] = 0
        zeroed = wrapped.lm_head.output.save()
    torch.testing.assert_close(zeroed, model.decoder.bias.expand_as(zeroed), rtol=0, atol=0)


class _Block(torch.nn.Module):
    """A block whose native ``mlp`` is a gate and whose feed-forward is ``ffn``."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = torch.nn.Linear(8, 8)
        self.ffn = torch.nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x) * torch.sigmoid(self.mlp(x))


class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block(), _Block()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def test_bind_displaced_binds_a_layer_part_on_every_layer():
    toy = _Toy()
    x = torch.randn(3, 8)
    seen = {}
    handles = [
        toy.get_submodule(f"blocks.{i}.{name}").register_forward_hook(
            lambda _m, _a, out, key=(i, name): seen.__setitem__(key, out.detach().clone())
        )
        for i in range(2)
        for name in ("mlp", "ffn")
    ]
    with torch.no_grad():
        toy(x)
    for handle in handles:
        handle.remove()
    paths = {"layers": "blocks", "mlp": "ffn", "self_attn": None}
    rename, displaced = split_aliases(toy, paths, rename_mapping(paths))
    assert displaced == {"mlp": "ffn"} and rename == {"blocks": "layers"}
    wrapped = nnsight.NNsight(toy, rename=rename)
    bind_displaced(wrapped, paths, displaced)
    read = []
    with wrapped.trace(x):
        for i in range(2):
            read.append((wrapped.layers[i].mlp.output.save(), wrapped.layers[i].E_mlp.output.save()))
    for i, (feed_forward, gate) in enumerate(read):
        torch.testing.assert_close(gate, seen[(i, "mlp")], rtol=0, atol=0)
        torch.testing.assert_close(feed_forward, seen[(i, "ffn")], rtol=0, atol=0)


def test_mount_over_child_refuses_a_name_that_is_no_child():
    wrapped = nnsight.NNsight(_Toy())
    with pytest.raises(RenamingError, match="training"):
        mount_over_child(wrapped, "training", wrapped.blocks, "blocks")
    with pytest.raises(RenamingError, match="trace"):
        mount_over_child(wrapped, "trace", wrapped.blocks, "blocks")


def test_prophetnet_logits_come_from_the_first_predicting_stream():
    model = tiny_model("prophetnet")
    layers = model.prophetnet.decoder.layers
    last = f"prophetnet.decoder.layers.{len(layers) - 1}"
    encoding = tiny_tokenizer()(PROMPTS[:1], return_tensors="pt")
    seen: dict = {}
    handle = model.get_submodule(last).register_forward_hook(lambda _m, _a, out: seen.update(out=out[0].detach()))
    with torch.no_grad():
        logits = model(**encoding).logits
    handle.remove()
    seq = encoding.input_ids.shape[1]
    assert seen["out"].shape[1] == (1 + model.config.ngram) * seq  # the streams side by side
    with torch.no_grad():
        torch.testing.assert_close(model.lm_head(seen["out"][:, seq : 2 * seq]), logits, rtol=0, atol=1e-5)
        assert not torch.allclose(model.lm_head(seen["out"][:, :seq]), logits, atol=1e-2)


def test_xlm_layer_boundaries_are_two_different_modules():
    model = tiny_model("xlm")
    base = model.transformer
    encoding = tiny_tokenizer()(PROMPTS[:1], return_tensors="pt")
    seen: dict = {}
    handles = [
        module.register_forward_hook(lambda _m, args, out, key=(name, i): seen.update({key: (args[0], out)}))
        for name in ("attentions", "layer_norm2")
        for i, module in enumerate(getattr(base, name))
    ]
    with torch.no_grad():
        final = base(**encoding).last_hidden_state
    for handle in handles:
        handle.remove()
    n_layers = len(base.attentions)
    for i in range(n_layers):
        leaving = seen[("layer_norm2", i)][1]
        entering_next = seen[("attentions", i + 1)][0] if i + 1 < n_layers else final
        # The stream leaving layer i is layer_norm2[i]'s output, the next one's attention input.
        torch.testing.assert_close(leaving, entering_next, rtol=0, atol=0)
        # layer_norm2[i] reads mid + ffn(mid), not the stream entering layer i.
        assert not torch.allclose(seen[("layer_norm2", i)][0], seen[("attentions", i)][0])


def test_a_type_whose_plain_forward_cannot_run_on_a_prompt_is_a_forward_error():
    # The Gemma 4 unified drafter builds, but its plain forward needs the target model's states.
    from nnterp.status import FORWARD_ERROR
    from nnterp.testing.sweep import sweep_model_type, totals

    model = tiny_model("gemma4_unified_assistant")
    encoding = tiny_tokenizer()(PROMPTS[:1], return_tensors="pt")
    with pytest.raises(ValueError) as plain, torch.no_grad():
        model(**encoding)
    entry = sweep_model_type("gemma4_unified_assistant", MODEL_FOR_CAUSAL_LM_MAPPING_NAMES["gemma4_unified_assistant"])
    assert entry["status"] == FORWARD_ERROR
    assert str(plain.value) in entry["error"]
    assert entry["reason"]
    counts = totals({"drafter": entry, "llama": {"status": "pass", "checks": {}}})
    assert (counts["buildable"], counts["runnable"], counts["standardized"]) == (2, 1, 1)


@pytest.mark.parametrize("model_type", ["reformer"])
def test_unsupported_types_get_tiny_configs_whose_plain_forward_runs(model_type):
    from nnterp.contrib.specs import CONTRIB_UNSUPPORTED_TINY_CONFIGS

    model = tiny_model(model_type)
    for key, value in CONTRIB_UNSUPPORTED_TINY_CONFIGS[model_type].items():
        assert getattr(model.config, key) == (list(value) if isinstance(value, tuple) and isinstance(getattr(model.config, key), list) else value), key
    encoding = tiny_tokenizer()(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**encoding).logits
    assert logits.shape == (*encoding["input_ids"].shape, model.config.vocab_size)
    assert bool(torch.isfinite(logits).all())
