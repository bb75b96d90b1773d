"""Where nnterp keeps files between sessions (converted models, validation records)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The nnterp cache root: ``$NNTERP_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnterp``, else
    ``~/.cache/nnterp``.

    Example:
        >>> cache_root()
        PosixPath('/home/me/.cache/nnterp')
    """
    override = os.environ.get("NNTERP_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nnterp"


__all__ = ["cache_root"]
