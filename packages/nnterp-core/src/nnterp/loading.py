"""Loading a HuggingFace causal LM and its tokenizer, unchanged, for nnterp to wrap."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from nnterp.errors import InvalidInputError, ModelLoadError

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
    check_source(name_or_path, trust_remote_code=trust_remote_code, **model_kwargs)
    with _load_errors(name_or_path):
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


#: File names that hold weights transformers can load from a local directory.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5", ".gguf")


def check_source(name_or_path: str, *, trust_remote_code: bool = False, **model_kwargs: Any) -> None:
    """Check what ``from_pretrained`` is about to load, before transformers does.

    A local directory must exist, hold a ``config.json`` (or the ``gguf_file=`` given) and
    weights, and not need remote code unless ``trust_remote_code=True``. A name that is not a
    path (``"gpt2"``, ``"org/model"``) is left to the Hub.

    Raises:
        ModelLoadError: a path that does not exist, a file given for a directory, a directory
            without weights or config, or remote code needed with ``trust_remote_code=False``.

    Example:
        >>> check_source("/models/does-not-exist")
        Traceback (most recent call last):
        ModelLoadError: model path '/models/does-not-exist' does not exist ...
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise InvalidInputError(f"model must be a hub id or a local path, got {name_or_path!r}")
    path = os.path.expanduser(name_or_path)
    if not os.path.exists(path):
        if _looks_like_path(name_or_path):
            raise ModelLoadError(
                f"model path {name_or_path!r} does not exist: check the path (it is resolved from "
                f"{os.getcwd()!r}), or pass a Hugging Face Hub id such as 'gpt2' or 'org/model'."
            )
        return
    if not os.path.isdir(path):
        hint = (
            f" For a GGUF file, pass its directory and the file name: StandardizedTransformer("
            f"{os.path.dirname(path)!r}, gguf_file={os.path.basename(path)!r})."
            if path.endswith(".gguf")
            else ""
        )
        raise ModelLoadError(
            f"model path {name_or_path!r} is a file: pass the directory holding config.json and "
            f"the weights (what save_pretrained writes).{hint}"
        )
    subfolder = model_kwargs.get("subfolder")
    folder = os.path.join(path, subfolder) if subfolder else path
    gguf_file = model_kwargs.get("gguf_file")
    if gguf_file is not None:
        if not os.path.isfile(os.path.join(folder, gguf_file)) and not os.path.isfile(gguf_file):
            raise ModelLoadError(f"gguf_file {gguf_file!r} is not in {folder!r}: check the file name.")
        return
    files = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    listing = ", ".join(files[:12]) + (" ..." if len(files) > 12 else "") if files else "nothing"
    if "config.json" not in files:
        raise ModelLoadError(
            f"model directory {folder!r} has no config.json (it holds {listing}): pass the "
            "directory save_pretrained wrote (config.json plus weights)."
        )
    if not trust_remote_code and _needs_remote_code(os.path.join(folder, "config.json")):
        raise ModelLoadError(_remote_code_message(name_or_path))
    if not any(name.endswith(_WEIGHT_SUFFIXES) for name in files):
        raise ModelLoadError(
            f"model directory {folder!r} has a config.json but no weights (it holds {listing}): "
            "save them there with model.save_pretrained(path), or point to the directory "
            "holding model.safetensors / pytorch_model.bin (or pass gguf_file=)."
        )


def _looks_like_path(name: str) -> bool:
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\"))
        or name.count("/") > 1
        or "\\" in name
    )


