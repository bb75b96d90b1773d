"""The status registry: which architectures passed nnterp's conformance checks, on which versions.

Status files are JSON documents written by ``nnterp run_tests`` (see `nnterp.testing.sweep`).
They come from three places, in increasing precedence (see `verdict_for`):

1. core's own file, ``nnterp/status_core.json`` (GPT-2 and the Llama family, `CORE_STATUS_FILE`),
   written by ``nnterp run_tests --core --no-record --output <that file>`` on the newest
   transformers of nnterp-core's declared range, then the same command with ``--merge`` on the
   oldest (so both ends count as tested);
2. the files plugins ship (``register_status_files`` hook), e.g. nnterp-models-contrib's;
3. the user-local registry, where ``nnterp run_tests`` records what it measured on this
   machine: ``$NNTERP_STATUS_REGISTRY`` when set (``0``/``off`` turns it off), else
   ``<cache root>/status.json`` (the folder `nnterp.storage.cache_root` gives, shared with the
   validation cache).

File format::

    {"versions": {"transformers": "5.24.0", "nnsight": "0.8.1", "torch": "2.13.0"},
     "models": {"llama": {"class_name": "LlamaForCausalLM", "status": "pass",
                          "checks": {"renaming": "pass", ...}, "error": null,
                          "tested_with": {"transformers": ["5.22.2", "5.24.0"],
                                          "nnsight": ["0.8.1"]}}, ...}}

``tested_with`` lists every version each result was measured with (merged runs on several
versions that gave the same result); an entry without it (older files) was measured with the
document's ``versions``.

When is the installed version "tested"? Per package (transformers, nnsight), when its
major.minor equals that of a tested version (``5.24.1`` counts as tested by ``5.24.0``:
patch releases do not change model code), or lies between the lowest and highest tested
major.minor of the same major (tested on ``5.22.2`` and ``5.24.0`` covers ``5.23.x``: CI tests
both ends of the declared range). `version_is_tested` implements the rule.

Loading a model warns once (`UntestedArchitectureWarning`) when its class is in no status file,
failed a check, or was tested only with versions outside that rule (the message names the
package, what was tested and what is installed).

A file that cannot be read, is not JSON, or does not have this shape (see `status_problem`) is
reported once (a `nnterp.plugins.PluginWarning` naming the plugin for a plugin's file, a
`StatusRegistryWarning` for core's or the user-local file) and ignored: loading models keeps
working, as if the file were absent.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nnterp.standardized_transformer import StandardizedTransformer

#: Core's own status file (GPT-2 and the Llama family), shipped in the nnterp-core wheel.
CORE_STATUS_FILE = Path(__file__).with_name("status_core.json")
#: Environment variable naming the user-local registry file (``0``/``off`` turns it off).
USER_REGISTRY_ENV = "NNTERP_STATUS_REGISTRY"
#: The packages whose versions decide whether a result still holds.
VERSIONED_PACKAGES = ("transformers", "nnsight")
#: Entry statuses: every check passed; a check failed; the tiny model could not be built; a
#: named model could not be loaded.
PASS, FAIL, BUILD_ERROR, LOAD_ERROR = "pass", "fail", "build_error", "load_error"
#: The tiny model builds, but the plain HF model cannot run a forward on a tokenized prompt
#: (a speculative-decoding drafter that needs its target model's states), so there is nothing
#: to standardize on text input.
FORWARD_ERROR = "forward_error"


class UntestedArchitectureWarning(UserWarning):
    """The loaded model's class was not tested, or failed a check, with these versions."""


class StatusRegistryWarning(UserWarning):
    """Core's status file or the user-local registry could not be used and was ignored."""


_warned: set[str] = set()
_reported: set[str] = set()


