"""Per-step loops in ``model.generate``: ``tracer.all()`` is bounded by ``max_new_tokens`` so the
statements after it run, and a loop that outlasts the run warns with a typed nnterp warning
instead of silently skipping what follows. Expected tokens come from the plain HF
``generate`` (greedy), expected hidden states from a forward hook on the HF layer.
"""

from __future__ import annotations

import warnings

import nnterp
import pytest
import torch
from nnterp.errors import DroppedStatementsWarning
from nnterp.testing import tiny_model, tiny_tokenizer

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def pair():
    hf_model = tiny_model("llama")
    return hf_model, nnterp.StandardizedTransformer(hf_model, tiny_tokenizer())


def _plain_generate(hf_model, tokenizer, steps):
    ids = tokenizer(PROMPT, return_tensors="pt")
    seen = []
    def record(_module, _args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)

    handle = hf_model.model.layers[0].register_forward_hook(record)
    try:
        with torch.no_grad():
            tokens = hf_model.generate(**ids, max_new_tokens=steps, do_sample=False, min_new_tokens=steps)
    finally:
        handle.remove()
    return tokens, seen


def test_all_in_generate_runs_the_statements_after_the_loop(pair):
    hf_model, model = pair
    expected_tokens, expected_hidden = _plain_generate(hf_model, model.tokenizer, 3)
    hidden = []
    result = "stale"
    with warnings.catch_warnings():
        warnings.simplefilter("error", DroppedStatementsWarning)
        with torch.no_grad(), model.generate(PROMPT, max_new_tokens=3, do_sample=False, min_new_tokens=3) as tracer:
            for _step in tracer.all():
                hidden.append(model.layers_output[0].save())
            result = tracer.result.save()
    assert torch.equal(result, expected_tokens)
    assert len(hidden) == 3
    for step in range(3):
        torch.testing.assert_close(hidden[step], expected_hidden[step])


def test_a_loop_longer_than_the_run_warns_that_later_statements_were_dropped(pair):
    _hf_model, model = pair
    result = "stale"
    with pytest.warns(DroppedStatementsWarning, match="min_new_tokens") as caught:
        with torch.no_grad(), model.generate(PROMPT, max_new_tokens=2, do_sample=False, min_new_tokens=2) as tracer:
            for _step in tracer.iter[:4]:
                model.layers_output[0].save()
            result = tracer.result.save()
    assert result == "stale"  # what the warning says: the statement after the loop never ran
    assert caught[0].filename == __file__  # reported at the user's `with`, not inside nnterp
