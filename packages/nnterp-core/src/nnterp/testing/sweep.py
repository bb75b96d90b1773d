"""The conformance sweep behind ``nnterp run_tests``: many architectures, one status file.

``nnterp run_tests --all`` builds every causal-LM model type transformers lists as a tiny random
model, runs `nnterp.testing.conformance` on it, prints one line per type and the totals, and
(with ``--output``) writes a status file (see `nnterp.status`).

Example:
    $ nnterp run_tests --model-types llama gpt2 --output status.json
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from nnterp.status import installed_versions, write_status

#: Seconds one model type may take before it is recorded as timed out.
PER_TYPE_TIMEOUT = 120

BUILD_ERROR = "build_error"


def causal_lm_types() -> dict[str, str]:
    """transformers' causal-LM model types and their class names."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return {
        model_type: names if isinstance(names, str) else names[0]
        for model_type, names in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items()
    }


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


def sweep_model_type(model_type: str, class_name: str) -> dict[str, Any]:
    """Status entry of one model type: built tiny, then every conformance check."""
    from nnterp.testing.conformance import run_conformance
    from nnterp.testing.tiny import tiny_model, tiny_tokenizer

    try:
        with _time_limit(PER_TYPE_TIMEOUT):
            try:
                hf_model = tiny_model(model_type)
            except Exception as error:  # noqa: BLE001 - recorded in the status
                return {"class_name": class_name, "status": BUILD_ERROR, "checks": {},
                        "error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"}
            return run_conformance(hf_model, tiny_tokenizer()).as_dict()
    except _TimedOut as error:
        return {"class_name": class_name, "status": "fail", "checks": {}, "error": f"timeout: {error}"}


def sweep_model_name(name: str) -> dict[str, Any]:
    """Status entry of a real model (hub id or local directory)."""
    from nnterp.loading import load_model_and_tokenizer
    from nnterp.testing.conformance import run_conformance

    hf_model, tokenizer = load_model_and_tokenizer(name, attn_implementation="eager", trust_remote_code=False)
    return run_conformance(hf_model, tokenizer).as_dict()


def totals(models: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Counts of model types: total, buildable tiny, standardized (all checks), with attention probabilities."""
    return {
        "total": len(models),
        "buildable": sum(entry["status"] != BUILD_ERROR for entry in models.values()),
        "standardized": sum(entry["status"] == "pass" for entry in models.values()),
        "attention_probabilities": sum(
            entry["status"] == "pass" and entry["checks"].get("attention_probabilities") == "pass"
            for entry in models.values()
        ),
    }


def run_sweep(model_types: list[str], jobs: int = 1, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Sweep ``model_types`` (in ``jobs`` worker processes) and return their status entries."""
    known = causal_lm_types()
    if jobs > 1 and len(model_types) > 1:
        return _run_in_workers(model_types, jobs)
    results: dict[str, dict[str, Any]] = {}
    for model_type in model_types:
        entry = sweep_model_type(model_type, known.get(model_type, model_type))
        results[model_type] = entry
        if progress:
            attention = entry.get("checks", {}).get("attention_probabilities", "-")
            print(f"{model_type:28s} {entry['status']:12s} attn={attention:12s} {entry.get('error') or ''}"[:220],
                  flush=True)
    return results


def _run_in_workers(model_types: list[str], jobs: int) -> dict[str, dict[str, Any]]:
    chunks = [model_types[index::jobs] for index in range(jobs)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as directory:
        workers = []
        for index, chunk in enumerate(chunks):
            output = Path(directory) / f"part{index}.json"
            command = [sys.executable, "-m", "nnterp", "run_tests", "--model-types", *chunk, "--output", str(output)]
            workers.append((subprocess.Popen(command), output, chunk))
        for process, output, chunk in workers:
            process.wait()
            if output.exists():
                results.update(json.loads(output.read_text())["models"])
            for model_type in chunk:
                results.setdefault(model_type, {"class_name": model_type, "status": "fail", "checks": {},
                                                "error": f"worker exited with {process.returncode}"})
    return dict(sorted(results.items()))


def main(args: Any) -> int:
    """``nnterp run_tests``: sweep, print a summary, write the status file if asked."""
    known = causal_lm_types()
    by_class = {class_name: model_type for model_type, class_name in known.items()}
    model_types: list[str] = []
    if args.all:
        model_types = sorted(known)
    model_types += list(args.model_types or [])
    for class_name in args.class_names or []:
        if class_name not in by_class:
            print(f"nnterp: {class_name} is not a causal-LM class of transformers", file=sys.stderr)
            return 2
        model_types.append(by_class[class_name])
    models = run_sweep(list(dict.fromkeys(model_types)), jobs=args.jobs)
    for name in args.model_names or []:
        models[name] = sweep_model_name(name)
        print(f"{name}: {models[name]['status']} {models[name].get('error') or ''}")
    if not models:
        print("nnterp: nothing to test: pass --all, --model-types, --class-names or --model-names", file=sys.stderr)
        return 2
    counts = totals(models)
    print(
        f"standardized {counts['standardized']} / buildable {counts['buildable']} / total {counts['total']} "
        f"model types; attention probabilities on {counts['attention_probabilities']}"
    )
    if args.output:
        write_status(args.output, {"versions": installed_versions(), "totals": counts, "models": models})
        print(f"status written to {args.output}")
    return 0 if all(entry["status"] != "fail" for entry in models.values()) else 1
