"""Load-time checks that the standard tree is right, at the cost of two tiny forwards.

1. A plain PyTorch forward with hooks on the HF modules records what the standard parts
   return (tensor or tuple) and their values.
2. An NNsight trace reads every accessor on the first and last layer; each must have the
   expected shape and equal the hooked value exactly. With attention probabilities enabled,
   they must sum to 1 over keys and an edit of them must change the logits.

Any failure raises `RenamingError` naming the architecture, the check and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from nnterp.accessors import first_tensor
from nnterp.errors import RenamingError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

_PROBE_TEXT = "The quick brown fox jumps over the lazy dog"
_PROBE_LENGTH = 4


@dataclass(frozen=True)
class OutputStructure:
    """Whether the HF layer module returns a tuple (hidden state first) or a bare tensor."""

    layer_returns_tuple: bool
    layer_tuple_length: int = 1

    def wrap_layer_output(self, hidden: Any) -> Any:
        """``hidden`` in the form the layer returns, for ``skip`` (other tuple slots ``None``)."""
        if not self.layer_returns_tuple:
            return hidden
        return (hidden, *([None] * (self.layer_tuple_length - 1)))


def probe_inputs(model: StandardizedTransformer, batch: int) -> dict[str, torch.Tensor]:
    """A short batch of real token ids for the validation forwards."""
    ids = model.tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"][:_PROBE_LENGTH]
    vocab = model.vocab_size
    ids = [i for i in ids if 0 <= i < vocab]
    if len(ids) < 2:
        ids = list(range(min(_PROBE_LENGTH, vocab)))
    device = _device(model)
    input_ids = torch.tensor([ids] * batch, device=device)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _device(model: StandardizedTransformer) -> torch.device:
    try:
        return model._module.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return next(model._module.parameters()).device


def _hooked_forward(model: StandardizedTransformer, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
    hf = model._module
    layers = hf.get_submodule(model.paths["layers"])
    last = len(layers) - 1
    watched: dict[str, torch.nn.Module] = {}
    for index in sorted({0, last}):
        layer = layers[index]
        watched[f"layer{index}"] = layer
        if model.paths["self_attn"]:
            watched[f"attn{index}"] = layer.get_submodule(model.paths["self_attn"])
        if model.paths["mlp"]:
            watched[f"mlp{index}"] = layer.get_submodule(model.paths["mlp"])
    if model.paths["embed_tokens"]:
        watched["embed"] = hf.get_submodule(model.paths["embed_tokens"])
    seen: dict[str, Any] = {}
    handles = []

    def recorder(name: str) -> Callable[[torch.nn.Module, tuple[Any, ...], dict[str, Any], Any], None]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            if name in seen:  # a module called twice (shared weights): keep the first call
                return
            first_input = args[0] if args else next(iter(kwargs.values()), None)
            seen[name] = (first_input, output)

        return hook

    for name, module in watched.items():
        handles.append(module.register_forward_hook(recorder(name), with_kwargs=True))
    try:
        with torch.no_grad():
            seen["logits"] = hf(**inputs).logits
    finally:
        for handle in handles:
            handle.remove()
    return seen


@dataclass(frozen=True)
class Probe:
    """One plain forward of the probe inputs, with what the hooked HF modules saw."""

    inputs: dict[str, torch.Tensor]
    seen: dict[str, Any]


def hooked_probe(model: StandardizedTransformer) -> Probe:
    """Run the plain HF model once on the probe inputs, hooking the standard parts."""
    inputs = probe_inputs(model, 1)
    return Probe(inputs, _hooked_forward(model, inputs))


def detect_output_structure(probe: Probe) -> OutputStructure:
    """Whether layers return tuples, from a `hooked_probe`."""
    output = probe.seen["layer0"][1]
    if isinstance(output, (tuple, list)):
        return OutputStructure(layer_returns_tuple=True, layer_tuple_length=len(output))
    return OutputStructure(layer_returns_tuple=False)


def _fail(model: StandardizedTransformer, check: str) -> RenamingError:
    return RenamingError(
        f"nnterp validation failed for {type(model._module).__name__} (spec {model.spec.name!r}, "
        f"paths {model.paths}): {check}. The spec probably points at the wrong module: fix it "
        "with rename={'<native path>': '<standard name>'} or a corrected ArchitectureSpec "
        "plugin; check_renaming=False skips this check."
    )


def validate(model: StandardizedTransformer, probe: Probe) -> None:
    """Check the standard tree and accessors of ``model`` against a `hooked_probe` of it.

    Raises:
        RenamingError: a part is missing, an accessor has the wrong shape or differs from the
            plain hook, or attention probabilities are not distributions / edits do nothing.
    """
    import nnsight  # lazily: importing this module must not load nnsight

    with_probs = model.attention_probabilities_enabled
    inputs, expected = probe.inputs, probe.seen
    batch, seq = inputs["input_ids"].shape
    last = model.num_layers - 1
    got: dict[str, Any] = {}
    try:
        with torch.no_grad(), model.trace(dict(inputs)):
            if model.paths["embed_tokens"]:
                got["embed"] = (None, nnsight.save(model.token_embeddings))
            for index in sorted({0, last}):
                layer_in = nnsight.save(model.layers_input[index])
                if model.paths["self_attn"]:
                    attn_in = nnsight.save(model.attentions_input[index])
                    if with_probs and index == 0:
                        got["probs"] = (None, nnsight.save(model.attention_probabilities[0].clone()))
                    got[f"attn{index}"] = (attn_in, nnsight.save(model.attentions_output[index]))
                if model.paths["mlp"]:
                    got[f"mlp{index}"] = (nnsight.save(model.mlps_input[index]), nnsight.save(model.mlps_output[index]))
                got[f"layer{index}"] = (layer_in, nnsight.save(model.layers_output[index]))
            got["logits"] = nnsight.save(model.logits)
        if with_probs:
            # Edited in a forward of its own: an edit in one row can change another row's
            # numerics (mixture-of-experts layers route the whole batch's tokens together).
            with torch.no_grad(), model.trace(dict(inputs)):
                edited = model.attention_probabilities[0].clone()
                edited[:, :, 1:, 0] = 0
                edited = edited / edited.sum(dim=-1, keepdim=True)
                model.attention_probabilities[0] = edited
                edited_logits = nnsight.save(model.logits)
    except RenamingError:
        raise
    except Exception as error:
        raise _fail(model, f"reading the standard accessors raised {error!r}") from error

    hidden = model.hidden_size
    for name, pair in got.items():
        if name in ("logits", "probs"):
            continue
        value_in, value_out = pair
        expected_in, expected_out = expected[name]
        expected_out = first_tensor(expected_out)
        if name.startswith(("layer", "embed")) and tuple(value_out.shape) != (batch, seq, hidden):
            raise _fail(model, f"{name} output has shape {tuple(value_out.shape)}, expected {(batch, seq, hidden)}")
        if not torch.equal(value_out, expected_out):
            raise _fail(model, f"{name} output differs from a plain forward hook on the HF module")
        if value_in is not None and isinstance(expected_in, torch.Tensor):
            if not torch.equal(value_in, expected_in):
                raise _fail(model, f"{name} input differs from a plain forward hook on the HF module")
    if not torch.equal(got["logits"], expected["logits"]):
        raise _fail(model, "logits differ from the plain HF model's")
    if with_probs:
        probs = got["probs"][1]
        heads = model.num_heads
        if probs.dim() != 4 or tuple(probs.shape[::2]) != (batch, seq) or probs.shape[-1] < seq:
            raise _fail(model, f"attention probabilities have shape {tuple(probs.shape)}, expected (batch, heads, {seq}, {seq})")
        if heads is not None and probs.shape[1] != heads:
            raise _fail(model, f"attention probabilities have {probs.shape[1]} heads, the config says {heads}")
        sums = probs.float().sum(dim=-1)
        if model.spec.attention_sinks:
            if not bool(((sums > 0) & (sums <= 1 + 1e-3)).all()):
                raise _fail(model, "attention probabilities (with sinks) do not sum to at most 1 over keys")
        elif not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
            raise _fail(model, "attention probabilities do not sum to 1 over keys")
        if torch.equal(edited_logits, got["logits"]):
            raise _fail(model, "editing the attention probabilities did not change the logits")
