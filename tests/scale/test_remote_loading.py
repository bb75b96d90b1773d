"""``StandardizedTransformer(name, remote=True)``: the weights stay off the client (the module tree
is built on the meta device from the config, no weight file is read), load-time validation
checks shapes only (and can fail), and traces default to a remote request, serialized here
instead of being sent (no network in tests)."""

from __future__ import annotations

import dataclasses

import nnterp
import pytest
import torch
from nnterp.errors import RenamingError
from nnterp.testing import tiny_model, tiny_tokenizer
from transformers import AutoModelForCausalLM


@pytest.fixture()
def saved(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    return str(tmp_path)


def test_remote_load_keeps_the_weights_off_the_client(saved, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the weights were loaded")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    model = nnterp.StandardizedTransformer(saved, remote=True)
    assert {p.device.type for p in model._module.parameters()} == {"meta"}
    assert model.remote is True
    assert model.num_layers == 2 and model.hidden_size == 64
    assert model.output_structure.layer_returns_tuple is False


def test_shape_checks_refuse_a_wrong_description(saved):
    spec = nnterp.StandardizedTransformer(saved, remote=True).spec
    wrong = dataclasses.replace(spec, hidden_size_keys=("vocab_size",))  # claims hidden 512
    with pytest.raises(RenamingError, match=r"layer 0 returned \(2, 5, 64\), expected \(2, 5, 512\)"):
        nnterp.StandardizedTransformer(saved, remote=True, spec=wrong)


REQUEST_SCRIPT = """
import sys, warnings
warnings.simplefilter("ignore")
import torch
import nnterp
from nnsight.intervention.backends.remote import RemoteBackend
from nnsight.modeling import huggingface
from nnsight.schema.request import RequestModel

requests = []
# Instead of sending it to NDIF: serialize the request as the remote backend would.
RemoteBackend.__call__ = lambda self, tracer=None: requests.append(RequestModel.serialize(tracer, compress=False))
# NNsight names the remote model by its canonical hub id (looked up once, then cached).
huggingface._ID_CACHE[sys.argv[1]] = "nnterp-tests/tiny-llama"
model = nnterp.StandardizedTransformer(sys.argv[1], remote=True)
vector = torch.ones(model.hidden_size)
with model.trace(["Hello world", "The cat sat"]):
    model.steer(layers=0, steering_vector=vector, token_positions=-1)
    hidden = model.layers_output[1].save()
print(len(requests), len(requests[0]))
"""


def test_a_trace_of_a_remote_model_becomes_a_request(saved):
    # A script, as researchers run remote traces (pytest's own frames are not picklable).
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", REQUEST_SCRIPT, saved], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    count, size = map(int, result.stdout.split())
    assert count == 1 and size > 1000
