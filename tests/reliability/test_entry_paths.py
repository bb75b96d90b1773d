"""Every entry path gives a typed nnterp error with the fix, a warning, or a correct result.

The table holds one row per case of issue 16: the call, the exception type, and words the
message must hold (the argument it names and the fix). Each row also checks that the error is
raised at nnterp's boundary: the deepest frame of its traceback is nnterp code, not torch,
transformers or nnsight. The correct-result cases (RoPE past its context, metric positions on
a padded batch, grouped-query patching, threads) and the batch == one-by-one properties are
checked against the plain HF model run with torch hooks.
"""

from __future__ import annotations

import json
import os
import traceback
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import nnterp
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nnterp import StandardizedTransformer
from nnterp.cache import cache_activations
from nnterp.errors import (
    InvalidInputError,
    ModelLoadError,
    TokenIdError,
    TokenPositionError,
    TraceError,
)
from nnterp.inputs import (
    nnsight_errors,
    require_broadcastable,
    require_factor,
    require_steering_vector,
)
from nnterp.interventions.attribution import attribution_patching
from nnterp.interventions.lens import logit_lens
from nnterp.interventions.metrics import logit_difference, token_logit
from nnterp.interventions.patching import activation_patching
from nnterp.nnsight_utils import get_token_activations
from nnterp.testing import tiny_tokenizer

from tests.conftest import make_model

TOKENIZER = tiny_tokenizer()
MODELS: dict[str, tuple[StandardizedTransformer, torch.nn.Module]] = {}


def models(kind: str) -> tuple[StandardizedTransformer, torch.nn.Module]:
    """(wrapped, plain HF) tiny model of ``kind``, built once per module."""
    if kind not in MODELS:
        MODELS[kind] = make_model(kind)
    return MODELS[kind]


def wrapped(kind: str) -> StandardizedTransformer:
    return models(kind)[0]


def hf_layers(hf_model: torch.nn.Module) -> torch.nn.ModuleList:
    return hf_model.transformer.h if hasattr(hf_model, "transformer") else hf_model.model.layers


def hf_norm(hf_model: torch.nn.Module) -> torch.nn.Module:
    return hf_model.transformer.ln_f if hasattr(hf_model, "transformer") else hf_model.model.norm


@torch.no_grad()
def hf_run(hf_model: torch.nn.Module, ids: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One prompt alone through the plain HF model: each layer's output (seq, hidden), read
    with forward hooks, and the logits (seq, vocab)."""
    outputs: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        outputs.append((output[0] if isinstance(output, tuple) else output)[0].detach().clone())

    hooks = [layer.register_forward_hook(keep) for layer in hf_layers(hf_model)]
    try:
        logits = hf_model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        for hook in hooks:
            hook.remove()
    return outputs, logits


def ids_of(text: str) -> list[int]:
    return TOKENIZER(text)["input_ids"]


# -- the table -------------------------------------------------------------------------------


def too_long_ids(kind: str) -> torch.Tensor:
    return torch.full((1, wrapped(kind).max_positions + 3), 5, dtype=torch.long)


def trace_logits(kind: str, prompts) -> torch.Tensor:
    model = wrapped(kind)
    with model.trace(prompts):
        logits = model.logits.save()
    return logits


def invoke_with(prompts) -> None:
    model = wrapped("gpt2")
    with model.trace() as tracer:
        with tracer.invoke("The cat sat"):
            model.logits.save()
        with tracer.invoke(prompts):
            model.logits.save()


def read_outside_a_trace() -> None:
    # nnsight raises this from the accessor itself, outside any trace; `nnsight_errors` is
    # nnterp's boundary for it.
    with nnsight_errors():
        wrapped("gpt2").layers_output[0]


def read_out_of_order() -> None:
    model = wrapped("gpt2")
    with model.trace("The cat sat on the mat"):
        model.layers_output[1].save()
        model.layers_output[0].save()


def steer_with(vector: torch.Tensor) -> None:
    model = wrapped("gpt2")
    with model.trace("The cat sat"):
        model.steer(0, vector)
        model.logits.save()


def metric_in_trace(metric) -> None:
    model = wrapped("gpt2")
    with model.trace(["The cat sat on the mat", "Hi"]):
        metric(model.logits).save()


def metric_in_invokes(metric) -> None:
    model = wrapped("gpt2")
    with model.trace() as tracer:
        with tracer.invoke("The cat sat on the mat"):
            model.logits.save()
        with tracer.invoke("Hi"):
            metric(model.logits).save()


def empty_model_dir(tmp_path: Path, config: dict) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def a_file(tmp_path: Path, name: str) -> str:
    (tmp_path / name).write_text("not a model")
    return str(tmp_path / name)


class HeadedModule(torch.nn.Module):
    """A custom causal LM that is no transformers class (it has a next-token head)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(16, 8)
        self.lm_head = torch.nn.Linear(8, 16)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.embed(input_ids))


