"""nnterp.nnsight_utils: functional getters and activation collection against plain hooks."""

from __future__ import annotations

import torch

from nnterp import nnsight_utils as nu

PROMPTS = ["The capital of France is", "Hi", "one two three four five six seven", "cat", "The weather today is"]


def hooked_last_token_states(model, prompt):
    """Each layer's output at ``prompt``'s last token, by forward hooks on the plain HF model."""
    layers = model._module.get_submodule(model.paths["layers"])
    outputs = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
               for layer in layers]
    with torch.no_grad():
        model._module(**model.tokenizer(prompt, return_tensors="pt"))
    for handle in handles:
        handle.remove()
    return torch.stack([output[0] for output in outputs])  # (layers, seq, hidden)


def test_get_token_activations_match_hooks_per_prompt(llama):
    activations = nu.get_token_activations(llama, PROMPTS, idx=-1)
    assert activations.shape == (llama.num_layers, len(PROMPTS), llama.hidden_size)
    for row, prompt in enumerate(PROMPTS):
        expected = hooked_last_token_states(llama, prompt)[:, -1]
        torch.testing.assert_close(activations[:, row], expected, atol=1e-5, rtol=1e-4)


def test_positive_idx_counts_over_each_prompts_own_tokens(gpt2):
    activations = nu.get_token_activations(gpt2, PROMPTS, idx=0, layers=[1])
    for row, prompt in enumerate(PROMPTS):
        expected = hooked_last_token_states(gpt2, prompt)[1, 0]
        torch.testing.assert_close(activations[0, row], expected, atol=1e-5, rtol=1e-4)


def test_layer_subset_and_order_are_respected(llama):
    both = nu.get_token_activations(llama, PROMPTS[:2], layers=[1, 0])
    full = nu.get_token_activations(llama, PROMPTS[:2])
    assert torch.equal(both[0], full[1]) and torch.equal(both[1], full[0])
    assert torch.equal(nu.get_token_activations(llama, PROMPTS[:2], layers=-1)[0], full[-1])


def test_results_hold_no_graph(llama):
    activations = nu.get_token_activations(llama, PROMPTS[:2])
    assert activations.grad_fn is None and not activations.requires_grad


def test_batched_collection_equals_plain_batches_in_caller_order(llama):
    prompts = [f"{PROMPTS[i % 5]} {'x ' * (i % 7)}".strip() for i in range(23)]
    sorted_result = nu.collect_token_activations_batched(llama, prompts, batch_size=4, layers=[0, 1], tqdm=False)
    plain = nu.collect_token_activations_batched(
        llama, prompts, batch_size=4, layers=[0, 1], tqdm=False, sort_by_length=False
    )
    assert sorted_result.shape == (2, len(prompts), llama.hidden_size)
    torch.testing.assert_close(sorted_result, plain, atol=1e-5, rtol=1e-4)
    one_batch = nu.get_token_activations(llama, prompts[:4], layers=[0, 1])
    assert torch.equal(plain[:, :4], one_batch)


def test_batched_collection_runs_the_longest_batch_first(llama):
    prompts = [f"{PROMPTS[i % 5]} {'x ' * (i % 7)}".strip() for i in range(23)]
    lengths = [len(ids) for ids in llama.tokenizer(prompts)["input_ids"]]
    widths = []
    embed = llama._module.get_submodule(llama.paths["embed_tokens"])
    handle = embed.register_forward_hook(lambda _m, args, _out: widths.append(args[0].shape[1]))
    try:
        nu.collect_token_activations_batched(llama, prompts, batch_size=4, layers=[0], tqdm=False)
    finally:
        handle.remove()
    assert len(widths) == 6
    assert widths[0] == max(lengths)
    assert widths == sorted(widths, reverse=True) and widths[-1] < widths[0]


def test_collection_runs_without_a_kv_cache(llama):
    seen = []
    model_body = llama._module.get_submodule(llama.paths["layers"].rsplit(".", 1)[0])
    handle = model_body.register_forward_pre_hook(
        lambda _m, _args, kwargs: seen.append(kwargs.get("use_cache")), with_kwargs=True
    )
    try:
        nu.get_token_activations(llama, PROMPTS[:2])
    finally:
        handle.remove()
    assert seen == [False]


def test_stopping_early_returns_exactly_what_a_full_forward_returns(llama):
    encoding = nu.encode(llama, PROMPTS)
    stopped = nu._collect_batch(llama, encoding, [0], -1, stop_early=True)
    full = nu._collect_batch(llama, encoding, [0], -1, stop_early=False)
    assert torch.equal(stopped, full)


def test_functional_getters_match_accessors(gpt2):
    with torch.no_grad(), gpt2.trace(PROMPTS[0]):
        layer_in = nu.get_layer_input(gpt2, 1).save()
        attn = nu.get_attention_output(gpt2, 1).save()
        mlp = nu.get_mlp_output(gpt2, 1).save()
        layer_out = nu.get_layer_output(gpt2, 1).save()
        projected = nu.project_on_vocab(gpt2, layer_out).save()
        logits = nu.get_logits(gpt2).save()
        probs = nu.get_next_token_probs(gpt2).save()
    # GPT-2 block: h = x + attn(ln_1(x)); out = h + mlp(ln_2(h))
    torch.testing.assert_close(layer_out, layer_in + attn + mlp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(projected, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(probs, logits[:, -1].softmax(-1))
    assert nu.get_num_layers(gpt2) == 2
    assert nu.get_layer(gpt2, -1)._module is gpt2._module.transformer.h[1]
