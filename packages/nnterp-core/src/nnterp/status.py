"""The status registry: which architectures passed nnterp's conformance checks, on which versions.

Status files are JSON documents written by ``nnterp run_tests`` (see `nnterp.testing.sweep`)
and shipped by plugins (``register_status_files`` hook). Loading a model whose class is
untested, or failed a check, on the installed versions warns once.

File format::

    {"versions": {"transformers": "5.24.0", "nnsight": "0.8.1", "torch": "2.13.0"},
     "models": {"llama": {"class_name": "LlamaForCausalLM", "status": "pass",
                          "checks": {"renaming": "pass", ...}, "error": null}, ...}}

A registered file that cannot be read, is not JSON, or does not have this shape (see
`status_problem`) is reported once with a `nnterp.plugins.PluginWarning` naming the plugin and
the file, and ignored: loading models keeps working, as if the file were not registered.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer


class UntestedArchitectureWarning(UserWarning):
    """The loaded model's class was not tested, or failed a check, with these versions."""


_warned: set[str] = set()


@lru_cache(maxsize=1)
def installed_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the status depends on (read once per process;
    do not modify the returned dict)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("transformers", "nnsight", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def write_status(path: str | Path, document: dict[str, Any]) -> None:
    """Write a status document atomically: a crash mid-write leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=1, sort_keys=True)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(path: str | Path) -> dict[str, Any]:
    """Read a status document (an empty one if the file is missing)."""
    path = Path(path)
    if not path.exists():
        return {"versions": {}, "models": {}}
    return json.loads(path.read_text())


#: The fields of a model entry that nnterp reads, and the types each may have.
_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "class_name": (str,),
    "status": (str,),
    "checks": (dict,),
    "error": (str, type(None)),
}


def status_problem(document: Any) -> str | None:
    """Why ``document`` is not a usable status document, or None when it is one.

    Checks the fields nnterp reads: ``versions`` (an object of version strings), ``models``
    (an object of objects) and, in each entry, ``class_name`` and ``status`` (strings),
    ``checks`` (an object of strings) and ``error`` (a string or null). Other fields are allowed.

    Example:
        >>> status_problem({"versions": {}, "models": {"llama": {"status": "pass"}}}) is None
        True
        >>> status_problem({"models": {"llama": "pass"}})
        'models["llama"] is a str, not an object'
    """
    if not isinstance(document, dict):
        return f"the document is a {type(document).__name__}, not an object"
    versions = document.get("versions", {})
    if not isinstance(versions, dict) or not all(
        isinstance(name, str) and isinstance(value, str) for name, value in versions.items()
    ):
        return '"versions" is not an object of version strings'
    models = document.get("models", {})
    if not isinstance(models, dict):
        return f'"models" is a {type(models).__name__}, not an object'
    for model_type, entry in models.items():
        if not isinstance(entry, dict):
            return f'models["{model_type}"] is a {type(entry).__name__}, not an object'
        for name, kinds in _ENTRY_FIELDS.items():
            if name in entry and not isinstance(entry[name], kinds):
                return f'models["{model_type}"].{name} is a {type(entry[name]).__name__}'
        if not all(isinstance(result, str) for result in entry.get("checks", {}).values()):
            return f'models["{model_type}"].checks holds a value that is not a string'
    return None


def _status_files() -> list[str]:
    from nnterp.plugins import get_registry

    return get_registry().status_files


def _usable_status(path: str) -> dict[str, Any] | None:
    """The document in ``path``, or None (reported once) when it cannot be used."""
    try:
        document: Any = read_status(path)
        problem = status_problem(document)
    except json.JSONDecodeError as error:
        problem = f"it is not valid JSON ({error})"
    except (OSError, ValueError) as error:
        problem = f"it cannot be read ({error})"
    if problem is None:
        return document
    from nnterp.plugins import get_registry, report_once

    owner = get_registry().status_file_owners.get(path)
    who = (
        f"nnterp plugin {owner.name!r} from {owner.distribution} {owner.version}"
        if owner is not None
        else "a plugin"
    )
    fix = f"reinstall {owner.distribution}" if owner is not None else "fix or remove the file"
    report_once(
        f"status-file:{path}",
        f"{who} registered the status file {path}, which was ignored: {problem}. Model loads "
        f"are unaffected (classes it lists count as untested); {fix}, or regenerate the file "
        f"with `python -m nnterp run_tests`.",
    )
    return None


@lru_cache(maxsize=1)
def _known_classes() -> dict[str, dict[str, Any]]:
    by_class: dict[str, dict[str, Any]] = {}
    for path in _status_files():
        document = _usable_status(path)
        if document is None:
            continue
        versions = document.get("versions", {})
        for model_type, entry in document.get("models", {}).items():
            by_class[entry.get("class_name", model_type)] = {**entry, "model_type": model_type, "versions": versions}
    return by_class


def warn_if_untested(model: StandardizedTransformer) -> None:
    """Warn once per class if it is untested, failing, or tested on other versions."""
    class_name = type(model._module).__name__
    if class_name in _warned:
        return
    entry = _known_classes().get(class_name)
    message = None
    how = "run `python -m nnterp run_tests --class-names " + class_name + "` to test it here"
    if entry is None:
        message = f"{class_name} is not in nnterp's status registry (untested); {how}."
    elif entry.get("status") != "pass":
        failed = {k: v for k, v in entry.get("checks", {}).items() if v != "pass"}
        message = f"{class_name} failed nnterp's conformance checks ({failed}; {entry.get('error')}); {how}."
    elif entry["versions"] and {k: entry["versions"].get(k) for k in ("transformers", "nnsight")} != {
        k: installed_versions()[k] for k in ("transformers", "nnsight")
    }:
        message = (
            f"{class_name} was tested with {entry['versions']}, not the installed "
            f"{installed_versions()}; {how}."
        )
    if message:
        _warned.add(class_name)
        warnings.warn(message, UntestedArchitectureWarning, stacklevel=3)
