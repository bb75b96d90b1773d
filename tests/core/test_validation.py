"""Load-time validation (one traced probe forward), its stored records, and what loading sets up."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from nnterp import StandardizedTransformer, validation_cache
from nnterp.architectures import LLAMA
from nnterp.errors import RenamingError
from nnterp.testing import tiny_model, tiny_tokenizer


def load(hf_model, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return StandardizedTransformer(hf_model, tiny_tokenizer(), **kwargs)


def count_forwards(hf_model):
    """A list that grows by one per forward of ``hf_model``'s embedding, and the hook handle."""
    calls = []
    handle = hf_model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    """The validation cache turned on, in an empty temporary cache root."""
    monkeypatch.setenv("NNTERP_VALIDATION_CACHE", "1")
    monkeypatch.setenv("NNTERP_CACHE_DIR", str(tmp_path))
    return tmp_path / "validation"


def test_validation_runs_one_forward_and_finds_the_layer_output_structure():
    hf_model = tiny_model("llama")
    calls, handle = count_forwards(hf_model)
    model = load(hf_model)
    handle.remove()
    assert len(calls) == 1
    seen = []
    hook = hf_model.model.layers[0].register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        hf_model(input_ids=torch.tensor([[5, 6, 7]]))
    hook.remove()
    assert model.output_structure.layer_returns_tuple == isinstance(seen[0], tuple)


def test_without_validation_the_structure_probe_stops_after_layer_zero():
    hf_model = tiny_model("gpt2")
    ran = []
    hook = hf_model.transformer.h[1].register_forward_hook(lambda *_: ran.append(1))
    model = load(hf_model, check_renaming=False)
    hook.remove()
    assert ran == []
    assert model.output_structure == load(tiny_model("gpt2")).output_structure


def test_a_wrong_lm_head_path_is_caught():
    wrong = dataclasses.replace(LLAMA, lm_head="model.embed_tokens")
    with pytest.raises(RenamingError, match="does not give the"):
        load(tiny_model("llama"), spec=wrong)


def test_a_missing_logit_postprocessing_step_is_caught():
    hf_model = tiny_model("gemma2")
    assert hf_model.config.final_logit_softcapping
    model = load(hf_model)
    without_softcap = dataclasses.replace(model.spec, logits_postprocess=())
    with pytest.raises(RenamingError, match="logits_postprocess"):
        load(tiny_model("gemma2"), spec=without_softcap)


def test_a_passed_validation_is_stored_and_reused_without_a_forward(cache_on):
    first = load(tiny_model("llama"))
    records = list(cache_on.glob("*.json"))
    assert len(records) == 1
    assert json.loads(records[0].read_text())["validated"] is True
    hf_model = tiny_model("llama", seed=1)  # other weights, same code and config: same key
    calls, handle = count_forwards(hf_model)
    second = load(hf_model)
    handle.remove()
    assert calls == []
    assert second.output_structure == first.output_structure
    assert len(list(cache_on.glob("*.json"))) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"config_overrides": {"num_hidden_layers": 3}},
        {"enable_attention_probs": True},
        {"rename": {"model.norm": "final_norm"}},
    ],
    ids=["config", "attention_probs", "rename"],
)
def test_anything_validation_depends_on_gets_its_own_record(cache_on, change):
    load(tiny_model("llama"))
    overrides = change.pop("config_overrides", None)
    hf_model = tiny_model("llama", config_overrides=overrides)
    calls, handle = count_forwards(hf_model)
    load(hf_model, **change)
    handle.remove()
    assert len(calls) >= 1
    assert len(list(cache_on.glob("*.json"))) == 2


def test_a_structure_only_record_does_not_count_as_validated(cache_on):
    load(tiny_model("llama"), check_renaming=False)
    hf_model = tiny_model("llama")
    calls, handle = count_forwards(hf_model)
    load(hf_model)
    handle.remove()
    assert len(calls) == 1
    (record,) = cache_on.glob("*.json")
    assert json.loads(record.read_text())["validated"] is True


def test_a_corrupt_record_is_ignored_and_replaced(cache_on):
    load(tiny_model("llama"))
    (record,) = cache_on.glob("*.json")
    record.write_text("{not json")
    hf_model = tiny_model("llama")
    calls, handle = count_forwards(hf_model)
    load(hf_model)
    handle.remove()
    assert len(calls) == 1
    assert json.loads(record.read_text())["validated"] is True


def test_the_cache_switch_and_clear(cache_on, monkeypatch):
    monkeypatch.setenv("NNTERP_VALIDATION_CACHE", "0")
    load(tiny_model("llama"))
    assert not cache_on.exists() or list(cache_on.glob("*.json")) == []
    monkeypatch.setenv("NNTERP_VALIDATION_CACHE", "1")
    load(tiny_model("llama"))
    load(tiny_model("gpt2"))
    assert validation_cache.clear() == 2
    assert list(cache_on.glob("*.json")) == []


