"""The conformance sweep behind ``nnterp run_tests``: many architectures, one status file.

``nnterp run_tests --all`` builds every causal-LM model type transformers lists as a tiny random
model, runs `nnterp.testing.conformance` on it, prints one labelled row per type and the totals,
and records the results in the user-local status registry (`nnterp.status.record_results`), which
the untested-architecture warning consults. ``--output FILE`` also writes a status file
(``--merge`` merges into an existing one); ``--diff`` compares the results with the shipped
registry (`nnterp.registry_diff`) and exits 1 when something regressed.

``--model-names`` tests real models (hub ids or local directories): a model that cannot be
loaded is recorded as a ``load_error`` and the sweep goes on. When the Hugging Face Hub is
unreachable (or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set), hub ids are looked up in the
local cache only, so an offline run does not wait on network retries.

Example:
    $ nnterp run_tests --model-types llama gpt2 --output status.json
    $ nnterp check-release            # = nnterp run_tests --all --diff
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from nnterp.errors import InvalidInputError
from nnterp.status import (
    BUILD_ERROR,
    FORWARD_ERROR,
    LOAD_ERROR,
    installed_versions,
    merge_results,
    read_status,
    write_status,
)

#: Seconds one model type may take before it is recorded as timed out.
PER_TYPE_TIMEOUT = 120
#: Seconds to wait for the Hugging Face Hub to answer before treating it as unreachable.
HUB_PROBE_TIMEOUT = 3.0

#: Column labels and widths of the per-type progress table.
_PROGRESS_COLUMNS = (
    ("model", 28),
    ("status", 12),
    ("attention probs", 15),
    ("error", 0),
)


def causal_lm_types() -> dict[str, str]:
    """transformers' causal-LM model types and their class names.

    Example:
        >>> causal_lm_types()["llama"]
        'LlamaForCausalLM'
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return {
        model_type: names if isinstance(names, str) else names[0]
        for model_type, names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
    }


def _normalized(name: str) -> str:
    return "".join(character for character in name.lower() if character.isalnum())


def model_type_for_class(
    class_name: str, known: dict[str, str] | None = None
) -> str | None:
    """The model type to build for ``class_name``: among the types transformers maps to it, the
    one the class is named after (``LlamaForCausalLM`` -> ``llama``), else the first; None when
    no causal-LM type maps to it.

    Example:
        >>> model_type_for_class("GPT2LMHeadModel")
        'gpt2'
    """
    known = known if known is not None else causal_lm_types()
    candidates = [
        model_type for model_type, name in known.items() if name == class_name
    ]
    if not candidates:
        return None
    prefix = _normalized(class_name)
    named = [t for t in candidates if prefix.startswith(_normalized(t))]
    return max(named, key=len) if named else candidates[0]


def core_model_types(known: dict[str, str] | None = None) -> list[str]:
    """The causal-LM model types whose class nnterp-core's own specs cover (GPT-2, the Llama
    family), as transformers maps them.

    Example:
        >>> core_model_types()[:3]
        ['exaone', 'gemma', 'gemma2']
    """
    from nnterp.architectures import CORE_SPECS

    classes = {name for spec in CORE_SPECS for name in spec.model_classes}
    known = known if known is not None else causal_lm_types()
    return sorted(
        model_type for model_type, class_name in known.items() if class_name in classes
    )