@lru_cache(maxsize=1)
def installed_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the status depends on (read once per process;
    do not modify the returned dict).

    Example:
        >>> installed_versions()
        {'transformers': '5.24.0', 'nnsight': '0.8.1', 'torch': '2.13.0+cpu'}
    """
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("transformers", "nnsight", "torch"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def write_status(path: str | Path, document: dict[str, Any]) -> None:
    """Write a status document atomically: a crash mid-write leaves the old file intact.

    Example:
        >>> write_status("status.json", {"versions": installed_versions(), "models": {}})
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(document, stream, indent=1, sort_keys=True)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_status(path: str | Path) -> dict[str, Any]:
    """Read a status document (an empty one if the file is missing).

    Example:
        >>> read_status("status.json")["models"]["llama"]["status"]
        'pass'
    """
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
    "tested_with": (dict,),
}


def status_problem(document: Any) -> str | None:
    """Why ``document`` is not a usable status document, or None when it is one.

    Checks the fields nnterp reads: ``versions`` (an object of version strings), ``models``
    (an object of objects) and, in each entry, ``class_name`` and ``status`` (strings),
    ``checks`` (an object of strings), ``error`` (a string or null) and ``tested_with`` (an
    object of lists of version strings). Other fields are allowed.

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
        isinstance(name, str) and isinstance(value, str)
        for name, value in versions.items()
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
                return (
                    f'models["{model_type}"].{name} is a {type(entry[name]).__name__}'
                )
        if not all(
            isinstance(result, str) for result in entry.get("checks", {}).values()
        ):
            return f'models["{model_type}"].checks holds a value that is not a string'
        for package, tested in entry.get("tested_with", {}).items():
            if not isinstance(tested, list) or not all(
                isinstance(v, str) for v in tested
            ):
                return f'models["{model_type}"].tested_with["{package}"] is not a list of version strings'
    return None


# -- versions ------------------------------------------------------------------------------


def _minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string, or None when it has none (``"missing"``)."""
    match = re.match(r"\s*v?(\d+)(?:\.(\d+))?", version)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def version_is_tested(installed: str, tested: list[str]) -> bool:
    """Whether ``installed`` counts as tested by results measured with the ``tested`` versions.

    True when its major.minor is that of a tested version, or lies between the lowest and
    highest tested major.minor of the same major; an empty ``tested`` (no version recorded)
    counts as tested.

    Example:
        >>> version_is_tested("5.24.1", ["5.24.0"]), version_is_tested("5.22.2", ["5.24.0"])
        (True, False)
        >>> version_is_tested("5.23.0", ["5.22.2", "5.24.0"])
        True
    """
    if not tested:
        return True
    mine = _minor(installed)
    if mine is None:
        return False
    minors = [m for m in (_minor(v) for v in tested) if m is not None]
    if mine in minors:
        return True
    same_major = [m for m in minors if m[0] == mine[0]]
    return bool(same_major) and min(same_major) <= mine <= max(same_major)


def tested_versions(
    entry: dict[str, Any], document_versions: dict[str, str]
) -> dict[str, list[str]]:
    """The versions an entry was measured with: ``{package: [versions]}`` for transformers and
    nnsight (its ``tested_with``, else the document's ``versions``; empty when unrecorded).

    Example:
        >>> tested_versions({"status": "pass"}, {"transformers": "5.24.0", "nnsight": "0.8.1"})
        {'transformers': ['5.24.0'], 'nnsight': ['0.8.1']}
    """
    recorded = entry.get("tested_with")
    result = {}
    for package in VERSIONED_PACKAGES:
        if recorded is not None and package in recorded:
            result[package] = sorted(set(recorded[package]), key=_version_order)
        elif package in document_versions:
            result[package] = [document_versions[package]]
        else:
            result[package] = []
    return result


def untested_packages(
    tested: dict[str, list[str]], installed: dict[str, str] | None = None
) -> dict[str, str]:
    """The packages whose installed version is outside ``tested``: ``{package: installed}``.

    Example:
        >>> untested_packages({"transformers": ["5.24.0"], "nnsight": ["0.8.1"]},
        ...                   {"transformers": "5.22.2", "nnsight": "0.8.1"})
        {'transformers': '5.22.2'}
    """
    installed = installed if installed is not None else installed_versions()
    return {
        package: installed.get(package, "missing")
        for package in VERSIONED_PACKAGES
        if not version_is_tested(
            installed.get(package, "missing"), tested.get(package, [])
        )
    }


