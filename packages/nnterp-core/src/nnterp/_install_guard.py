"""The check that nnterp 1.x is not installed next to nnterp 2, with no dependency beyond the
standard library and `nnterp.errors`, so that it can run from any file of the ``nnterp/`` folder.

Two orders of installation leave a mixture in the shared folder:

- nnterp 1.x, then nnterp-core: 2.0's ``__init__`` runs and calls `refuse_legacy_install`;
- nnterp-core, then nnterp 1.x: 1.x's ``__init__``, ``standardized_transformer`` and
  ``nnsight_utils`` overwrite 2.0's, but 1.x's modules all import ``nnterp.logging`` first, and
  2.0's ``nnterp/logging/`` package takes precedence over 1.x's ``logging.py`` module, so the
  check runs there.

Example:
    >>> from nnterp._install_guard import legacy_distribution_version
    >>> legacy_distribution_version()      # nothing of nnterp 1.x installed
"""

from __future__ import annotations

from nnterp.errors import NnterpError


class ConflictingInstallError(NnterpError, ImportError):
    """nnterp 1.x (the distribution ``nnterp``) is installed next to nnterp-core 2: both put
    their files in the same ``nnterp/`` folder, so the code that runs is a mixture.

    The message gives the fix: uninstall ``nnterp``, then reinstall the nnterp-* distributions
    (uninstalling ``nnterp`` also deletes the files the two share).
    """


def legacy_distribution_version() -> str | None:
    """The version of an installed nnterp 1.x distribution (``nnterp`` < 2), or ``None``.

    Example:
        >>> legacy_distribution_version()      # nothing of nnterp 1.x installed
    """
    from importlib import metadata

    try:
        version = str(metadata.version("nnterp"))
    except metadata.PackageNotFoundError:
        return None
    major = version.split(".", 1)[0]
    return version if major.isdigit() and int(major) < 2 else None


def refuse_legacy_install() -> None:
    """Raise `ConflictingInstallError` when nnterp 1.x is installed in this environment.

    Called by ``import nnterp``.
    """
    from importlib import metadata

    version = legacy_distribution_version()
    if version is None:
        return
    ours: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] or ""
        normalized = name.lower().replace("_", "-")
        if normalized.startswith("nnterp-") and normalized != "nnterp-workspace":
            ours[normalized] = dist.version
    ours = ours or {"nnterp-core": ""}
    reinstall = " ".join(f"{name}=={v}" if v else name for name, v in sorted(ours.items()))
    raise ConflictingInstallError(
        f"nnterp {version} (the distribution `nnterp`, nnterp 1.x) is installed in this environment "
        f"together with nnterp 2 ({', '.join(sorted(ours))}); both install into the same `nnterp/` "
        "folder, so the code that would run is a mixture of the two. Fix: uninstall nnterp 1.x, "
        "then reinstall nnterp-core and its siblings (uninstalling `nnterp` also deletes files "
        "they share with it):\n"
        "    pip uninstall -y nnterp\n"
        f"    pip install --force-reinstall --no-deps {reinstall}"
    )
