"""Loading a model whose class is untested, failing, or tested on other versions warns once."""

from __future__ import annotations

import warnings

import pytest

from nnterp import StandardizedTransformer, status
from nnterp.testing import tiny_model, tiny_tokenizer


@pytest.fixture
def status_file(tmp_path, monkeypatch):
    """Point the registry at one status file written by the test."""
    path = tmp_path / "status.json"
    monkeypatch.setattr(status, "_status_files", lambda: [str(path)])
    status._known_classes.cache_clear()
    status._warned.clear()
    yield path
    status._known_classes.cache_clear()
    status._warned.clear()


def _messages(model_type: str) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        StandardizedTransformer(tiny_model(model_type), tiny_tokenizer())
        StandardizedTransformer(tiny_model(model_type), tiny_tokenizer())
    return [str(w.message) for w in caught if issubclass(w.category, status.UntestedArchitectureWarning)]


def test_tested_class_on_the_same_versions_does_not_warn(status_file):
    status.write_status(status_file, {"versions": status.installed_versions(),
                                      "models": {"llama": {"class_name": "LlamaForCausalLM", "status": "pass",
                                                           "checks": {}, "error": None}}})
    assert _messages("llama") == []


def test_untested_class_warns_once_with_the_command_to_run(status_file):
    status.write_status(status_file, {"versions": status.installed_versions(), "models": {}})
    messages = _messages("gpt2")
    assert len(messages) == 1
    assert "GPT2LMHeadModel is not in nnterp's status registry" in messages[0]
    assert "nnterp run_tests --class-names GPT2LMHeadModel" in messages[0]


def test_failing_class_warns_with_what_failed(status_file):
    status.write_status(status_file, {"versions": status.installed_versions(),
                                      "models": {"qwen2": {"class_name": "Qwen2ForCausalLM", "status": "fail",
                                                           "checks": {"steering": "fail"}, "error": "boom"}}})
    messages = _messages("qwen2")
    assert len(messages) == 1 and "steering" in messages[0] and "boom" in messages[0]


def test_other_versions_warn(status_file):
    versions = {**status.installed_versions(), "transformers": "0.0.1"}
    status.write_status(status_file, {"versions": versions,
                                      "models": {"mistral": {"class_name": "MistralForCausalLM", "status": "pass",
                                                             "checks": {}, "error": None}}})
    messages = _messages("mistral")
    assert len(messages) == 1 and "0.0.1" in messages[0]
