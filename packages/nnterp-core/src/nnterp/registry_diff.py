"""What changed between the shipped status registry and a fresh sweep (the fresh-release check).

``nnterp check-release`` (``nnterp run_tests --all --diff``) sweeps every causal-LM model type
of the installed transformers and compares the result with the registry the installed nnterp
distributions ship (`nnterp.status.shipped_models`), so a new transformers release is assessed
in one command. Per model type it reports:

- **newly failing**: passed in the shipped registry, does not pass now (a regression);
- **newly passing**: did not pass, passes now;
- **new types**: swept now, absent from the shipped registry;
- **removed types**: in the shipped registry, no longer a causal-LM type of transformers;
- **changed**: same status, but another reason (error) or other check results; a check that
  passed and no longer does, or that newly fails, is a regression;
- **no verdict**: the fresh run timed out (rerun it; not a regression);
- **untested here**: differs, but the shipped result was measured on other transformers
  versions only (``tested_with``), so it makes no claim about this one (not a regression).

Example:
    >>> diff = diff_registries(shipped_models(), run_sweep(["llama", "gpt2"]), causal_lm_types())
    >>> diff.regressed
    False
    >>> print(format_diff(diff))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from nnterp.tables import format_table

PASS = "pass"


@dataclass(frozen=True)
class Change:
    """One model type that differs between the two registries.

    Attributes:
        model_type: The transformers model type.
        before: Its status in the shipped registry (None when absent).
        after: Its status in the fresh sweep (None when absent).
        detail: What changed, in words (the new error, the checks that moved).
        regression: Whether this change makes the release worse for nnterp.
    """

    model_type: str
    before: str | None
    after: str | None
    detail: str = ""
    regression: bool = False


@dataclass(frozen=True)
class RegistryDiff:
    """The differences between a shipped registry and a fresh sweep, by kind (see the module
    docstring); ``unchanged`` counts the types swept with identical results."""

    newly_failing: list[Change] = field(default_factory=list)
    newly_passing: list[Change] = field(default_factory=list)
    new_types: list[Change] = field(default_factory=list)
    removed_types: list[Change] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    no_verdict: list[Change] = field(default_factory=list)
    untested_here: list[Change] = field(default_factory=list)
    unchanged: int = 0

    @property
    def regressions(self) -> list[Change]:
        """Every change that is a regression (newly failing types, checks lost)."""
        return [
            change
            for kind in self.kinds().values()
            for change in kind
            if change.regression
        ]

    @property
    def regressed(self) -> bool:
        """Whether anything regressed (``nnterp check-release`` then exits 1)."""
        return bool(self.regressions)

    def kinds(self) -> dict[str, list[Change]]:
        """The changes by kind, in report order: ``{label: changes}``."""
        return {
            "newly failing": self.newly_failing,
            "newly passing": self.newly_passing,
            "new type": self.new_types,
            "removed type": self.removed_types,
            "changed": self.changed,
            "no verdict": self.no_verdict,
            "untested here": self.untested_here,
        }


def _error(entry: dict[str, Any]) -> str:
    return str(entry.get("error") or "")


def _checks_moved(
    before: dict[str, Any], after: dict[str, Any]
) -> tuple[list[str], bool]:
    """Descriptions of the checks whose result differs, and whether one of them regressed."""
    old, new = before.get("checks", {}) or {}, after.get("checks", {}) or {}
    moved, regressed = [], False
    for name in sorted(set(old) | set(new)):
        was, now = old.get(name, "-"), new.get(name, "-")
        if was == now:
            continue
        moved.append(f"{name} {was} -> {now}")
        if (was == PASS and now != PASS) or (now == "fail" and was != "fail"):
            regressed = True
    return moved, regressed


def _timed_out(entry: dict[str, Any]) -> bool:
    return _error(entry).startswith("timeout")


def _tested_on(entry: dict[str, Any], transformers_version: str | None) -> bool:
    """Whether ``entry`` claims a result on ``transformers_version`` (entries without
    ``tested_with``, and ``None`` for the version, claim every version)."""
    tested = (entry.get("tested_with") or {}).get("transformers")
    return transformers_version is None or not tested or transformers_version in tested


def diff_registries(
    shipped: dict[str, dict[str, Any]],
    fresh: dict[str, dict[str, Any]],
    available: Iterable[str] | None = None,
    transformers_version: str | None = None,
) -> RegistryDiff:
    """Compare ``fresh`` sweep results with the ``shipped`` registry, both ``{model_type: entry}``.

    Args:
        shipped: The entries shipped (e.g. `nnterp.status.shipped_models`).
        fresh: The entries just measured (e.g. `nnterp.testing.sweep.run_sweep`); may cover a
            subset of the types: types not swept are not compared.
        available: The model types the installed transformers has; a shipped type outside it
            is a removed type. Default: the shipped types not in ``fresh`` count as removed.
        transformers_version: The installed transformers; a type whose shipped result was
            measured on other versions only is reported as untested here, never a regression.

    Returns:
        A `RegistryDiff`; each list sorted by model type.

    Example:
        >>> diff = diff_registries({"a": {"status": "pass"}}, {"a": {"status": "fail", "error": "boom"}})
        >>> [(c.model_type, c.before, c.after, c.detail) for c in diff.newly_failing]
        [('a', 'pass', 'fail', 'boom')]
    """
    still_there = set(available) if available is not None else set(fresh)
    diff = RegistryDiff()
    unchanged = 0
    for model_type in sorted(set(shipped) - still_there):
        diff.removed_types.append(
            Change(model_type, shipped[model_type].get("status"), None)
        )
    for model_type in sorted(fresh):
        after = fresh[model_type]
        now = after.get("status")
        if model_type not in shipped:
            diff.new_types.append(Change(model_type, None, now, _error(after)))
            continue
        before = shipped[model_type]
        was = before.get("status")
        if _timed_out(after) and not _timed_out(before):
            diff.no_verdict.append(Change(model_type, was, now, _error(after)))
            continue
        moved, checks_regressed = _checks_moved(before, after)
        differs = was != now or _error(before) != _error(after) or bool(moved)
        if differs and not _tested_on(before, transformers_version):
            diff.untested_here.append(Change(model_type, was, now, _error(after) or "; ".join(moved)))
            continue
        if was == PASS and now != PASS:
            diff.newly_failing.append(
                Change(model_type, was, now, _error(after) or "; ".join(moved), True)
            )
        elif was != PASS and now == PASS:
            diff.newly_passing.append(Change(model_type, was, now, "; ".join(moved)))
        elif was != now or _error(before) != _error(after) or moved:
            parts = (
                [f"error: {_error(after) or '(none)'}"]
                if _error(before) != _error(after)
                else []
            ) + moved
            diff.changed.append(
                Change(model_type, was, now, "; ".join(parts), checks_regressed)
            )
        else:
            unchanged += 1
    return replace(diff, unchanged=unchanged)


def format_diff(diff: RegistryDiff, width: int = 160) -> str:
    """The diff as a labelled table (one row per changed type, details cut to ``width``
    characters) and a summary line.

    Example:
        >>> print(format_diff(diff_registries({"a": {"status": "pass"}}, {"a": {"status": "fail"}})))
        change         model type  shipped  fresh  regression  detail
        ...
    """
    rows = [
        [
            label,
            change.model_type,
            change.before or "-",
            change.after or "-",
            "yes" if change.regression else "",
            change.detail[:width],
        ]
        for label, changes in diff.kinds().items()
        for change in changes
    ]
    counts = ", ".join(
        f"{len(changes)} {label}" for label, changes in diff.kinds().items()
    )
    summary = f"{counts}, {diff.unchanged} unchanged; " + (
        f"{len(diff.regressions)} regression(s)" if diff.regressed else "no regression"
    )
    if not rows:
        return summary
    table = format_table(
        ["change", "model type", "shipped", "fresh", "regression", "detail"], rows
    )
    return f"{table}\n{summary}"


__all__ = ["Change", "RegistryDiff", "diff_registries", "format_diff"]