#: (id, call(tmp_path), exception type, words the message must hold)
CASES: list[tuple[str, Callable[[Path], object], type[BaseException], tuple[str, ...]]] = [
    ("token-id tensor past learned positions", lambda _: trace_logits("gpt2", too_long_ids("gpt2")),
     InvalidInputError, ("prompts", "256 positions", "truncat")),
    ("token-id list past learned positions", lambda _: trace_logits("gpt2", too_long_ids("gpt2")[0].tolist()),
     InvalidInputError, ("prompts", "256 positions", "truncat")),
    ("encoding past learned positions",
     lambda _: trace_logits("gpt2", {"input_ids": too_long_ids("gpt2"), "attention_mask": torch.ones_like(too_long_ids("gpt2"))}),
     InvalidInputError, ("prompts", "256 positions", "truncat")),
    ("input_ids= past learned positions",
     lambda _: wrapped("gpt2").trace(input_ids=too_long_ids("gpt2")),
     InvalidInputError, ("input_ids", "256 positions", "truncat")),
    ("get_token_activations past learned positions",
     lambda _: get_token_activations(wrapped("gpt2"), ["a " * 300]),
     InvalidInputError, ("256 positions", "truncat")),
    ("tracer.invoke past learned positions", lambda _: invoke_with(too_long_ids("gpt2")),
     InvalidInputError, ("prompts", "256 positions", "truncat")),
    ("tracer.invoke(5)", lambda _: invoke_with(5), InvalidInputError, ("prompts", "list of strings", "int")),
    ("token id outside the vocabulary", lambda _: trace_logits("gpt2", torch.tensor([[1, 2, 100_000]])),
     TokenIdError, ("prompts", "100000", "vocabulary")),
    ("trace(5)", lambda _: trace_logits("gpt2", 5), InvalidInputError, ("prompts", "list of strings", "token ids", "encoding", "int")),
    ("trace(bytes)", lambda _: trace_logits("gpt2", b"The cat"), InvalidInputError, ("prompts", "list of strings", "bytes")),
    ("trace(None)", lambda _: trace_logits("gpt2", None), InvalidInputError, ("prompts", "list of strings", "NoneType")),
    ("trace(mixed list)", lambda _: trace_logits("gpt2", ["The cat", 5]), InvalidInputError, ("prompts", "list of strings")),
    ("trace(float tensor)", lambda _: trace_logits("gpt2", torch.ones(1, 3)), InvalidInputError, ("token ids", "integer")),
    ("trace(empty list)", lambda _: trace_logits("gpt2", []), InvalidInputError, ("prompts", "empty")),
    ("get_token_activations(None)", lambda _: get_token_activations(wrapped("gpt2"), None),
     InvalidInputError, ("prompts=", "tracer=")),
    ("layer read out of forward order", lambda _: read_out_of_order(),
     TraceError, ("already ran past it", "order the forward computes", "two traces")),
    ("accessor read outside a trace", lambda _: read_outside_a_trace(),
     TraceError, ("outside of interleaving", "inside `with model.trace(...)`", ".save()")),
    ("NaN in the steering vector",
     lambda _: steer_with(torch.full((wrapped("gpt2").hidden_size,), float("nan"))),
     InvalidInputError, ("steering_vector", "NaN", "finite")),
    ("inf in the steering vector",
     lambda _: require_steering_vector(torch.tensor([1.0, float("inf"), 0.0, 0.0]), 4),
     InvalidInputError, ("steering_vector", "NaN/inf", "finite")),
    ("NaN steering factor", lambda _: require_steering_vector(torch.ones(4), 4, float("nan")),
     InvalidInputError, ("factor", "nan", "finite")),
    ("infinite steering factor", lambda _: require_factor(float("inf")), InvalidInputError, ("factor", "inf", "finite")),
    ("steering vector of seq+3 rows",
     lambda _: require_broadcastable(torch.ones(6, 16), (1, 3, 16), "steering_vector", "the steered tokens"),
     InvalidInputError, ("steering_vector", "(6, 16)", "(16,)")),
    ("model path that does not exist", lambda tmp: StandardizedTransformer(str(tmp / "no" / "such" / "model")),
     ModelLoadError, ("does not exist", "no/such/model", "Hub id")),
    ("model directory without weights", lambda tmp: StandardizedTransformer(empty_model_dir(tmp, {"model_type": "gpt2"})),
     ModelLoadError, ("no weights", "save_pretrained")),
    ("model directory without config", lambda tmp: StandardizedTransformer(str(tmp)),
     ModelLoadError, ("no config.json", "save_pretrained")),
    ("remote code with trust_remote_code off",
     lambda tmp: StandardizedTransformer(empty_model_dir(
         tmp, {"model_type": "my_own_lm", "auto_map": {"AutoModelForCausalLM": "modeling.MyLM"}})),
     ModelLoadError, ("trust_remote_code=True", "auto_map")),
    ("a GGUF file given as the model", lambda tmp: StandardizedTransformer(a_file(tmp, "m.gguf")),
     ModelLoadError, ("is a file", "gguf_file='m.gguf'")),
    ("custom nn.Module LM", lambda _: StandardizedTransformer(HeadedModule(), TOKENIZER),
     InvalidInputError, ("HeadedModule", "ForCausalLM", "rename=", "spec=")),
    ("metric token id out of range", lambda _: metric_in_trace(token_logit(10_000)),
     TokenIdError, ("tokens", "10000", "vocabulary")),
    ("metric incorrect id out of range", lambda _: metric_in_trace(logit_difference(5, -1)),
     TokenIdError, ("incorrect", "-1", ">= 0")),
    ("metric position past the shortest prompt", lambda _: metric_in_trace(token_logit(5, position=4)),
     TokenPositionError, ("position 4", "prompt 1", "tokens")),
    ("metric position 0 in a trace with several invokes", lambda _: metric_in_invokes(token_logit(5, position=0)),
     InvalidInputError, ("position", "attention_mask=", "negative position")),
    ("metric position not an int", lambda _: token_logit(5, position="last"),
     InvalidInputError, ("position", "int")),
    ("metric token not an id", lambda _: logit_difference("Paris", 3),
     InvalidInputError, ("correct", "token id")),
]


