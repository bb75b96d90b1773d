"""Long-running use must not leak: resident memory stays flat over many traces and collections."""

from __future__ import annotations

import gc
import weakref

import psutil
import pytest
import torch

from nnterp.nnsight_utils import collect_token_activations_batched, get_token_activations

PROMPTS = ["The capital of France is", "Hello world", "The cat sat on the mat", "one two three"]


def resident_bytes() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_500_traces_leave_resident_memory_flat(llama):
    kept = []

    def one_trace(index: int) -> None:
        with llama.trace(PROMPTS[index % len(PROMPTS)]):
            hidden = llama.layers_output[1].save()
            logits = llama.logits.save()
        kept.append(float(logits[0, -1, 0]) + float(hidden[0, 0, 0]))

    for index in range(50):
        one_trace(index)
    before = resident_bytes()
    for index in range(500):
        one_trace(index)
    after = resident_bytes()
    assert len(kept) == 550
    assert after < before * 1.05, f"RSS grew from {before / 2**20:.1f} MiB to {after / 2**20:.1f} MiB"


def test_200_batched_collections_leave_resident_memory_flat(llama):
    prompts = PROMPTS * 5
    for _ in range(20):
        collect_token_activations_batched(llama, prompts, batch_size=8, tqdm=False)
    before = resident_bytes()
    for _ in range(200):
        result = collect_token_activations_batched(llama, prompts, batch_size=8, tqdm=False)
    after = resident_bytes()
    assert result.shape == (llama.num_layers, len(prompts), llama.hidden_size)
    assert after < before * 1.05, f"RSS grew from {before / 2**20:.1f} MiB to {after / 2**20:.1f} MiB"


def test_collected_activations_keep_no_graph_and_no_inputs_alive(llama):
    activations = get_token_activations(llama, PROMPTS)
    assert activations.grad_fn is None and activations._base is None

    def traced_last_token():
        # Its own frame: nnsight snapshots the tracing frame's locals, which live as long as the frame.
        encoding = llama.tokenizer(PROMPTS, return_tensors="pt", padding=True)
        input_ids = encoding["input_ids"]
        with torch.no_grad(), llama.trace({"input_ids": input_ids, "attention_mask": encoding["attention_mask"]}):
            saved = llama.layers_output[0][:, -1].save()
        return saved, weakref.ref(input_ids)

    saved, watcher = traced_last_token()
    gc.collect()
    assert saved.shape == (len(PROMPTS), llama.hidden_size)
    assert watcher() is None, "a saved value kept the model's inputs alive"


def _stopped_readers():
    from nnterp.cache import cache_activations
    from nnterp.interventions import logit_lens

    return {
        "get_token_activations": lambda model: get_token_activations(model, PROMPTS, layers=[-1]),
        "cache_activations": lambda model: cache_activations(model, PROMPTS, ["layers_output"]),
        "logit_lens": lambda model: logit_lens(model, PROMPTS),
    }


@pytest.mark.parametrize("reader", sorted(_stopped_readers()))
def test_a_stopped_forward_frees_its_activations_at_once(llama, reader):
    """Nothing of a stopped forward outlives the call, even with the cyclic collector off:
    nnsight's stop exception is in a reference cycle with the forward's frames."""
    last_layer = llama._module.get_submodule(llama.paths["layers"])[-1]
    entering = []
    handle = last_layer.register_forward_pre_hook(
        lambda _m, args, kwargs: entering.append(weakref.ref(args[0] if args else kwargs["hidden_states"])),
        with_kwargs=True,
    )
    gc.collect()
    gc.disable()
    try:
        _stopped_readers()[reader](llama)
        alive = [ref for ref in entering if ref() is not None]
    finally:
        gc.enable()
        handle.remove()
    assert len(entering) == 1
    assert alive == []