def check_model_types(
    model_types: list[str],
    known: dict[str, str] | None = None,
    argument: str = "--model-types",
) -> None:
    """Raise `InvalidInputError` naming ``argument`` and each of ``model_types`` that is not a
    causal-LM type of the installed transformers, the closest valid names, and where the valid
    ones are listed.

    Example:
        >>> check_model_types(["nosuchtype"])
        Traceback (most recent call last):
        InvalidInputError: --model-types: 'nosuchtype' is not a causal-LM model type of transformers ...
    """
    known = known if known is not None else causal_lm_types()
    unknown = [model_type for model_type in model_types if model_type not in known]
    if not unknown:
        return
    close = sorted(
        {
            match
            for name in unknown
            for match in difflib.get_close_matches(name, known, n=3)
        }
    )
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise InvalidInputError(
        f"{argument}: {', '.join(repr(name) for name in unknown)} "
        f"{'is' if len(unknown) == 1 else 'are'} not a causal-LM model type of transformers "
        f"{installed_versions()['transformers']}{hint}; the valid ones are the keys of transformers' "
        f"MODEL_FOR_CAUSAL_LM_MAPPING_NAMES: `nnterp run_tests --list-types` lists all {len(known)}."
    )


class _TimedOut(Exception):
    pass


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise _TimedOut(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:limit]}" if text else type(error).__name__


def sweep_model_type(model_type: str, class_name: str) -> dict[str, Any]:
    """Status entry of one model type: built tiny, then every conformance check.

    Example:
        >>> sweep_model_type("llama", "LlamaForCausalLM")["status"]
        'pass'
    """
    from nnterp.testing.conformance import run_conformance
    from nnterp.testing.tiny import tiny_model, tiny_tokenizer

    entry: dict[str, Any]
    try:
        with _time_limit(PER_TYPE_TIMEOUT):
            try:
                hf_model = tiny_model(model_type)
            except Exception as error:  # noqa: BLE001 - recorded in the status
                first = str(error).splitlines()[0][:300] if str(error) else ""
                entry = {
                    "class_name": class_name,
                    "status": BUILD_ERROR,
                    "checks": {},
                    "error": f"{type(error).__name__}: {first}",
                }
            else:
                entry = run_conformance(hf_model, tiny_tokenizer()).as_dict()
                if entry["status"] != "pass":
                    plain_error = _plain_forward_error(hf_model, tiny_tokenizer())
                    if plain_error is not None:
                        entry = {**entry, "status": FORWARD_ERROR, "checks": {}, "error": plain_error}
    except _TimedOut as error:
        entry = {"class_name": class_name, "status": "fail", "checks": {}, "error": f"timeout: {error}"}
    reason = _unsupported_reason(model_type)
    if reason is not None and entry["status"] != "pass":
        entry["reason"] = reason
    return entry


def _plain_forward_error(hf_model: Any, tokenizer: Any) -> str | None:
    """Why the plain HF model cannot run a forward on a tokenized prompt, or ``None`` when it can
    (then a failing entry is nnterp's to fix, not the model's)."""
    import torch

    encoding = tokenizer(["The capital of France is"], return_tensors="pt")
    try:
        with torch.no_grad():
            hf_model(input_ids=encoding["input_ids"], attention_mask=encoding["attention_mask"])
    except Exception as error:  # noqa: BLE001 - recorded in the status
        return f"the plain model's forward on a prompt raised {_one_line(error)}"
    return None


