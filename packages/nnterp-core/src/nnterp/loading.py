"""Loading a HuggingFace causal LM and its tokenizer, unchanged, for nnterp to wrap."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

from nnterp.errors import InvalidInputError

#: Keyword arguments of ``from_pretrained`` that the tokenizer needs too.
_SHARED_TOKENIZER_KWARGS = ("revision", "gguf_file", "cache_dir", "token", "local_files_only", "subfolder")


def load_model_and_tokenizer(
    name_or_path: str,
    *,
    attn_implementation: str | None,
    trust_remote_code: bool,
    tokenizer: Any = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a hub id or local directory.

    ``device_map="auto"`` is the default when accelerate is installed and an accelerator (GPU)
    is present; on a CPU-only machine no ``device_map`` is passed, so accelerate never offloads
    weights to disk because free RAM looked short at load time. ``trust_remote_code`` is
    passed through exactly as given (nnterp never turns it on). Unless ``tokenizer`` is given
    (it is then returned untouched), the tokenizer is loaded ready for batched tracing (left
    padding, a pad token), see `prepare_tokenizer`.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Example:
        >>> model, tokenizer = load_model_and_tokenizer("gpt2", attn_implementation=None, trust_remote_code=False)
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "device_map" not in model_kwargs and _accelerator_available() and importlib.util.find_spec("accelerate"):
        model_kwargs["device_map"] = "auto"
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    shared = {key: model_kwargs[key] for key in _SHARED_TOKENIZER_KWARGS if key in model_kwargs}
    if tokenizer is None:
        tokenizer_options = {"padding_side": "left", **(tokenizer_kwargs or {})}
        tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **shared, **tokenizer_options
        )
        tokenizer = prepare_tokenizer(tokenizer, copy_if_changed=False)
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, **model_kwargs
    )
    model.eval()
    return model, tokenizer


def _accelerator_available() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def prepare_tokenizer(tokenizer: Any, *, copy_if_changed: bool = True) -> Any:
    """``tokenizer`` set up for batched causal-LM tracing.

    Left padding (so the last position of every row is a real token; nnsight then derives
    position ids from the attention mask), and a pad token when there is none (the EOS, BOS or
    UNK token, in that order). A tokenizer that already pads left with a pad token is
    returned as it is.

    Args:
        tokenizer: a transformers tokenizer.
        copy_if_changed: change a copy, so that the caller's tokenizer is never modified
            (False only for a tokenizer nnterp loaded itself).

    Example:
        >>> prepared = prepare_tokenizer(AutoTokenizer.from_pretrained("gpt2"))
        >>> prepared.padding_side, prepared.pad_token
        ('left', '<|endoftext|>')

    Raises:
        InvalidInputError: ``tokenizer`` is None or has no token that can serve as padding.
    """
    if tokenizer is None:
        raise InvalidInputError(
            "a model object was passed without a tokenizer: pass tokenizer=AutoTokenizer."
            "from_pretrained(...) (or the tokenizer the model was trained with)."
        )
    needs_padding_side = getattr(tokenizer, "padding_side", "left") != "left"
    if not needs_padding_side and tokenizer.pad_token is not None:
        return tokenizer
    prepared = copy.deepcopy(tokenizer) if copy_if_changed else tokenizer
    if needs_padding_side:
        prepared.padding_side = "left"
    if prepared.pad_token is None:
        for candidate in ("eos_token", "bos_token", "unk_token"):
            token = getattr(prepared, candidate, None)
            if token is not None:
                prepared.pad_token = token
                break
        else:
            raise InvalidInputError(
                "the tokenizer has no pad, eos, bos or unk token to pad batches with: set "
                "tokenizer.pad_token (e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}))."
            )
    return prepared