# -- the sources ---------------------------------------------------------------------------


def user_registry_path() -> Path | None:
    """The user-local registry file ``nnterp run_tests`` records into, or None when
    ``NNTERP_STATUS_REGISTRY`` is ``0``/``off``/``false``/``no``.

    Example:
        >>> user_registry_path()
        PosixPath('/home/me/.cache/nnterp/status.json')
    """
    override = os.environ.get(USER_REGISTRY_ENV, "").strip()
    if override.lower() in ("0", "off", "false", "no"):
        return None
    if override:
        return Path(override).expanduser()
    from nnterp.storage import cache_root

    return cache_root() / "status.json"


def _plugin_status_files() -> list[str]:
    from nnterp.plugins import get_registry

    return list(get_registry().status_files)


def shipped_status_files() -> list[str]:
    """Core's status file and the plugins' files, lowest precedence first (no user-local file)."""
    core = [str(CORE_STATUS_FILE)] if CORE_STATUS_FILE.exists() else []
    return core + _plugin_status_files()


def _status_files() -> list[str]:
    """Every status file the warning consults, lowest precedence first."""
    user = user_registry_path()
    return shipped_status_files() + (
        [str(user)] if user is not None and user.exists() else []
    )


def _describe_source(path: str) -> tuple[str, str, bool]:
    """(who, fix, is_plugin) for the file ``path``, for the one-time report."""
    user = user_registry_path()
    if user is not None and Path(path) == user:
        return (
            "your user-local status registry",
            f"delete it (or set {USER_REGISTRY_ENV}=0); `nnterp run_tests` writes it again",
            False,
        )
    if Path(path) == CORE_STATUS_FILE:
        return "nnterp-core's status file", "reinstall nnterp-core", False
    from nnterp.plugins import get_registry

    owner = get_registry().status_file_owners.get(path)
    if owner is None:
        return "a plugin", "fix or remove the file", True
    return (
        f"nnterp plugin {owner.name!r} from {owner.distribution} {owner.version}",
        f"reinstall {owner.distribution}",
        True,
    )


def _report(path: str, problem: str) -> None:
    who, fix, is_plugin = _describe_source(path)
    if is_plugin:
        from nnterp.plugins import report_once

        report_once(
            f"status-file:{path}",
            f"{who} registered the status file {path}, which was ignored: {problem}. Model loads "
            f"are unaffected (classes it lists count as untested); {fix}, or regenerate the file "
            f"with `python -m nnterp run_tests`.",
        )
        return
    if path in _reported:
        return
    _reported.add(path)
    warnings.warn(
        f"{who} {path} was ignored: {problem}. Model loads are unaffected (classes it lists "
        f"count as untested); {fix}.",
        StatusRegistryWarning,
        stacklevel=4,
    )


def load_status_file(path: str | Path) -> dict[str, Any] | None:
    """The document in ``path``, or None (reported once) when it is missing or unusable.

    Example:
        >>> load_status_file(CORE_STATUS_FILE)["models"]["llama"]["status"]
        'pass'
    """
    path = str(path)
    if not Path(path).exists():
        return None
    document, problem = inspect_status_file(path)
    if problem is None:
        return document
    _report(path, problem)
    return None


