"""The conformance kit, the sweep command and the status file."""

from __future__ import annotations

import json

import torch

from nnterp.cli import main
from nnterp.status import read_status, write_status
from nnterp.testing import tiny_model, tiny_tokenizer
from nnterp.testing.conformance import check_hooks_equality, load_for_conformance, run_conformance


def test_conformance_passes_on_core_architectures():
    for model_type in ("llama", "gpt2"):
        report = run_conformance(tiny_model(model_type), tiny_tokenizer())
        assert report.passed, report.errors
        assert report.checks == {
            "renaming": "pass", "accessor_shapes": "pass", "hooks_equality": "pass", "residual_identity": "pass",
            "attention_probabilities": "pass", "steering": "pass", "layer_skipping": "pass", "batching": "pass",
            "mlp_hidden": "pass", "layers_mid": "pass", "norm_scales": "pass", "attention_scores": "pass",
            "heads_result": "pass",
        }


def test_hooks_equality_check_catches_an_accessor_reading_the_wrong_value():
    import pytest

    model, _ = load_for_conformance(tiny_model("llama"), tiny_tokenizer())
    check_hooks_equality(model)
    real = model.layers_output

    class Skewed:  # a broken accessor, off by a little
        def __getitem__(self, index):
            return real[index] + 1e-3

    model.layers_output = Skewed()
    with pytest.raises(AssertionError, match="layer0 output differs"):
        check_hooks_equality(model)


def test_residual_identity_check_catches_a_contribution_read_at_the_wrong_place():
    import pytest
    from nnterp.testing.conformance import check_residual_identity

    # Gemma-2's raw attention output is not what its block adds (a post-norm follows it): a spec
    # that reads contributions at the modules must fail the identity against the HF layers.
    from nnterp.architectures import GEMMA2
    from nnterp.spec import MODULE_OUTPUT

    wrong = GEMMA2.with_classes(*GEMMA2.model_classes, attention_contribution=MODULE_OUTPUT)
    model, _ = load_for_conformance(tiny_model("gemma2"), tiny_tokenizer(), spec=wrong, check_renaming=False)
    with pytest.raises(AssertionError, match="layer 0"):
        check_residual_identity(model)
    right, _ = load_for_conformance(tiny_model("gemma2"), tiny_tokenizer())
    check_residual_identity(right)


def test_status_file_is_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "status.json"
    write_status(path, {"versions": {}, "models": {"a": {"status": "pass"}}})

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(json, "dump", crash)
    try:
        write_status(path, {"versions": {}, "models": {"b": {"status": "fail"}}})
    except RuntimeError:
        pass
    assert read_status(path)["models"] == {"a": {"status": "pass"}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_run_tests_command_writes_status_and_totals(tmp_path, capsys):
    output = tmp_path / "status.json"
    assert main(["run_tests", "--model-types", "llama", "--class-names", "GPT2LMHeadModel",
                 "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "standardized 2 / runnable 2 / buildable 2 / total 2" in printed
    document = read_status(output)
    assert set(document["models"]) == {"llama", "gpt2"}
    assert document["models"]["gpt2"]["class_name"] == "GPT2LMHeadModel"
    assert document["totals"]["attention_probabilities"] == 2
    assert set(document["versions"]) == {"transformers", "nnsight", "torch"}
    assert torch.__version__.startswith(document["versions"]["torch"].split("+")[0])


def test_sites_command_lists_the_table_and_a_models_support(capsys):
    from nnterp.sites import SITES

    assert main(["sites"]) == 0
    listed = capsys.readouterr().out
    assert all(site.name in listed for site in SITES)
    assert main(["sites", "--model-type", "bert"]) == 0
    report = capsys.readouterr().out
    assert "attentions_output        unavailable: post-norm" in report
    assert "layers_output            available" in report
