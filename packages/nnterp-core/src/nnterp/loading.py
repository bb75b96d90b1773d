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
    tokenizer_kwargs: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> tuple[Any, Any]:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a hub id or local directory.

    ``device_map="auto"`` is the default when accelerate is installed. ``trust_remote_code`` is
    passed through exactly as given (nnterp never turns it on).

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if "device_map" not in model_kwargs and importlib.util.find_spec("accelerate") is not None:
        model_kwargs["device_map"] = "auto"
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    shared = {key: model_kwargs[key] for key in _SHARED_TOKENIZER_KWARGS if key in model_kwargs}
    tokenizer = AutoTokenizer.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, **shared, **(tokenizer_kwargs or {})
    )
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, **model_kwargs
    )
    model.eval()
    return model, tokenizer


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` set up for batched causal-LM tracing.

    Left padding (so the last position of every row is a real token; nnsight then derives
    position ids from the attention mask), and a pad token when there is none (the EOS, BOS or
    UNK token, in that order). The caller's tokenizer object is never modified: a copy is
    made when something has to change.

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
    prepared = copy.deepcopy(tokenizer)
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