def _needs_remote_code(config_path: str) -> bool:
    """Whether the config maps AutoModelForCausalLM to code shipped with the checkpoint and
    names a model type transformers does not know."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    try:
        with open(config_path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError):
        return False
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not isinstance(auto_map, dict) or "AutoModelForCausalLM" not in auto_map:
        return False
    return config.get("model_type") not in CONFIG_MAPPING_NAMES


def _remote_code_message(name_or_path: str) -> str:
    return (
        f"{name_or_path!r} needs code shipped with the checkpoint (its config.json has an "
        "auto_map to a class transformers does not include), and trust_remote_code is off: "
        "read that code, then pass StandardizedTransformer(..., trust_remote_code=True) if you "
        "trust it (nnterp never turns it on itself)."
    )


@contextlib.contextmanager
def _load_errors(name_or_path: str) -> Iterator[None]:
    """Re-raise transformers' loading errors for ``name_or_path`` in nnterp's words."""
    try:
        yield
    except TypeError as error:
        match = re.search(r"unexpected keyword argument '([^']+)'", str(error))
        if match is None:
            raise
        raise InvalidInputError(
            f"keyword argument {match.group(1)!r} is neither one of StandardizedTransformer's nor "
            f"one that transformers' from_pretrained or the model class accepts for {name_or_path!r}: "
            "remove it, or check its spelling (StandardizedTransformer's own arguments are listed "
            f"in help(StandardizedTransformer)). (transformers: {error})"
        ) from error
    except (OSError, ValueError) as error:
        if isinstance(error, (InvalidInputError, ModelLoadError)):
            raise
        text = str(error)
        if "trust_remote_code" in text:
            raise ModelLoadError(f"{_remote_code_message(name_or_path)} (transformers: {text})") from error
        if not isinstance(error, OSError):
            raise
        raise ModelLoadError(
            f"could not load {name_or_path!r}: it is not a local directory, and the Hugging Face "
            "Hub did not serve it (a misspelt id, no network, or a gated/private model: pass "
            "token=...). Check the id, or pass the local directory save_pretrained wrote. "
            f"(transformers: {text})"
        ) from error


def _accelerator_available() -> bool:
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return bool(accelerator.is_available())
    return bool(torch.cuda.is_available())


def prepare_tokenizer(tokenizer: Any, *, copy_if_changed: bool = True, padding_side: str = "left") -> Any:
    """``tokenizer`` set up for batched causal-LM tracing.

    Left padding (so the last position of every row is a real token; nnsight then derives
    position ids from the attention mask), or the side the architecture spec asks for
    (`ArchitectureSpec.padding_side`), and a pad token when there is none (the EOS, BOS or
    UNK token, in that order). A tokenizer that already pads on that side with a pad token is
    returned as it is.

    Args:
        tokenizer: a transformers tokenizer.
        copy_if_changed: change a copy, so that the caller's tokenizer is never modified
            (False only for a tokenizer nnterp loaded itself).
        padding_side: ``"left"`` or ``"right"``.

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
    needs_padding_side = getattr(tokenizer, "padding_side", "left") != padding_side
    # NNsight sets its tokenizer to pad left: a right-padding tokenizer is always a copy.
    if not needs_padding_side and tokenizer.pad_token is not None and padding_side == "left":
        return tokenizer
    prepared = copy.deepcopy(tokenizer) if copy_if_changed else tokenizer
    if needs_padding_side:
        prepared.padding_side = padding_side
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


def tokenizer_without_prefix_space(tokenizer: Any) -> Any:
    """``tokenizer`` reloaded with ``add_prefix_space=False``, from a copy of its own files (no
    hub access), or ``tokenizer`` itself when it has no such option or cannot be reloaded.

    Example:
        >>> tokenizer_without_prefix_space(gpt2_tokenizer)("Paris", add_special_tokens=False).input_ids
    """
    import tempfile

    from transformers import AutoTokenizer

    if getattr(tokenizer, "add_prefix_space", None) is not True:
        return tokenizer
    with tempfile.TemporaryDirectory(prefix="nnterp-tokenizer-") as folder:
        try:
            tokenizer.save_pretrained(folder)
            return AutoTokenizer.from_pretrained(folder, add_prefix_space=False)
        except (OSError, ValueError, TypeError):
            return tokenizer


def is_vision_language(config: Any) -> bool:
    """Whether ``config`` describes a vision-language model (an image-text-to-text class whose
    language model predicts the next token).

    Example:
        >>> is_vision_language(AutoConfig.from_pretrained("llava-hf/llava-1.5-7b-hf"))
        True
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return getattr(config, "vision_config", None) is not None and config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def load_model_tokenizer_processor(
    name_or_path: str,
    *,
    attn_implementation: str | None,
    trust_remote_code: bool,
    tokenizer: Any = None,
    processor: Any = None,
    **model_kwargs: Any,
) -> tuple[Any, Any, Any]:
    """`load_model_and_tokenizer`, and for a vision-language checkpoint the image-text-to-text
    model (``AutoModelForImageTextToText``) with its processor (``AutoProcessor``), whose
    tokenizer is the one returned.

    Returns:
        ``(model, tokenizer, processor)``; ``processor`` is ``None`` for a text-only model unless
        one was given.

    Example:
        >>> model, tokenizer, processor = load_model_tokenizer_processor(
        ...     "llava-hf/llava-1.5-7b-hf", attn_implementation=None, trust_remote_code=False)
    """
    from transformers import AutoConfig

    check_source(name_or_path, trust_remote_code=trust_remote_code, **model_kwargs)
    shared = {key: model_kwargs[key] for key in _SHARED_TOKENIZER_KWARGS if key in model_kwargs}
    with _load_errors(name_or_path):
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **shared)
    if not is_vision_language(config):
        model, tokenizer = load_model_and_tokenizer(
            name_or_path,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            tokenizer=tokenizer,
            **model_kwargs,
        )
        return model, tokenizer, processor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if "device_map" not in model_kwargs and _accelerator_available() and importlib.util.find_spec("accelerate"):
        model_kwargs["device_map"] = "auto"
    if attn_implementation is not None:
        model_kwargs["attn_implementation"] = attn_implementation
    with _load_errors(name_or_path):
        if processor is None:
            processor = AutoProcessor.from_pretrained(
                name_or_path, trust_remote_code=trust_remote_code, padding_side="left", **shared
            )
        model = AutoModelForImageTextToText.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, **model_kwargs
        )
    model.eval()
    if tokenizer is None:
        tokenizer = prepare_tokenizer(processor.tokenizer, copy_if_changed=False)
    return model, tokenizer, processor
