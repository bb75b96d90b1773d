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

A record is checked before it is used (`record_problem`): one that is not JSON, or holds
unexpected fields or types, is reported once with a `ValidationCacheWarning` naming the file,
and ignored: the load validates again and the record is rewritten.

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
import typing
import warnings
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


class ValidationCacheWarning(UserWarning):
    """A stored validation record was unusable and was ignored (the model is validated again
    and the record rewritten)."""


_reported: set[str] = set()


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


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a usable validation record, or None when it is one.

    A record is an object with exactly ``format`` (`RECORD_FORMAT`), ``validated`` (a bool)
    and ``output_structure`` (an object with exactly the fields of
    `nnterp.validation.OutputStructure`, each of its declared type).

    Example:
        >>> record_problem({"format": 2, "validated": True,
        ...                 "output_structure": {"layer_returns_tuple": True, "layer_tuple_length": 1}}) is None
        True
        >>> record_problem({"format": 2, "validated": "yes", "output_structure": {}})
        '"validated" is a str, not a bool'
    """
    from nnterp.validation import OutputStructure

    if not isinstance(record, dict):
        return f"the record is a {type(record).__name__}, not an object"
    expected = {"format", "validated", "output_structure"}
    if set(record) != expected:
        return _fields_difference("the record", set(record), expected)
    if record["format"] != RECORD_FORMAT:
        return f'"format" is {record["format"]!r}, not {RECORD_FORMAT}'
    if type(record["validated"]) is not bool:
        return f'"validated" is a {type(record["validated"]).__name__}, not a bool'
    structure = record["output_structure"]
    if not isinstance(structure, dict):
        return f'"output_structure" is a {type(structure).__name__}, not an object'
    declared = typing.get_type_hints(OutputStructure)
    if set(structure) != set(declared):
        return _fields_difference('"output_structure"', set(structure), set(declared))
    for name, kind in declared.items():
        if type(structure[name]) is not kind:
            return f'"output_structure.{name}" is a {type(structure[name]).__name__}, not a {kind.__name__}'
    return None


def _fields_difference(what: str, found: set[str], expected: set[str]) -> str:
    parts = []
    if found - expected:
        parts.append(f"unexpected fields {sorted(found - expected)}")
    if expected - found:
        parts.append(f"missing fields {sorted(expected - found)}")
    return f"{what} has {' and '.join(parts)}"


def recall(key: str | None) -> dict[str, Any] | None:
    """The stored record for ``key``, or None (no key, no record, or the cache is off).

    A record that is not JSON or fails `record_problem` is reported once per file with a
    `ValidationCacheWarning` and treated as absent, so the caller validates again and
    `remember` overwrites it.

    Example:
        >>> recall(key_for(model, None))["output_structure"]
        {'layer_returns_tuple': True, 'layer_tuple_length': 1}
    """
    if key is None or not enabled():
        return None
    path = directory() / f"{key}.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        _report(path, f"it cannot be read ({error})")
        return None
    try:
        record = json.loads(text)
    except ValueError as error:
        _report(path, f"it is not valid JSON ({error})")
        return None
    problem = record_problem(record)
    if problem is not None:
        _report(path, problem)
        return None
    return record


def _report(path: Path, problem: str) -> None:
    if str(path) in _reported:
        return
    _reported.add(str(path))
    warnings.warn(
        f"nnterp's stored validation record {path} was ignored: {problem}. The model is "
        f"validated again and the record rewritten; `nnterp.validation_cache.clear()` deletes "
        f"every record.",
        ValidationCacheWarning,
        stacklevel=4,
    )


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


__all__ = [
    "ENV_SWITCH",
    "RECORD_FORMAT",
    "ValidationCacheWarning",
    "clear",
    "directory",
    "enabled",
    "key_for",
    "recall",
    "record_problem",
    "remember",
]
