"""Where nnterp keeps files between sessions (converted models, validation records)."""

from __future__ import annotations

import hashlib
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


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 4 MiB blocks.

    Example:
        >>> file_sha256("model.gguf")
        '9f86d08...'
    """
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["cache_root", "file_sha256"]
