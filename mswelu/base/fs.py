"""File-system primitives every writer shares: atomic replacement, fsync, content hashes.
:func:`atomic_write_text` writes a temporary file in the same folder, fsyncs it, renames it over the target
and fsyncs the folder, so a file is its old or its new content, never half of either.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "DiskFullError",
    "FolderBusyError",
    "FolderLock",
    "atomic_write_json",
    "explain_os_error",
    "atomic_write_text",
    "fsync_dir",
    "fsync_file",
    "leftovers",
    "pid_alive",
    "sha256_file",
]


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
    """Replace ``path`` with ``text`` atomically, with the usual permissions (not mkstemp's 0600)."""
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftovers(folder: str | os.PathLike[str], pattern: re.Pattern[str]) -> list[tuple[Path, re.Match[str]]]:
    """Folders in ``folder`` matching ``pattern`` (group ``pid``) whose writer is gone."""
    folder = Path(folder)
    found: list[tuple[Path, re.Match[str]]] = []
    if not folder.is_dir():
        return found
    for p in sorted(folder.iterdir()):
        m = pattern.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink():
            pid = int(m.group("pid"))
            if pid != os.getpid() and not pid_alive(pid):
                found.append((p, m))
    return found


class DiskFullError(OSError):
    """A write failed, or would fail, for lack of disk space (the message says what was kept)."""


def explain_os_error(exc: OSError) -> str:
    """One line for a file-system error a user can act on: which path, and what to do."""
    import errno

    if isinstance(exc, DiskFullError):
        return str(exc)
    where = f" {exc.filename}" if exc.filename else ""
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: permission denied (a read-only folder?); choose another output folder"
    if exc.errno == errno.ENOSPC:
        return f"the disk is full (writing{where}); free some space and run again"
    return f"{exc.strerror or exc}{where}"


LOCK_NAME = ".lock"


class FolderBusyError(ValueError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock`` while one process writes the folder; a second writer
    stops at once naming the holder. The kernel releases it however its process ends (no lock where ``fcntl``
    is missing)."""

    def __init__(self, folder: str | os.PathLike[str], what: str = "folder") -> None:
        self.folder, self.what = Path(folder), what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            import fcntl
        except ImportError:
            return self
        if self.folder.exists() and not self.folder.is_dir():  # mkdir would say only "File exists"
            raise ValueError(f"{self.what} {self.folder} exists and is not a folder: choose another path")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise FolderBusyError(
                f"{self.what} {self.folder} is being written by {holder}: wait for it to finish, stop it, "
                "or use another folder"
            ) from None
        import socket
        import time

        os.ftruncate(fd, 0)
        os.pwrite(
            fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0
        )
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
