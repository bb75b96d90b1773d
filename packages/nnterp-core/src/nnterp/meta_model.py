"""Models whose weights stay off the client: loaded on PyTorch's ``meta`` device for remote
execution (``StandardizedTransformer(repo_id, remote=True)``), where NDIF holds the real weights.

Only the config and the tokenizer are read; the module tree is built on ``meta`` (no memory, no
weight files), and load-time validation checks shapes only: one plain forward on meta inputs,
with hooks, under fake tensors (shapes only, as NNsight's ``scan``), must give every layer's
output as (batch, seq, hidden) and logits as (batch, seq, vocab).

Example:
    >>> model = StandardizedTransformer("meta-llama/Llama-3.1-70B", remote=True)
    >>> next(model._module.parameters()).device
    device(type='meta')
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import torch

from nnterp.errors import RenamingError

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer
    from nnterp.validation import OutputStructure


def load_meta_model(
    name_or_path: str, *, trust_remote_code: bool, tokenizer: Any = None, **model_kwargs: Any
) -> tuple[Any, Any]:
    """The model of ``name_or_path`` built from its config on the meta device, and its tokenizer
    (loaded ready for batched tracing unless given).

    Example:
        >>> hf_model, tokenizer = load_meta_model("gpt2", trust_remote_code=False)
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from nnterp.loading import _SHARED_TOKENIZER_KWARGS, _load_errors, prepare_tokenizer

    shared = {key: model_kwargs[key] for key in _SHARED_TOKENIZER_KWARGS if key in model_kwargs}
    with _load_errors(name_or_path):
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **shared)
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, padding_side="left", **shared
            )
            tokenizer = prepare_tokenizer(tokenizer, copy_if_changed=False)
    options = {key: model_kwargs[key] for key in ("attn_implementation", "dtype", "torch_dtype") if key in model_kwargs}
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code, **options)
    model.eval()
    return model, tokenizer


def on_meta(module: torch.nn.Module) -> bool:
    """Whether every parameter of ``module`` is on the meta device (and it has some)."""
    devices = {parameter.device.type for parameter in module.parameters()}
    return devices == {"meta"}


def validate_shapes(model: StandardizedTransformer) -> OutputStructure:
    """Shape-only validation of a meta-device model: one plain hooked forward of a fake batch.

    Returns:
        How the layers shape their output (`nnterp.validation.OutputStructure`).

    Raises:
        RenamingError: a layer output or the logits have the wrong shape.

    Warns:
        UserWarning: the forward cannot run on the meta device (it reads a tensor's value, as
            mixture-of-experts kernels do); the layers are then assumed to return a tensor.
    """
    from nnterp.validation import OutputStructure, output_structure_of

    hf_model = model._module
    layers = hf_model.get_submodule(model.paths["layers"])
    seen: dict[int, Any] = {}
    handles = [
        layer.register_forward_hook(lambda _m, _a, output, index=index: seen.__setitem__(index, output))
        for index, layer in enumerate(layers)
    ]
    # Fake tensors (what NNsight's scan runs under) carry shapes and answer the value checks
    # transformers' mask code makes, which plain meta tensors refuse.
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    batch, seq = 2, 5
    fake_log = logging.getLogger("torch._subclasses.fake_tensor")
    level, fake_log.level = fake_log.level, logging.CRITICAL  # a failed kernel is reported below
    try:
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True, shape_env=ShapeEnv(assume_static_by_default=True)):
            ids = torch.zeros(batch, seq, dtype=torch.long, device="meta")
            logits = hf_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as error:
        warnings.warn(
            f"{type(hf_model).__name__} cannot run a forward on the meta device ({error}); its "
            "standard tree was resolved but not shape-checked, and its layers are assumed to return "
            "a tensor. Run a remote trace of model.layers_output[0] to confirm.",
            UserWarning,
            stacklevel=3,
        )
        return OutputStructure(layer_returns_tuple=False)
    finally:
        fake_log.setLevel(level)
        for handle in handles:
            handle.remove()
    hidden = model.hidden_size
    for index in range(len(layers)):
        output = seen.get(index)
        value = output[0] if isinstance(output, (tuple, list)) else output
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (batch, seq, hidden):
            shape = None if not isinstance(value, torch.Tensor) else tuple(value.shape)
            raise RenamingError(
                f"shape check of {type(hf_model).__name__} on the meta device: layer {index} returned "
                f"{shape}, expected {(batch, seq, hidden)}; fix the spec's layers path."
            )
    if tuple(logits.shape) != (batch, seq, model.vocab_size):
        raise RenamingError(
            f"shape check of {type(hf_model).__name__} on the meta device: logits have shape "
            f"{tuple(logits.shape)}, expected {(batch, seq, model.vocab_size)}."
        )
    return output_structure_of(seen[0])
