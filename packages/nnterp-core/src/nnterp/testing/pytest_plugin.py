"""nnterp's pytest plugin: the conformance suite, reusable by third-party architecture plugins.

Registered through the ``pytest11`` entry point, so installing nnterp-core makes it available.
A plugin package tests its own architecture with a few lines::

    from nnterp.testing.pytest_plugin import ConformanceSuite

    class TestToyModel(ConformanceSuite):
        @pytest.fixture(scope="class")
        @classmethod
        def conformance_model(cls):
            return ToyForCausalLM(ToyConfig()), tiny_tokenizer()

Each conformance check becomes one test (``test_hooks_equality``, ``test_steering``, ...).
A check that the architecture cannot support (no attention) reports as passed with nothing to
check only if the component is genuinely absent from the spec; otherwise it fails.

pytest loads this module in every project where nnterp-core is installed, so it imports
nothing heavy: torch, transformers and nnsight load when a fixture or check first runs.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from nnterp.errors import UnavailableComponentError


def _conformance() -> ModuleType:
    from nnterp.testing import conformance

    return conformance


@pytest.fixture(scope="session")
def nnterp_tiny_tokenizer() -> Any:
    """The in-process tokenizer of `nnterp.testing.tiny_tokenizer`."""
    from nnterp.testing.tiny import tiny_tokenizer

    return tiny_tokenizer()


class ConformanceSuite:
    """Subclass it and provide a class-scoped ``conformance_model`` fixture -> (hf_model, tokenizer).

    Set ``expect_attention_probabilities = False`` for an architecture without explicit
    attention probabilities.
    """

    expect_attention_probabilities = True

    @pytest.fixture(scope="class")
    @classmethod
    def standardized(cls, conformance_model: Any) -> Any:
        hf_model, tokenizer = conformance_model
        model, note = _conformance().load_for_conformance(hf_model, tokenizer)
        if cls.expect_attention_probabilities and note:
            pytest.fail(f"attention probabilities could not be enabled: {note}")
        return model

    def test_renaming(self, standardized: Any) -> None:
        assert standardized.num_layers > 0
        assert standardized.paths["layers"] is not None

    def test_accessor_shapes(self, standardized: Any) -> None:
        _conformance().check_accessor_shapes(standardized)

    def test_hooks_equality(self, standardized: Any) -> None:
        _conformance().check_hooks_equality(standardized)

    def test_attention_probabilities(self, standardized: Any) -> None:
        if not self.expect_attention_probabilities:
            with pytest.raises(UnavailableComponentError):
                _conformance().check_attention_probabilities(standardized)
            return
        _conformance().check_attention_probabilities(standardized)

    def test_steering(self, standardized: Any) -> None:
        _conformance().check_steering(standardized)

    def test_layer_skipping(self, standardized: Any) -> None:
        _conformance().check_layer_skipping(standardized)

    def test_batching(self, standardized: Any) -> None:
        _conformance().check_batching(standardized)