def _unsupported_reason(model_type: str) -> str | None:
    """Why a plugin says ``model_type`` cannot be standardized (`register_unsupported_models`)."""
    from nnterp.plugins import get_registry

    return get_registry().unsupported_models.get(model_type)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Whether the Hugging Face Hub answers within ``timeout`` seconds (any HTTP status counts;
    proxies from the environment are used), honouring ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``.

    Example:
        >>> hub_reachable()
        False
    """
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(
        os.environ.get("TRANSFORMERS_OFFLINE")
    ):
        return False
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(
            urllib.request.Request(endpoint, method="HEAD"), timeout=timeout
        ).close()
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def is_local(name: str) -> bool:
    """Whether ``name`` is a local directory or file, or written as a path (``./x``, ``/x``,
    ``~/x``, ``a/b/c``): such names never reach the Hub.

    Example:
        >>> is_local("gpt2"), is_local("./my-model")
        (False, True)
    """
    from nnterp.loading import _looks_like_path

    return os.path.exists(os.path.expanduser(name)) or _looks_like_path(name)


def hub_options(names: list[str]) -> dict[str, Any]:
    """``from_pretrained`` options for loading ``names``: ``{"local_files_only": True}`` (and
    ``HF_HUB_OFFLINE=1`` for child processes, with one line on stderr) when one of them is a hub
    id and the Hub is unreachable; else nothing.

    Example:
        >>> hub_options(["gpt2"])          # offline
        {'local_files_only': True}
    """
    hub_ids = [name for name in names if not is_local(name)]
    if not hub_ids or hub_reachable():
        return {}
    os.environ["HF_HUB_OFFLINE"] = "1"
    print(
        f"nnterp: the Hugging Face Hub is unreachable (or HF_HUB_OFFLINE is set): "
        f"{', '.join(hub_ids)} will be looked up in the local cache only",
        file=sys.stderr,
    )
    return {"local_files_only": True}


def sweep_model_name(name: str, **load_options: Any) -> dict[str, Any]:
    """Status entry of a real model (hub id or local directory); a model that cannot be loaded
    gives a ``load_error`` entry (no class name) instead of raising.

    Example:
        >>> sweep_model_name("/no/such/model")["status"]
        'load_error'
    """
    from nnterp.loading import load_model_and_tokenizer
    from nnterp.testing.conformance import run_conformance

    try:
        hf_model, tokenizer = load_model_and_tokenizer(
            name, attn_implementation="eager", trust_remote_code=False, **load_options
        )
    except Exception as error:  # noqa: BLE001 - recorded in the status, the sweep goes on
        return {"status": LOAD_ERROR, "checks": {}, "error": _one_line(error, 500)}
    entry = run_conformance(hf_model, tokenizer).as_dict()
    model_type = getattr(hf_model.config, "model_type", None)
    return {**entry, "model_type": model_type} if model_type else entry


def totals(models: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Counts of model types: total, buildable tiny, that run a forward on a prompt (the
    plain HF model), standardized (all checks), with attention probabilities.

    Example:
        >>> totals({"llama": {"status": "pass", "checks": {"attention_probabilities": "pass"}}})
        {'total': 1, 'buildable': 1, 'runnable': 1, 'standardized': 1, 'attention_probabilities': 1}
    """
    return {
        "total": len(models),
        "buildable": sum(
            entry["status"] not in (BUILD_ERROR, LOAD_ERROR)
            for entry in models.values()
        ),
        "runnable": sum(
            entry["status"] not in (BUILD_ERROR, LOAD_ERROR, FORWARD_ERROR)
            for entry in models.values()
        ),
        "standardized": sum(entry["status"] == "pass" for entry in models.values()),
        "attention_probabilities": sum(
            entry["status"] == "pass"
            and entry["checks"].get("attention_probabilities") == "pass"
            for entry in models.values()
        ),
    }


def progress_header() -> str:
    """The column labels of the per-type progress rows `run_sweep` prints."""
    labels = [label.ljust(width) for label, width in _PROGRESS_COLUMNS]
    rule = ["-" * max(width - 1, 5) for _, width in _PROGRESS_COLUMNS]
    return (
        " ".join(labels).rstrip()
        + "\n"
        + " ".join(r.ljust(w) for r, (_, w) in zip(rule, _PROGRESS_COLUMNS)).rstrip()
    )


def progress_row(name: str, entry: dict[str, Any]) -> str:
    """One progress row: name, status, attention-probability check, error (cut to fit a line)."""
    attention = entry.get("checks", {}).get("attention_probabilities", "-")
    values = [name, entry["status"], attention, entry.get("error") or ""]
    cells = [
        f"{value:{width}s}" if width else value
        for value, (_, width) in zip(values, _PROGRESS_COLUMNS)
    ]
    return " ".join(cells)[:220].rstrip()


