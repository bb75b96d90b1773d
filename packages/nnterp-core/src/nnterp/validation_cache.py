"""A record of load-time validations that passed, so the same setup is not checked twice.

Validation proves that the standard names point at the right HF modules and that the
accessors read them correctly. That depends on the model's code and configuration, not on its
weights. A passed validation is therefore stored under a key made of everything it depends on:

- the model class and a hash of the file that defines it (remote code and local edits count),
- the config (``to_json_string``), the attention implementation, parameter dtypes and device types,
- the resolved spec, the native paths, the user's ``rename`` aliases, attention probabilities on/off,
- the installed torch, transformers and nnsight versions and a hash of nnterp's own checking code.

A later load with the same key reuses the stored result instead of running the probe
forwards. Records live in ``<cache_root>/validation/<key>.json`` and are written atomically.
Set ``NNTERP_VALIDATION_CACHE=0`` to turn the cache off (every load then validates).

Example:
    >>> from nnterp import validation_cache
    >>> validation_cache.clear()          # forget every stored validation
    0
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnterp.status import installed_versions
from nnterp.storage import cache_root, file_sha256

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Bump when the meaning of a record changes, so old records are ignored.
RECORD_FORMAT = 2
#: Environment variable that turns the cache off when set to 0, false, no or off.
ENV_SWITCH = "NNTERP_VALIDATION_CACHE"

#: nnterp modules whose code decides what validation checks and what the accessors read.
_CHECKING_MODULES = (
    "nnterp.validation",
    "nnterp.accessors",
    "nnterp.renaming",
    "nnterp.spec",
    "nnterp.attention",
    "nnterp.standardized_transformer",
)


def enabled() -> bool:
    """Whether stored validations are used (``NNTERP_VALIDATION_CACHE`` is not 0/false/no/off)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def directory() -> Path:
    """The folder holding the records: ``<cache_root>/validation``."""
    return cache_root() / "validation"


def key_for(model: StandardizedTransformer, rename: dict[Any, Any] | None) -> str | None:
    """The hex key of ``model``'s validation: a SHA-256 of everything validation depends on.

    Args:
        model: a `StandardizedTransformer` whose spec and paths are resolved.
        rename: the ``rename=`` aliases the user passed, if any.

    Returns:
        The key, or None when the model class's source file cannot be read (a class defined
        in a notebook cell, say): such a model is validated at every load.
    """
    hf_model = model._module
    class_source = _class_source_hash(type(hf_model))
    if class_source is None:
        return None
    config = hf_model.config
    parameters = list(hf_model.parameters())
    material = {
        "format": RECORD_FORMAT,
        "class": f"{type(hf_model).__module__}.{type(hf_model).__qualname__}",
        "class_source": class_source,
        "config": config.to_json_string(use_diff=False),
        "attn_implementation": getattr(config, "_attn_implementation", None),
        "dtypes": sorted({str(parameter.dtype) for parameter in parameters}),
        "devices": sorted({parameter.device.type for parameter in parameters}),
        "spec": json.dumps(dataclasses.asdict(model.spec), sort_keys=True, default=repr),
        "paths": json.dumps(model.paths, sort_keys=True, default=repr),
        "rename": repr(sorted((repr(key), repr(value)) for key, value in (rename or {}).items())),
        "attention_probabilities": model.attention_probabilities_enabled,
        "versions": installed_versions(),
        "nnterp_checks": _checking_code_hash(),
    }
    encoded = json.dumps(material, sort_keys=True, default=repr).encode()
    return hashlib.sha256(encoded).hexdigest()


def recall(key: str | None) -> dict[str, Any] | None:
    """The stored record for ``key``, or None (no key, no record, unreadable, or the cache is off)."""
    if key is None or not enabled():
        return None
    try:
        record = json.loads((directory() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        return None
    return record


def remember(key: str | None, record: dict[str, Any]) -> None:
    """Store ``record`` under ``key`` atomically; a cache that cannot be written is skipped
    (the next load validates again), and so is a None key."""
    if key is None or not enabled():
        return
    folder = directory()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump({**record, "format": RECORD_FORMAT}, stream)
        os.replace(temporary, folder / f"{key}.json")
    except OSError:
        return


def clear() -> int:
    """Delete every stored validation record; returns how many were deleted.

    Example:
        >>> clear()
        3
    """
    removed = 0
    for path in directory().glob("*.json"):
        try:
            path.unlink()
            removed += 1
        except OSError:
            continue
    return removed


def _class_source_hash(klass: type) -> str | None:
    try:
        source = inspect.getsourcefile(klass)
    except TypeError:
        return None
    return _file_hash(source) if source else None


def _file_hash(path: str) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return _contents_hash(path, stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=256)
def _contents_hash(path: str, _mtime_ns: int, _size: int) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


@lru_cache(maxsize=1)
def _checking_code_hash() -> str:
    import importlib

    digest = hashlib.sha256()
    for name in _CHECKING_MODULES:
        module = importlib.import_module(name)
        digest.update(str(_file_hash(str(module.__file__))).encode())
    return digest.hexdigest()


__all__ = ["ENV_SWITCH", "RECORD_FORMAT", "clear", "directory", "enabled", "key_for", "recall", "remember"]
