"""Generate the "Supported architectures" table from nnterp-models-contrib's status file.

The status file (``packages/nnterp-models-contrib/src/nnterp/contrib/status.json``) is written
by ``nnterp run_tests --all --output ...`` (see `nnterp.testing.sweep`). Without it, the page
lists the architecture specs that nnterp-core and nnterp-models-contrib register, untested.

Used by the mkdocs hook ``docs/hooks.py``; also runnable alone::

    python docs/gen_architectures.py            # prints the Markdown
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The status file; ``NNTERP_DOCS_STATUS_FILE`` points the build at another one (to preview a sweep).
STATUS_FILE = Path(
    os.environ.get("NNTERP_DOCS_STATUS_FILE")
    or ROOT / "packages" / "nnterp-models-contrib" / "src" / "nnterp" / "contrib" / "status.json"
)
#: The distributions whose specs the page covers (a locally installed third-party plugin is not
#: part of nnterp's supported set).
OWN_DISTRIBUTIONS = ("nnterp-core", "nnterp-models-contrib")
SOURCE_DIRS = [ROOT / "packages" / name / "src" for name in ("nnterp-core", "nnterp-models-contrib")]

_STATUS_LABELS = {
    "pass": "✅ standardized",
    "fail": "❌ fails a check",
    "build_error": "⚪ no tiny model",
    "forward_error": "⚪ no forward on a prompt",
}


def load_status(path: Path = STATUS_FILE) -> dict[str, Any] | None:
    """The status document, or ``None`` when the file does not exist yet."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def registered_specs() -> dict[str, tuple[str, str]]:
    """``{HF class name: (spec name, distribution)}`` for nnterp's own specs."""
    for directory in SOURCE_DIRS:
        if str(directory) not in sys.path:
            sys.path.append(str(directory))
    from nnterp.plugins import PluginWarning, get_registry

    with warnings.catch_warnings():
        # The light docs environment has no torch: nnterp-interventions' plugins cannot import
        # there, and they register no architecture. Any other plugin failure is still reported.
        warnings.filterwarnings(
            "ignore", r"nnterp plugin '[\w-]+' from nnterp-interventions .*No module named 'torch'", PluginWarning
        )
        architectures = get_registry().architectures
    covered: dict[str, tuple[str, str]] = {}
    for spec, plugin in architectures:
        if plugin.distribution not in OWN_DISTRIBUTIONS:
            continue
        for class_name in spec.model_classes:
            covered[class_name] = (spec.name, plugin.distribution)
    return covered


def _cell(text: Any) -> str:
    """``text`` made safe inside a Markdown table cell."""
    return (
        str(text).replace("\n", " ").replace("|", "\\|").replace("`", "'").replace("<", "&lt;").replace(">", "&gt;")
    )


def _failed_checks(entry: dict[str, Any]) -> str:
    failed = [name for name, result in entry.get("checks", {}).items() if result == "fail"]
    parts = []
    if failed:
        parts.append("failed: " + ", ".join(f"`{name}`" for name in failed))
    if entry.get("error"):
        error = str(entry["error"])
        parts.append(_cell(error if len(error) <= 160 else error[:157] + "..."))
    return "; ".join(parts)


def _identity(entry: dict[str, Any]) -> str:
    """The residual-identity cell: the check's result, with the reason when unavailable."""
    result = entry.get("checks", {}).get("residual_identity", "—")
    unsupported = entry.get("unsupported", {})
    reason = unsupported.get("mixers_output") or unsupported.get("mlps_output")
    if result == "unavailable" and isinstance(reason, str):
        short = reason.split(":")[0]
        return f"unavailable ({_cell(short[:80])})"
    return _cell(result)


def render_status(document: dict[str, Any], specs: dict[str, tuple[str, str]]) -> str:
    """The Markdown of a status document: versions, totals and one row per model type."""
    models: dict[str, dict[str, Any]] = document.get("models", {})
    from nnterp.plugins import get_registry

    not_standardized = get_registry().unsupported_models
    versions = document.get("versions", {})
    lines = []
    if versions:
        tested_with = ", ".join(f"{name} {version}" for name, version in sorted(versions.items()))
        lines.append(f"Tested with {tested_with}.\n")
    counts: dict[str, int] = {}
    for entry in models.values():
        counts[entry.get("status", "unknown")] = counts.get(entry.get("status", "unknown"), 0) + 1
    summary = ", ".join(f"{count} {_STATUS_LABELS.get(status, status)}" for status, count in sorted(counts.items()))
    lines.append(f"**{len(models)} model types**: {summary}.\n")
    lines.append(
        "The *residual identity* column is the conformance check that `layers_input + mixers_output + "
        "mlps_output == layers_output` on every layer; where it is unavailable, the reason is what "
        "`model.support()` reports.\n"
    )
    lines.append("| model type | class | status | residual identity | attention probabilities | spec | notes |")
    lines.append("|---|---|---|---|---|---|---|")
    for model_type, entry in sorted(models.items()):
        class_name = entry.get("class_name", model_type)
        spec_name, distribution = specs.get(class_name, ("—", ""))
        spec = f"`{spec_name}` ({distribution})" if distribution else spec_name
        attention = entry.get("checks", {}).get("attention_probabilities", "—")
        status = _STATUS_LABELS.get(entry.get("status", ""), entry.get("status", "?"))
        notes = _failed_checks(entry)
        if model_type in not_standardized:
            notes = f"not standardized: {_cell(not_standardized[model_type])}"
        lines.append(
            f"| `{_cell(model_type)}` | `{_cell(class_name)}` | {status} | {_identity(entry)} | {_cell(attention)} "
            f"| {spec} | {notes} |"
        )
    return "\n".join(lines) + "\n"


def render_specs_only(specs: dict[str, tuple[str, str]]) -> str:
    """The Markdown when no status file exists: the registered specs, not yet swept."""
    lines = [
        '!!! warning "No status file yet"',
        "    `packages/nnterp-models-contrib/src/nnterp/contrib/status.json` has not been generated,",
        "    so the classes below have specs but no recorded test results. Generate it with",
        "    `nnterp run_tests --all --output packages/nnterp-models-contrib/src/nnterp/contrib/status.json`.",
        "",
        "| class | spec | distribution |",
        "|---|---|---|",
    ]
    for class_name, (spec_name, distribution) in sorted(specs.items()):
        lines.append(f"| `{class_name}` | `{spec_name}` | {distribution} |")
    return "\n".join(lines) + "\n"


def render(path: Path = STATUS_FILE) -> str:
    """The page's generated table, from the status file when it exists."""
    specs = registered_specs()
    document = load_status(path)
    if document is None:
        return render_specs_only(specs)
    return render_status(document, specs)


if __name__ == "__main__":
    print(render())
