"""``nnterp doctor``: what is installed and whether it fits together, in one report.

Reports the versions (Python, torch, transformers, nnsight, pluggy, every installed nnterp
distribution), a co-installed nnterp 1.x, the plugins and what each registers, the status
registry's files, the status of every causal-LM model type of the installed transformers
(standardized / failing / untested here, per the registry), and the caches (validation records,
the converted default models, the user-local status registry). Problems found are listed last;
the command exits 1 when there is one.

Example:
    >>> report = collect()
    >>> report.model_types["standardized"] > 0
    True
    >>> print(format_report(report))
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from nnterp.tables import format_table

#: Third-party packages whose versions nnterp depends on, in report order.
STACK = ("torch", "transformers", "nnsight", "pluggy", "huggingface_hub")


@dataclass
class DoctorReport:
    """Everything ``nnterp doctor`` prints.

    Attributes:
        versions: ``{package: version}``: python, the `STACK` packages ("missing" when absent).
        nnterp_distributions: ``{distribution: version}`` of the installed nnterp-* distributions.
        legacy: The version of a co-installed nnterp 1.x (the distribution ``nnterp``), or None.
        plugins: One row per plugin: name, distribution, version, error (or None), and the
            counts of what it registered.
        status_files: One row per registry file: source, path, entries, problem (or None).
        transformers_types: The number of causal-LM model types of the installed transformers.
        model_types: Counts per verdict: ``standardized``, ``failing``, ``untested`` and
            ``other_versions`` (tested only with versions outside the tested rule).
        by_verdict: The model types behind each count.
        caches: One row per cache: name, path, state.
        problems: What looks wrong, one sentence each, with the fix.
    """

    versions: dict[str, str] = field(default_factory=dict)
    nnterp_distributions: dict[str, str] = field(default_factory=dict)
    legacy: str | None = None
    plugins: list[dict[str, Any]] = field(default_factory=list)
    status_files: list[dict[str, Any]] = field(default_factory=list)
    transformers_types: int = 0
    model_types: dict[str, int] = field(default_factory=dict)
    by_verdict: dict[str, list[str]] = field(default_factory=dict)
    caches: list[dict[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "missing"


def nnterp_distributions() -> dict[str, str]:
    """``{distribution: version}`` of every installed ``nnterp-*`` distribution.

    Example:
        >>> nnterp_distributions()["nnterp-core"]
        '2.0.0'
    """
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith("nnterp-") and name != "nnterp-workspace":
            found[name] = dist.version
    return dict(sorted(found.items()))


def _plugins(report: DoctorReport) -> None:
    from nnterp.plugins import get_registry

    registry = get_registry()
    for plugin in registry.plugins:
        specs = [
            spec for spec, owner in registry.architectures if owner.name == plugin.name
        ]
        report.plugins.append(
            {
                "name": plugin.name,
                "distribution": plugin.distribution,
                "version": plugin.version,
                "error": plugin.error,
                "architectures": len(specs),
                "interventions": sum(
                    i.plugin.name == plugin.name
                    for i in registry.interventions.values()
                ),
                "commands": sum(
                    c.plugin.name == plugin.name for c in registry.commands.values()
                ),
                "status_files": sum(
                    owner.name == plugin.name
                    for owner in registry.status_file_owners.values()
                ),
            }
        )
        if plugin.error:
            report.problems.append(
                f"plugin {plugin.name!r} ({plugin.distribution} {plugin.version}) failed: {plugin.error}; "
                f"reinstall or uninstall {plugin.distribution}."
            )


def _registry_sources() -> list[tuple[str, str]]:
    """``(source, path)`` of every status file the warning may consult, lowest precedence first."""
    from nnterp import status
    from nnterp.plugins import get_registry

    owners = get_registry().status_file_owners
    core = str(status.CORE_STATUS_FILE)
    sources = [("nnterp-core", core)]
    for path in status.shipped_status_files():
        if path != core:
            sources.append(
                (owners[path].distribution if path in owners else "plugin", path)
            )
    user = status.user_registry_path()
    if user is not None:
        sources.append(("user-local", str(user)))
    return sources


def _status_files(report: DoctorReport) -> None:
    from nnterp import status

    sources = _registry_sources()
    for source, path in sources:
        if not Path(path).exists():
            state = "absent" if source == "user-local" else "missing"
            report.status_files.append(
                {"source": source, "path": path, "entries": 0, "problem": state}
            )
            if source == "nnterp-core":
                report.problems.append(
                    f"nnterp-core's status file {path} is missing: reinstall nnterp-core."
                )
            continue
        document, problem = status.inspect_status_file(path)
        entries = len(document.get("models", {})) if document is not None else 0
        report.status_files.append(
            {"source": source, "path": path, "entries": entries, "problem": problem}
        )
        if problem is not None:
            fix = (
                "delete it; `nnterp run_tests` writes it again"
                if source == "user-local"
                else f"reinstall {source}"
            )
            report.problems.append(
                f"the status file {path} ({source}) is ignored: {problem}; {fix}."
            )


def _model_types(report: DoctorReport) -> None:
    from nnterp.status import verdict_for
    from nnterp.testing.sweep import causal_lm_types

    names = {
        "pass": "standardized",
        "fail": "failing",
        "untested": "untested",
        "other_versions": "other_versions",
    }
    by_verdict: dict[str, list[str]] = {label: [] for label in names.values()}
    known = causal_lm_types()
    for model_type, class_name in sorted(known.items()):
        by_verdict[names[verdict_for(class_name, model_type).state]].append(model_type)
    report.transformers_types = len(known)
    report.by_verdict = by_verdict
    report.model_types = {label: len(types) for label, types in by_verdict.items()}


def _folder_size(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _caches(report: DoctorReport) -> None:
    from nnterp import default_model, validation_cache
    from nnterp.status import user_registry_path
    from nnterp.storage import cache_root

    root = cache_root()
    report.caches.append(
        {
            "cache": "cache root",
            "path": str(root),
            "state": "exists" if root.is_dir() else "absent",
        }
    )
    folder = validation_cache.directory()
    records = list(folder.glob("*.json")) if folder.is_dir() else []
    switch = (
        "on" if validation_cache.enabled() else f"off ({validation_cache.ENV_SWITCH}=0)"
    )
    report.caches.append(
        {
            "cache": "validation records",
            "path": str(folder),
            "state": f"{switch}; {len(records)} records, {_size(sum(p.stat().st_size for p in records))}",
        }
    )
    for name, model in default_model.SHIPPED_MODELS.items():
        target = root / name
        source = (
            "installed"
            if _has_module(model.source_module)
            else f"not installed (`{model.install_command}`)"
        )
        if not target.is_dir():
            state = f"not converted yet; source package {source}"
        else:
            missing = [
                f
                for f in ("config.json", "model.safetensors", default_model.MARKER_NAME)
                if not (target / f).is_file()
            ]
            shape = (
                f"incomplete (no {', '.join(missing)}): rebuilt at next load"
                if missing
                else "converted"
            )
            state = f"{shape}, {_size(_folder_size(target))}; source package {source}"
        report.caches.append(
            {"cache": f"model {name}", "path": str(target), "state": state}
        )
    user = user_registry_path()
    report.caches.append(
        {
            "cache": "user-local status registry",
            "path": str(user) if user is not None else "-",
            "state": "off"
            if user is None
            else ("exists" if user.exists() else "absent (nnterp run_tests writes it)"),
        }
    )


def _has_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def collect() -> DoctorReport:
    """Gather the report (imports torch and transformers; builds no model).

    Example:
        >>> collect().versions["transformers"]
        '5.24.0'
    """
    from nnterp.compat import legacy_distribution_version

    report = DoctorReport()
    report.versions = {
        "python": platform.python_version(),
        **{name: _version(name) for name in STACK},
    }
    report.nnterp_distributions = nnterp_distributions()
    report.legacy = legacy_distribution_version()
    if report.legacy is not None:
        report.problems.append(
            f"nnterp {report.legacy} (nnterp 1.x, the distribution `nnterp`) is installed next to nnterp 2: "
            "`pip uninstall -y nnterp`, then reinstall the nnterp-* distributions with "
            "`pip install --force-reinstall --no-deps` (they share files with it)."
        )
    _plugins(report)
    _status_files(report)
    _model_types(report)
    _caches(report)
    return report


def format_report(report: DoctorReport, verbose: bool = False) -> str:
    """The report as text: one labelled table per section, then the problems.

    Args:
        report: From `collect`.
        verbose: Also list the model types behind each verdict.
    """
    lines = [f"nnterp doctor (python {sys.executable})", "", "versions"]
    rows = [[name, version] for name, version in report.versions.items()]
    rows += [[name, version] for name, version in report.nnterp_distributions.items()]
    rows.append(
        ["nnterp 1.x (distribution `nnterp`)", report.legacy or "not installed"]
    )
    lines.append(format_table(["package", "version"], rows, indent="  "))
    lines += ["", "plugins"]
    lines.append(
        format_table(
            [
                "plugin",
                "distribution",
                "version",
                "architectures",
                "interventions",
                "commands",
                "status files",
                "state",
            ],
            [
                [
                    p["name"],
                    p["distribution"],
                    p["version"],
                    p["architectures"],
                    p["interventions"],
                    p["commands"],
                    p["status_files"],
                    "FAILED: " + p["error"] if p["error"] else "ok",
                ]
                for p in report.plugins
            ],
            indent="  ",
        )
    )
    lines += ["", "status registry files (later rows win)"]
    lines.append(
        format_table(
            ["source", "entries", "state", "path"],
            [
                [f["source"], f["entries"], f["problem"] or "ok", f["path"]]
                for f in report.status_files
            ],
            indent="  ",
        )
    )
    counts = report.model_types
    title = (
        f"causal-LM model types of transformers {report.versions.get('transformers')}: "
        f"{report.transformers_types}, per the status registry"
    )
    lines += ["", title]
    labels = {
        "standardized": "standardized (passed here)",
        "failing": "failing (a check failed, or not buildable)",
        "untested": "untested (in no status file)",
        "other_versions": "tested only with other versions",
    }
    verdict_rows = []
    for key, label in labels.items():
        names = ", ".join(report.by_verdict.get(key, [])) if verbose else ""
        verdict_rows.append(
            [label, counts.get(key, 0), names]
            if verbose
            else [label, counts.get(key, 0)]
        )
    headers = (
        ["verdict", "model types", "which"] if verbose else ["verdict", "model types"]
    )
    lines.append(format_table(headers, verdict_rows, indent="  "))
    lines += ["", "caches"]
    lines.append(
        format_table(
            ["cache", "state", "path"],
            [[c["cache"], c["state"], c["path"]] for c in report.caches],
            indent="  ",
        )
    )
    lines.append("")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {problem}" for problem in report.problems]
    else:
        lines.append("no problems found")
    return "\n".join(lines)


def run(args: Any) -> int:
    """``nnterp doctor``: print the report; exit 1 when it lists a problem."""
    report = collect()
    print(format_report(report, verbose=getattr(args, "verbose", False)))
    return 1 if report.problems else 0


__all__ = ["DoctorReport", "collect", "format_report", "nnterp_distributions", "run"]
