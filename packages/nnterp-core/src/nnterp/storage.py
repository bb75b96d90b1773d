"""Where nnterp keeps files between sessions (converted models, validation records)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


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


def write_json_atomically(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON into ``path`` through a temporary file renamed into place, so a
    reader sees the old file or the new one, never half of one. The rename also gives ``path``
    a new inode: a hard-linked copy of the old file elsewhere is left untouched.

    Raises:
        OSError: the folder cannot be written (nothing is left behind).

    Example:
        >>> write_json_atomically(cache_root() / "note.json", {"format": 1})
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(json.dumps(data, indent=1) + "\n")
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


__all__ = ["cache_root", "file_sha256", "write_json_atomically"]