def run_sweep(
    model_types: list[str], jobs: int = 1, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Sweep ``model_types`` (in ``jobs`` worker processes) and return their status entries.

    Example:
        >>> run_sweep(["llama"], progress=False)["llama"]["status"]
        'pass'
    """
    known = causal_lm_types()
    if jobs > 1 and len(model_types) > 1:
        return _run_in_workers(model_types, jobs)
    results: dict[str, dict[str, Any]] = {}
    for model_type in model_types:
        entry = sweep_model_type(model_type, known.get(model_type, model_type))
        results[model_type] = entry
        if progress:
            print(progress_row(model_type, entry), flush=True)
    return results


def _run_in_workers(model_types: list[str], jobs: int) -> dict[str, dict[str, Any]]:
    chunks = [model_types[index::jobs] for index in range(jobs)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory:
        workers = []
        for index, chunk in enumerate(chunks):
            output = Path(directory) / f"part{index}.json"
            command = [
                sys.executable,
                "-m",
                "nnterp",
                "run_tests",
                "--model-types",
                *chunk,
                "--output",
                str(output),
                "--no-record",
                "--no-header",
            ]
            workers.append((subprocess.Popen(command), output, chunk))
        for process, output, chunk in workers:
            process.wait()
            if output.exists():
                results.update(json.loads(output.read_text())["models"])
            for model_type in chunk:
                results.setdefault(
                    model_type,
                    {
                        "class_name": model_type,
                        "status": "fail",
                        "checks": {},
                        "error": f"worker exited with {process.returncode}",
                    },
                )
    return dict(sorted(results.items()))


def requested_model_types(args: Any, known: dict[str, str]) -> list[str]:
    """The model types ``run_tests`` arguments ask for (``--all``, ``--core``, ``--model-types``,
    ``--class-names``), in order and without repeats.

    Raises:
        InvalidInputError: an unknown model type or class name (the message lists where the
            valid ones are).
    """
    model_types: list[str] = sorted(known) if getattr(args, "all", False) else []
    if getattr(args, "core", False):
        model_types += core_model_types(known)
    requested = list(getattr(args, "model_types", None) or [])
    check_model_types(requested, known)
    model_types += requested
    for class_name in getattr(args, "class_names", None) or []:
        model_type = model_type_for_class(class_name, known)
        if model_type is None:
            close = difflib.get_close_matches(
                class_name, sorted(set(known.values())), n=3
            )
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise InvalidInputError(
                f"--class-names: {class_name!r} is not a causal-LM class of transformers "
                f"{installed_versions()['transformers']}{hint}; `nnterp run_tests --list-types` lists "
                "every model type and its class."
            )
        model_types.append(model_type)
    return list(dict.fromkeys(model_types))


def _list_types(known: dict[str, str]) -> int:
    from nnterp.tables import format_table

    print(format_table(["model type", "class"], sorted(known.items())))
    print(
        f"{len(known)} causal-LM model types in transformers {installed_versions()['transformers']}"
    )
    return 0


def _write_output(path: str, models: dict[str, dict[str, Any]], merge: bool) -> None:
    versions = installed_versions()
    existing: dict[str, Any] = {"versions": versions, "models": {}}
    if merge and Path(path).exists():
        from nnterp.status import inspect_status_file

        document, problem = inspect_status_file(path)
        if document is None:
            raise InvalidInputError(
                f"--merge: {path} is not a usable status file ({problem}); write it without --merge"
            )
        existing = document
    document, differing = merge_results(existing, models, versions, keep_differing=True)
    document["totals"] = totals(document["models"])
    write_status(path, document)
    print(f"status written to {path}")
    if differing:
        print(
            f"kept the stored result of {len(differing)} type(s) whose result differs on these versions "
            f"(they count as tested only with the versions stored): {', '.join(differing)}"
        )


@contextmanager
def _core_only() -> Iterator[None]:
    """Measure core's own specs only (``--core``): no entry-point plugin may override them
    (worker processes inherit the setting); the registry is rebuilt as it was afterwards."""
    from nnterp import plugins, status

    before = os.environ.get(plugins.DISABLE_ENV_VAR)
    os.environ[plugins.DISABLE_ENV_VAR] = "1"
    plugins.reset_registry()
    status._known_classes.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(plugins.DISABLE_ENV_VAR, None)
        else:
            os.environ[plugins.DISABLE_ENV_VAR] = before
        plugins.reset_registry()
        status._known_classes.cache_clear()


def _diff(
    models: dict[str, dict[str, Any]], against: str | None, known: dict[str, str]
) -> int:
    from nnterp.registry_diff import diff_registries, format_diff
    from nnterp.status import shipped_models

    if against:
        if not Path(against).exists():
            raise InvalidInputError(
                f"--diff: the status file {against!r} does not exist"
            )
        shipped = read_status(against).get("models", {})
        source = against
    else:
        shipped = shipped_models()
        source = "the shipped registry"
    diff = diff_registries(shipped, models, known, installed_versions()["transformers"])
    print(
        f"differences from {source} (transformers {installed_versions()['transformers']} installed):"
    )
    print(format_diff(diff))
    return 1 if diff.regressed else 0


def main(args: Any) -> int:
    """``nnterp run_tests``: sweep, print a labelled table and the totals, record the results in
    the user-local registry, write a status file and compare with the shipped one if asked.

    Returns:
        The exit status: with ``--diff``, 1 when something regressed; else 1 when a model
        failed a check or could not be loaded, 0 otherwise.

    Raises:
        InvalidInputError: an unknown model type or class name, nothing to test, ``--merge``
            into an unusable file.
    """
    known = causal_lm_types()
    if getattr(args, "list_types", False):
        return _list_types(known)
    with _core_only() if getattr(args, "core", False) else nullcontext():
        return _run_tests(args, known)


def _run_tests(args: Any, known: dict[str, str]) -> int:
    started = time.perf_counter()
    model_types = requested_model_types(args, known)
    names = list(getattr(args, "model_names", None) or [])
    if not model_types and not names:
        raise InvalidInputError(
            "nothing to test: pass --all, --core, --model-types, --class-names or --model-names"
        )
    if not getattr(args, "no_header", False):
        print(progress_header(), flush=True)
    models = run_sweep(model_types, jobs=getattr(args, "jobs", 1))
    options = hub_options(names)
    for name in names:
        models[name] = sweep_model_name(name, **options)
        print(progress_row(name, models[name]), flush=True)
    counts = totals(models)
    print(
        f"standardized {counts['standardized']} / runnable {counts['runnable']} / buildable {counts['buildable']} "
        f"/ total {counts['total']} "
        f"model types; attention probabilities on {counts['attention_probabilities']} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    if args.output:
        _write_output(args.output, models, getattr(args, "merge", False))
    if not getattr(args, "no_record", False):
        recorded = _record(models)
        if recorded is not None:
            print(f"results recorded in the user-local status registry {recorded}")
    if getattr(args, "diff", None) is not None:
        swept = {name: entry for name, entry in models.items() if name in known}
        return _diff(swept, args.diff or None, known)
    return (
        0
        if all(entry["status"] not in ("fail", LOAD_ERROR) for entry in models.values())
        else 1
    )


def _record(models: dict[str, dict[str, Any]]) -> Path | None:
    """Record into the user-local registry, keyed by model type (a real model under its
    config's model type)."""
    from nnterp.status import record_results

    by_type = {}
    for name, entry in models.items():
        key = entry.get("model_type") or name
        by_type[key] = {k: v for k, v in entry.items() if k != "model_type"}
    try:
        return record_results(by_type)
    except OSError as error:
        print(
            f"nnterp: could not record the results in the user-local status registry: {error}",
            file=sys.stderr,
        )
        return None