def inspect_status_file(path: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(document, None)`` for a usable status file, ``(None, why)`` for an unusable one
    (nothing is reported; `load_status_file` reports).

    Example:
        >>> inspect_status_file("broken.json")
        (None, 'it is not valid JSON (Expecting value: line 1 column 1 (char 0))')
    """
    try:
        document: Any = read_status(path)
        problem = status_problem(document)
    except json.JSONDecodeError as error:
        problem = f"it is not valid JSON ({error})"
    except (OSError, ValueError) as error:
        problem = f"it cannot be read ({error})"
    return (document, None) if problem is None else (None, problem)


@dataclass(frozen=True)
class Result:
    """One measured result of one model type, from one status file.

    Attributes:
        model_type: The key in the file (a transformers model type, or a model name).
        entry: The entry as stored (``class_name``, ``status``, ``checks``, ``error``, ...).
        tested: ``{package: [versions]}`` it was measured with (see `tested_versions`).
        source: The file it comes from.
    """

    model_type: str
    entry: dict[str, Any]
    tested: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    @property
    def status(self) -> str:
        return str(self.entry.get("status", FAIL))

    @property
    def class_name(self) -> str:
        return str(self.entry.get("class_name", self.model_type))


def results_in(path: str | Path) -> list[Result]:
    """The results of one status file (none when it is missing or unusable).

    Example:
        >>> [r.model_type for r in results_in(CORE_STATUS_FILE)][:2]
        ['exaone', 'gemma']
    """
    document = load_status_file(path)
    if document is None:
        return []
    versions = document.get("versions", {})
    return [
        Result(model_type, entry, tested_versions(entry, versions), str(path))
        for model_type, entry in document.get("models", {}).items()
    ]


@lru_cache(maxsize=1)
def _known_classes() -> dict[str, list[Result]]:
    """Every result of every consulted file, by class name, lowest precedence first."""
    by_class: dict[str, list[Result]] = {}
    for path in _status_files():
        for result in results_in(path):
            by_class.setdefault(result.class_name, []).append(result)
    return by_class


def shipped_models() -> dict[str, dict[str, Any]]:
    """The status entries shipped with the installed distributions (core's file, then the
    plugins' files; a later file wins for the same model type), by model type, each with its
    ``tested_with`` filled in. The user-local registry is left out.

    Example:
        >>> shipped_models()["llama"]["status"]
        'pass'
    """
    merged: dict[str, dict[str, Any]] = {}
    for path in shipped_status_files():
        for result in results_in(path):
            merged[result.model_type] = {**result.entry, "tested_with": result.tested}
    return merged


@dataclass(frozen=True)
class Verdict:
    """What the registry says about one class on the installed versions.

    Attributes:
        state: ``"pass"``, ``"fail"`` (failed a check, or could not be built or loaded),
            ``"other_versions"`` (results exist, all measured with versions outside the rule of
            `version_is_tested`) or ``"untested"``.
        result: The result the state comes from (None when untested).
        outside: For ``"other_versions"``: ``{package: installed version}`` of the packages
            outside what was tested.
    """

    state: str
    result: Result | None = None
    outside: dict[str, str] = field(default_factory=dict)


def verdict_for(class_name: str, model_type: str | None = None) -> Verdict:
    """The registry's verdict on ``class_name`` (a model of ``model_type``) here.

    Among the results for the class measured with versions that count as tested (see
    `version_is_tested`), one recorded for ``model_type`` wins, then the one from the
    file of highest precedence (user-local, then plugins, then core).

    Example:
        >>> verdict_for("LlamaForCausalLM", "llama").state
        'pass'
    """
    results = _known_classes().get(class_name, [])
    if not results:
        return Verdict("untested")

    def preferred(candidates: list[Result]) -> Result:
        matching = [r for r in candidates if r.model_type == model_type]
        return (matching or candidates)[-1]

    current = [r for r in results if not untested_packages(r.tested)]
    if current:
        chosen = preferred(current)
        return Verdict(PASS if chosen.status == PASS else FAIL, chosen)
    chosen = preferred(results)
    return Verdict("other_versions", chosen, untested_packages(chosen.tested))


def _how(class_name: str) -> str:
    return (
        f"run `python -m nnterp run_tests --class-names {class_name}` to test it here"
    )


def warning_message(class_name: str, model_type: str | None = None) -> str | None:
    """The `UntestedArchitectureWarning` text for ``class_name`` here, or None when it passed
    with versions that count as tested.

    Example:
        >>> warning_message("LlamaForCausalLM", "llama") is None
        True
    """
    verdict = verdict_for(class_name, model_type)
    how = _how(class_name)
    if verdict.state == "untested":
        return f"{class_name} is not in nnterp's status registry (untested); {how}."
    assert verdict.result is not None
    entry = verdict.result.entry
    if verdict.state == FAIL:
        failed = {k: v for k, v in entry.get("checks", {}).items() if v != PASS}
        return f"{class_name} failed nnterp's conformance checks ({failed}; {entry.get('error')}); {how}."
    if verdict.state == "other_versions":
        tested = "; ".join(
            f"{package} {', '.join(verdict.result.tested[package])}"
            for package in verdict.outside
        )
        mine = "; ".join(
            f"{package} {version}" for package, version in verdict.outside.items()
        )
        return f"{class_name} was tested with {tested}; you have {mine}; {how}."
    return None


def warn_if_untested(model: StandardizedTransformer) -> None:
    """Warn once per class if it is untested, failing, or tested only on other versions."""
    class_name = type(model._module).__name__
    if class_name in _warned:
        return
    model_type = getattr(getattr(model._module, "config", None), "model_type", None)
    message = warning_message(class_name, model_type)
    if message:
        _warned.add(class_name)
        warnings.warn(message, UntestedArchitectureWarning, stacklevel=3)


# -- recording -----------------------------------------------------------------------------


def _same_result(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(
        old.get(name) == new.get(name)
        for name in ("class_name", "status", "checks", "error")
    )


def merge_results(
    document: dict[str, Any],
    models: dict[str, dict[str, Any]],
    versions: dict[str, str],
    *,
    keep_differing: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """``document`` with ``models`` (measured with ``versions``) recorded into it.

    A model type whose new result equals the stored one (same class, status, checks and error)
    keeps it and adds ``versions`` to its ``tested_with``. A differing new result replaces the
    stored one (the user-local registry: the latest measurement here wins), or with
    ``keep_differing`` leaves it untouched (adding a run on another transformers release to a
    shipped file: a result only holds for the versions it was measured with). Types not in
    ``models`` are kept. ``document`` is not modified; its ``versions`` (those of its main run)
    are kept, or set to ``versions`` when it has none.

    Returns:
        The merged document, and the model types whose differing result was kept out.

    Example:
        >>> merged, differing = merge_results(read_status("status.json"), {"llama": entry}, installed_versions())
    """
    previous = document.get("models", {})
    document_versions = document.get("versions", {})
    merged = dict(previous)
    differing = []
    for model_type, entry in models.items():
        measured = {
            package: [versions[package]]
            for package in VERSIONED_PACKAGES
            if package in versions
        }
        old = previous.get(model_type)
        if isinstance(old, dict) and _same_result(old, entry):
            tested = tested_versions(old, document_versions)
            for package, found in measured.items():
                tested[package] = sorted(
                    set(tested.get(package, [])) | set(found), key=_version_order
                )
            measured = {package: values for package, values in tested.items() if values}
        elif isinstance(old, dict) and keep_differing:
            differing.append(model_type)
            continue
        merged[model_type] = {**entry, "tested_with": measured}
    result = {
        **document,
        "versions": dict(document_versions or versions),
        "models": dict(sorted(merged.items())),
    }
    return result, differing


def _version_order(version: str) -> tuple[tuple[int, int], str]:
    return _minor(version) or (0, 0), version


def record_results(
    models: dict[str, dict[str, Any]], path: str | Path | None = None
) -> Path | None:
    """Record ``models`` (measured with the installed versions) into the user-local registry
    (or ``path``), merging with what it holds (see `merge_results`); entries without a class
    name (a model that did not load) are left out. A registry that cannot be read is reported
    once and started afresh.

    Returns:
        The file written, or None when the user-local registry is turned off.

    Example:
        >>> record_results({"llama": run_conformance(tiny_model("llama"), tiny_tokenizer()).as_dict()})
        PosixPath('/home/me/.cache/nnterp/status.json')
    """
    target = Path(path) if path is not None else user_registry_path()
    if target is None:
        return None
    document = load_status_file(target) or {"versions": {}, "models": {}}
    recordable = {
        name: entry
        for name, entry in models.items()
        if isinstance(entry.get("class_name"), str)
    }
    merged, _ = merge_results(document, recordable, installed_versions())
    write_status(target, {**merged, "versions": installed_versions()})
    _known_classes.cache_clear()
    _warned.clear()
    return target
