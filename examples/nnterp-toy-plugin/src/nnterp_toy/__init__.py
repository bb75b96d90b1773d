"""An example nnterp plugin: a custom toy causal LM with unusual module names."""

from nnterp_toy.modeling import ToyConfig, ToyForCausalLM

__all__ = ["ToyConfig", "ToyForCausalLM"]
