"""nnterp's conformance suite on the toy architecture, through nnterp's pytest plugin."""

import pytest
from nnterp.testing import tiny_tokenizer
from nnterp.testing.pytest_plugin import ConformanceSuite

from nnterp_toy import ToyConfig, ToyForCausalLM


class TestToyConformance(ConformanceSuite):
    @pytest.fixture(scope="class")
    @classmethod
    def conformance_model(cls):
        return ToyForCausalLM(ToyConfig()).eval(), tiny_tokenizer()