def raising_frame(error: BaseException) -> str:
    """The file of the innermost frame the error was raised from."""
    return traceback.extract_tb(error.__traceback__)[-1].filename


def in_nnterp(filename: str) -> bool:
    return any(os.path.abspath(filename).startswith(os.path.abspath(root) + os.sep) for root in nnterp.__path__)


@pytest.mark.parametrize(("call", "kind", "words"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_entry_path_raises_a_typed_error_with_the_fix(tmp_path, call, kind, words):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(kind) as caught:
            call(tmp_path)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in: {message}"
    where = raising_frame(caught.value)
    assert in_nnterp(where), f"raised from {where}, not at nnterp's boundary"


def test_out_of_order_error_keeps_nnsights_error_as_its_cause():
    with pytest.raises(TraceError) as caught:
        read_out_of_order()
    assert type(caught.value.__cause__).__name__ == "OutOfOrderError"
    assert str(caught.value.__cause__) in str(caught.value)


# -- correct results -------------------------------------------------------------------------


def test_rope_model_past_its_context_warns_and_matches_hf():
    model, hf_model = models("llama")
    ids = torch.arange(model.max_positions + 4) % 400 + 5
    with pytest.warns(UserWarning, match="max_position_embeddings"):
        logits = trace_logits("llama", ids[None])
    _, expected = hf_run(hf_model, ids.tolist())
    torch.testing.assert_close(logits[0], expected, atol=1e-5, rtol=1e-4)


def test_trace_accepts_every_input_form_with_the_same_logits():
    _, hf_model = models("gpt2")
    ids = ids_of("The cat sat on the mat")
    _, expected = hf_run(hf_model, ids)
    forms = [
        ids,
        [ids],
        torch.tensor(ids),
        torch.tensor([ids]),
        {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)},
        TOKENIZER("The cat sat on the mat", return_tensors="pt"),
    ]
    for form in forms:
        torch.testing.assert_close(trace_logits("gpt2", form)[0], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("position", [0, 1, -1, -2])
def test_metric_positions_count_within_each_prompt_on_a_padded_batch(position):
    model, hf_model = models("gpt2")
    prompts = ["The cat sat on the mat today", "Hi there"]
    correct, incorrect = [7, 11], [13, 17]
    with model.trace(prompts):
        assert int(model.batch_attention_mask()[1].sum()) < model.batch_attention_mask().shape[1]
        lens = token_logit(correct, position)(model.logits).save()
        diff = logit_difference(correct, incorrect, position)(model.logits).save()
    alone = [hf_run(hf_model, ids_of(prompt))[1] for prompt in prompts]
    expected_lens = sum(alone[row][position, correct[row]] for row in range(2)) / 2
    expected_diff = sum(alone[row][position, correct[row]] - alone[row][position, incorrect[row]] for row in range(2)) / 2
    torch.testing.assert_close(lens, expected_lens, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(diff, expected_diff, atol=1e-5, rtol=1e-4)


def test_metric_on_kept_logits_takes_the_attention_mask():
    model, hf_model = models("gpt2")
    prompts = ["The cat sat on the mat today", "Hi there"]
    batch = model.tokenizer(prompts, return_tensors="pt", padding=True)
    with model.trace(prompts):
        logits = model.logits.save()
    value = token_logit(9, 0)(logits, attention_mask=batch["attention_mask"])
    expected = sum(hf_run(hf_model, ids_of(prompt))[1][0, 9] for prompt in prompts) / 2
    torch.testing.assert_close(value, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("site", ["keys_rotated", "keys", "values", "queries_rotated"])
def test_grouped_query_head_patching_has_the_sites_head_count(site):
    model, hf_model = models("llama")
    config = hf_model.config
    heads = config.num_key_value_heads if site.startswith(("keys", "values")) else config.num_attention_heads
    assert config.num_key_value_heads < config.num_attention_heads
    prompt = "The cat sat on the mat"
    metric = logit_difference(7, 11)
    grid = activation_patching(model, prompt, prompt, metric, site=site)
    estimate = attribution_patching(model, prompt, prompt, metric, site=site)
    assert grid.shape == estimate.shape == (config.num_hidden_layers, heads)
    # Patching a run with its own activations changes nothing: every cell is the plain metric.
    logits = hf_run(hf_model, ids_of(prompt))[1]
    expected = logits[-1, 7] - logits[-1, 11]
    torch.testing.assert_close(grid, torch.full_like(grid, float(expected)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(estimate, torch.full_like(estimate, float(expected)), atol=1e-4, rtol=1e-4)


def test_traces_from_several_threads_are_serialized_and_correct():
    model, hf_model = models("llama")
    prompts = ["The cat sat", "A dog ran far away", "Hello", "Paris is the capital of France"]
    expected = {prompt: hf_run(hf_model, ids_of(prompt))[1] for prompt in prompts}
    results: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(prompts))

    def work(worker: int) -> None:
        try:
            start.wait()
            for repeat in range(3):
                with model.trace(prompts[worker]):
                    logits = model.logits.save()
                results[worker, repeat] = logits[0]
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(results) == 3 * len(prompts)
    for (worker, _), logits in results.items():
        torch.testing.assert_close(logits, expected[prompts[worker]], atol=1e-5, rtol=1e-4)


# -- batch == one-by-one (hypothesis) ----------------------------------------------------------

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=7)
PROMPTS = st.lists(st.lists(WORD, min_size=1, max_size=10).map(" ".join), min_size=1, max_size=4)
FEW = settings(max_examples=10, deadline=None)
KINDS = st.sampled_from(["gpt2", "llama"])


@given(KINDS, PROMPTS, st.integers(min_value=-3, max_value=2))
@FEW
def test_get_token_activations_batch_equals_each_prompt_alone(kind, prompts, idx):
    model, hf_model = models(kind)
    shortest = min(len(ids_of(prompt)) for prompt in prompts)
    idx = max(idx, -shortest) if idx < 0 else idx % shortest
    batched = get_token_activations(model, prompts, idx=idx)
    for row, prompt in enumerate(prompts):
        layers, _ = hf_run(hf_model, ids_of(prompt))
        expected = torch.stack([hidden[idx] for hidden in layers])
        torch.testing.assert_close(batched[:, row], expected, atol=1e-5, rtol=1e-4)


@given(KINDS, PROMPTS)
@FEW
def test_logit_lens_batch_equals_each_prompt_alone(kind, prompts):
    model, hf_model = models(kind)
    probs = logit_lens(model, prompts)
    for row, prompt in enumerate(prompts):
        layers, logits = hf_run(hf_model, ids_of(prompt))
        with torch.no_grad():
            expected = torch.stack([hf_model.lm_head(hf_norm(hf_model)(hidden[-1])).softmax(-1) for hidden in layers])
        torch.testing.assert_close(probs[row], expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(probs[row, -1], logits[-1].softmax(-1), atol=1e-5, rtol=1e-4)


@given(KINDS, PROMPTS, st.sampled_from([None, 0, -1, [0, -1]]))
@FEW
def test_cache_activations_batch_equals_each_prompt_alone(kind, prompts, positions):
    model, hf_model = models(kind)
    cache = cache_activations(model, prompts, ["layers_output", "logits"], positions=positions)
    batch_len = max(len(ids_of(p)) for p in prompts)
    for row, prompt in enumerate(prompts):
        ids = ids_of(prompt)
        layers, logits = hf_run(hf_model, ids)
        pad = batch_len - len(ids)

        def real(value: torch.Tensor, pad: int = pad) -> torch.Tensor:
            return value[pad:] if positions is None else value  # the row's real tokens

        def picked(full: torch.Tensor) -> torch.Tensor:
            return full if positions is None else full[positions]

        for layer, hidden in enumerate(layers):
            torch.testing.assert_close(real(cache[f"layers_output.{layer}"][row]), picked(hidden), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(real(cache["logits"][row]), picked(logits), atol=1e-5, rtol=1e-4)
