"""The leftover causal-LM families: the reasons registry and the pending specs' meanings.

``NOT_STANDARDIZED`` must name real causal-LM types that no registered spec covers. The pending
specs (``PENDING_SPECS``, waiting on renaming) are checked as data against plain HF forward
hooks on a tiny model: the modules they name compute what the spec says they do.
"""

from __future__ import annotations

import torch
from nnterp.contrib.families.more import (
    GIT,
    MODERNBERT_DECODER,
    NOT_STANDARDIZED,
    PENDING_SPECS,
    SPECS,
)
from nnterp.plugins import get_registry
from nnterp.testing import tiny_model, tiny_tokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

PROMPTS = ["The cat sat on the mat", "Hello world"]


def _run_with_hooks(model: torch.nn.Module, paths: list[str]) -> tuple[torch.Tensor, dict]:
    """Logits of a left-padded batch and ``{(path, "in" | "out"): tensor}`` for each module path."""
    seen: dict = {}
    handles = []
    for path in paths:
        module = model.get_submodule(path)

        def hook(_module, args, kwargs, output, path=path):
            seen[(path, "in")] = (args[0] if args else next(iter(kwargs.values()))).detach().clone()
            seen[(path, "out")] = (output[0] if isinstance(output, tuple) else output).detach().clone()

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    encoding = tiny_tokenizer()(PROMPTS, return_tensors="pt", padding=True)
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
