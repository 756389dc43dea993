"""File-system primitives every writer shares: atomic replacement, fsync, content hashes.

A file written with :func:`atomic_write_text` is either its old content or its new content, never half
of either: the text goes to a temporary file in the same folder, is fsync'ed, renamed over the target
(``os.replace``, atomic on POSIX and Windows) and the folder is fsync'ed so the rename survives a crash.
A failed write removes its temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_json", "atomic_write_text", "fsync_dir", "fsync_file", "sha256_file"]


def fsync_file(path: str | os.PathLike[str]) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename inside ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Replace ``path`` with ``text`` atomically (see the module docstring); the file gets the usual
    permissions (0666 minus the umask), not mkstemp's private 0600. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """:func:`atomic_write_text` of ``obj`` as indented JSON (non-JSON values as ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