def test_a_model_class_without_readable_source_is_validated_at_every_load(cache_on, monkeypatch):
    namespace: dict = {}
    exec("class Unreadable:\n    pass", namespace)
    assert validation_cache._class_source_hash(namespace["Unreadable"]) is None
    assert validation_cache._class_source_hash(type(tiny_model("llama"))) is not None
    monkeypatch.setattr(validation_cache, "_class_source_hash", lambda _klass: None)
    for _ in range(2):
        hf_model = tiny_model("llama")
        calls, handle = count_forwards(hf_model)
        load(hf_model)
        handle.remove()
        assert len(calls) == 1
    assert not cache_on.exists() or list(cache_on.glob("*.json")) == []


def test_editing_the_model_source_file_changes_the_key(tmp_path):
    source = tmp_path / "modeling_fake.py"
    source.write_text("x = 1\n")
    before = validation_cache._file_hash(str(source))
    source.write_text("x = 22\n")
    assert validation_cache._file_hash(str(source)) not in (before, None)


def test_a_failed_validation_is_not_stored(cache_on):
    wrong = dataclasses.replace(LLAMA, lm_head="model.embed_tokens")
    for _ in range(2):
        with pytest.raises(RenamingError):
            load(tiny_model("llama"), spec=wrong)
    assert not cache_on.exists() or list(cache_on.glob("*.json")) == []


@pytest.fixture
def saved_llama(tmp_path):
    """A tiny Llama saved with a right-padding tokenizer that has no pad token."""
    directory = tmp_path / "llama"
    tiny_model("llama").save_pretrained(directory)
    tokenizer = tiny_tokenizer(padding_side="right")
    tokenizer.pad_token = None
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(directory)
    return directory


def test_a_loaded_tokenizer_pads_left_with_a_pad_token(saved_llama):
    model = StandardizedTransformer(str(saved_llama))
    assert model.tokenizer.padding_side == "left"
    assert model.tokenizer.pad_token == model.tokenizer.eos_token
    batch = model.tokenizer(["a b c d", "a"], padding=True, return_tensors="pt")
    assert batch["attention_mask"][1].tolist()[0] == 0 and batch["attention_mask"][1].tolist()[-1] == 1


def test_a_given_tokenizer_is_used_and_none_is_loaded(saved_llama, monkeypatch):
    import transformers

    def refuse(*_args, **_kwargs):
        raise AssertionError("a tokenizer was loaded although one was given")

    mine = tiny_tokenizer(padding_side="right")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    model = StandardizedTransformer(str(saved_llama), tokenizer=mine)
    assert mine.padding_side == "right"
    assert model.tokenizer.padding_side == "left"
    assert model.tokenizer("a b")["input_ids"] == mine("a b")["input_ids"]


def test_device_map_auto_only_with_an_accelerator(saved_llama, monkeypatch):
    import transformers

    from nnterp import loading

    assert loading._accelerator_available() == torch.cuda.is_available()
    passed = []
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def recording(*args, **kwargs):
        passed.append(kwargs.get("device_map"))
        return real_from_pretrained(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", recording)
    monkeypatch.setattr(loading, "_accelerator_available", lambda: False)
    StandardizedTransformer(str(saved_llama))
    monkeypatch.setattr(loading, "_accelerator_available", lambda: True)
    with_accelerator = StandardizedTransformer(str(saved_llama))
    StandardizedTransformer(str(saved_llama), device_map="cpu")
    assert passed == [None, "auto", "cpu"]
    assert next(with_accelerator._module.parameters()).device.type == "cpu"


CROSS_PROCESS_SCRIPT = """
import warnings; warnings.simplefilter("ignore")
from nnterp import StandardizedTransformer, validation_cache
from nnterp.testing import tiny_model, tiny_tokenizer
hf_model = tiny_model("llama")
calls = []
hf_model.get_input_embeddings().register_forward_hook(lambda *_: calls.append(1))
model = StandardizedTransformer(hf_model, tiny_tokenizer())
print(validation_cache.key_for(model, None), len(calls))
"""


def test_a_record_is_reused_by_a_later_process(cache_on, tmp_path):
    import os
    import subprocess
    import sys

    environment = {**os.environ, "NNTERP_VALIDATION_CACHE": "1", "NNTERP_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run([sys.executable, "-c", CROSS_PROCESS_SCRIPT], capture_output=True, text=True, env=environment)
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[-1].stderr[-2000:]
    (first_key, first_forwards), (second_key, second_forwards) = (run.stdout.split() for run in runs)
    assert first_key == second_key
    assert (first_forwards, second_forwards) == ("1", "0")


def test_identical_tensors_may_share_nan_positions_only():
    # A model computes NaN at padding queries with no key to attend to, in both runs.
    from nnterp.validation import identical

    nan = float("nan")
    assert identical(torch.tensor([nan, 1.0, 2.0]), torch.tensor([nan, 1.0, 2.0]))
    assert not identical(torch.tensor([nan, 1.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]))
    assert not identical(torch.tensor([nan, 1.0, 2.0]), torch.tensor([nan, 1.0, 2.5]))
    assert not identical(torch.tensor([nan, 1.0]), torch.tensor([nan, 1.0, 2.0]))
    assert not identical(torch.tensor([1, 2]), torch.tensor([1, 3]))
    big = torch.finfo(torch.float32).max
    assert not identical(torch.tensor([nan, float("inf")]), torch.tensor([nan, big]))
