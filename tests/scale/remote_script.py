"""Run by tests/scale/test_remote.py in a subprocess: every nnterp function that runs the model,
locally and with ``remote="local"`` (NNsight's simulation of an NDIF request: the trace is
serialized, deserialized without the caller's modules, and run), and whether the two agree.

Prints one line per function: ``<name> equal <requests>`` / ``<name> differ <requests>`` /
``<name> error <message>``, ``<requests>`` being how many simulated remote requests it made.
"""

from __future__ import annotations

import os
import sys
import traceback
import warnings

warnings.simplefilter("ignore")

import torch  # noqa: E402
from nnterp import StandardizedTransformer, nnsight_utils  # noqa: E402
from nnterp.interventions import logit_lens, patchscope_lens  # noqa: E402
from nnterp.interventions.generation import generate_with, steer_generate  # noqa: E402
from nnterp.interventions.patchscope import patchscope_generate  # noqa: E402
from nnterp.interventions.gradients import compute_gradients  # noqa: E402
from nnterp.interventions.metrics import token_logit  # noqa: E402
from nnterp.prompt_utils import Prompt, next_token_probs, run_prompts  # noqa: E402
from nnterp.cache import cache_activations  # noqa: E402
from nnterp.interventions import (  # noqa: E402
    accumulated_resid,
    activation_patching,
    attention_pattern_patching,
    attribution_patching,
    decompose_residual,
    evaluate_metric,
    every_block_patching,
    head_patching,
    logit_attribution,
    path_patching,
    path_patching_heads,
    run_with_patches,
)
from nnterp.testing import tiny_model, tiny_tokenizer  # noqa: E402

from nnsight.intervention.backends.local import LocalSimulationBackend  # noqa: E402

requests = [0]
_simulate = LocalSimulationBackend.__call__


def _counted(self, tracer):
    requests[0] += 1
    return _simulate(self, tracer)


LocalSimulationBackend.__call__ = _counted  # count the simulated remote requests

model = StandardizedTransformer(tiny_model("llama"), tiny_tokenizer(), enable_attention_probs=True)
PROMPTS = ["Hello world", "The cat sat on the mat"]
vector = torch.randn(model.hidden_size, generator=torch.Generator().manual_seed(0))


def same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return all(same(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


CALLS = {
    "logit_lens": lambda remote: logit_lens(model, PROMPTS, remote=remote),
    "patchscope_lens": lambda remote: patchscope_lens(model, PROMPTS, remote=remote),
    "patchscope_generate": lambda remote: patchscope_generate(model, PROMPTS, max_new_tokens=3, remote=remote),
    "get_token_activations": lambda remote: nnsight_utils.get_token_activations(model, PROMPTS, remote=remote),
    "collect_token_activations_batched": lambda remote: nnsight_utils.collect_token_activations_batched(
        model, PROMPTS * 2, batch_size=3, remote=remote, tqdm=False, use_session=False
    ),
    "collect_last_token_activations_session": lambda remote: nnsight_utils.collect_last_token_activations_session(
        model, PROMPTS * 2, batch_size=3, remote=remote
    ),
    "compute_next_token_probs": lambda remote: nnsight_utils.compute_next_token_probs(model, PROMPTS, remote=remote),
    "next_token_probs": lambda remote: next_token_probs(model, PROMPTS, remote=remote),
    "steer_generate": lambda remote: steer_generate(
        model, PROMPTS, layers=1, steering_vector=vector, token_positions=-1, max_new_tokens=3, remote=remote
    ),
    "run_prompts": lambda remote: run_prompts(
        model, [Prompt.from_strings("The capital of France is", {"a": ["Paris"], "b": ["London"]}, model)],
        remote=remote, tqdm=False,
    ),
    "compute_gradients": lambda remote: compute_gradients(
        model, PROMPTS, token_logit(5), "layers_output", positions=-1, remote=remote
    ),
    "generate_with": lambda remote: generate_with(
        model, PROMPTS, {"layers_output.0": vector}, max_new_tokens=3, remote=remote
    ),
}

CLEAN, CORRUPTED = ["The cat sat on the mat"], ["The dog sat on the mat"]
assert len(model.tokenizer(CLEAN[0])["input_ids"]) == len(model.tokenizer(CORRUPTED[0])["input_ids"])
metric = token_logit(5)
CALLS.update({
    "cache_activations": lambda remote: dict(cache_activations(model, PROMPTS, ["layers_output", "logits"], remote=remote)),
    "evaluate_metric": lambda remote: evaluate_metric(model, PROMPTS, metric, remote=remote),
    "run_with_patches": lambda remote: run_with_patches(
        model, CORRUPTED, {"layers_output.0": torch.zeros(1, len(model.tokenizer(CORRUPTED[0])["input_ids"]), model.hidden_size)},
        metric, remote=remote,
    ),
    "activation_patching": lambda remote: activation_patching(model, CLEAN, CORRUPTED, metric, remote=remote),
    "head_patching": lambda remote: head_patching(model, CLEAN, CORRUPTED, metric, remote=remote),
    "attention_pattern_patching": lambda remote: attention_pattern_patching(model, CLEAN, CORRUPTED, metric, remote=remote),
    "attribution_patching": lambda remote: attribution_patching(model, CLEAN, CORRUPTED, metric, remote=remote),
    "every_block_patching": lambda remote: every_block_patching(model, CLEAN, CORRUPTED, metric, remote=remote).as_dict(),
    "path_patching": lambda remote: path_patching(
        model, CLEAN, CORRUPTED, metric, sender=(0, 1), receivers="logits", remote=remote
    ),
    "path_patching_heads": lambda remote: path_patching_heads(model, CLEAN, CORRUPTED, metric, receivers="logits", remote=remote),
    "decompose_residual": lambda remote: decompose_residual(model, PROMPTS, remote=remote).components,
    "logit_attribution": lambda remote: logit_attribution(model, PROMPTS, 5, remote=remote).contributions,
    "accumulated_resid": lambda remote: accumulated_resid(model, PROMPTS, positions=-1, remote=remote),
})

for extra in sys.argv[1:]:  # further calls, defined in a module's CALLS dict: module:attribute
    module_name, attribute = extra.split(":")
    module = __import__(module_name, fromlist=[attribute])
    CALLS.update(getattr(module, attribute)(model, PROMPTS))

only = [name for name in os.environ.get("NNTERP_REMOTE_ONLY", "").split(",") if name]
for name, call in CALLS.items():
    if only and name not in only:
        continue
    try:
        local = call(None)
        requests[0] = 0
        simulated = call("local")
    except Exception as error:  # reported, not raised: the test names every failing function
        last = traceback.format_exception_only(type(error), error)[-1].strip().replace("\n", " ")
        print(f"{name} error {last[:300]}")
        continue
    print(f"{name} {'equal' if same(local, simulated) else 'differ'} {requests[0]}")
