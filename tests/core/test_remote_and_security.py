"""Remote execution serialization, and the security basics."""

from __future__ import annotations

import socket
import warnings

import pytest
import torch

from nnterp import StandardizedTransformer
from nnterp.testing import tiny_model, tiny_tokenizer


REMOTE_SCRIPT = """
import warnings; warnings.simplefilter("ignore")
import torch
from cloudpickle.cloudpickle import _PICKLE_BY_VALUE_MODULES
from nnterp import StandardizedTransformer
from nnterp.testing import tiny_model, tiny_tokenizer

model = StandardizedTransformer(tiny_model("llama"), tiny_tokenizer())
vector = torch.ones(model.hidden_size)
prompts = ["Hello world", "The cat sat on the mat"]
with torch.no_grad(), model.trace(prompts):
    model.steer(layers=0, steering_vector=vector)
    early = model.layers_output[0].sum().save()
    model.steer(layers=1, steering_vector=vector, token_positions=[0, -1])
    local = model.logits.save()
# remote="local" serializes the block exactly as for NDIF, deserializes it, and runs it.
with torch.no_grad(), model.trace(prompts, remote="local"):
    model.steer(layers=0, steering_vector=vector)
    early = model.layers_output[0].sum().save()
    model.steer(layers=1, steering_vector=vector, token_positions=[0, -1])
    simulated = model.logits.save()
print("by-value", "nnterp" in _PICKLE_BY_VALUE_MODULES)
print("equal", torch.equal(local, simulated))
"""


def test_remote_trace_serializes_nnterp_code_by_value_and_matches_local():
    # A script, as researchers run remote traces (pytest's own frames are not picklable).
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["by-value", "True", "equal", "True"]


NON_MODULE_LAYERS_SCRIPT = """
import sys, warnings; warnings.simplefilter("ignore")
import torch
from nnterp import StandardizedTransformer
from nnterp.testing import tiny_model, tiny_tokenizer

kind = sys.argv[1]
model = StandardizedTransformer(tiny_model(kind), tiny_tokenizer())
prompts = ["Hello world", "The cat sat on the mat"]
with torch.no_grad(), model.trace(prompts):
    early = model.layers_output[0].sum().save()
    model.layers_output[1] = model.layers_output[1] * 2
    local = model.logits.save()
with torch.no_grad(), model.trace(prompts, remote="local"):
    early = model.layers_output[0].sum().save()
    model.layers_output[1] = model.layers_output[1] * 2
    simulated = model.logits.save()
print("equal", torch.equal(local, simulated))
"""


@pytest.mark.parametrize("model_type", ["xlm", "longcat_flash", "dory"])
def test_remote_trace_of_layers_nnterp_builds_matches_local(model_type):
    # Virtual blocks (XLM, LongCat-Flash) and block calls of an unrolled stack (Dory) are
    # nnterp objects inside the trace body: they must serialize as NNsight's envoys do.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", NON_MODULE_LAYERS_SCRIPT, model_type], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["equal", "True"]


def test_trust_remote_code_is_never_turned_on(monkeypatch, tmp_path):
    seen = {}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf_model, tokenizer = tiny_model("gpt2"), tiny_tokenizer()
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    real_model, real_tokenizer = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def spy(real, key):
        def load(*args, **kwargs):
            seen[key] = kwargs.get("trust_remote_code")
            return real(*args, **kwargs)

        return load

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy(real_model, "model"))
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy(real_tokenizer, "tokenizer"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        StandardizedTransformer(str(tmp_path))
    assert seen == {"model": False, "tokenizer": False}


def test_local_model_loads_without_any_network_access(monkeypatch, tmp_path):
    hf_model, tokenizer = tiny_model("llama"), tiny_tokenizer()
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = StandardizedTransformer(str(tmp_path), device_map="cpu")
    with torch.no_grad(), model.trace("Hello"):
        logits = model.logits.save()
    with torch.no_grad():
        expected = hf_model(**tokenizer("Hello", return_tensors="pt")).logits
    assert attempts == []
    torch.testing.assert_close(logits, expected)


def test_no_pickle_loading_in_nnterp_sources():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "packages"
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        if "torch.load(" in text and "weights_only=True" not in text:
            offenders.append(str(path))
        if "pickle.load" in text:
            offenders.append(str(path))
    assert offenders == []


@pytest.mark.parametrize("kwargs", [{"dtype": torch.float16}, {"device_map": "cpu"}])
def test_loading_options_with_a_model_object_are_refused(kwargs):
    from nnterp.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="given by name"):
        StandardizedTransformer(tiny_model("llama"), tiny_tokenizer(), **kwargs)
