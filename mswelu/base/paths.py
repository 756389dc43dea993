"""Where the workbook keeps data, runs and reports, anchored at the project root: nbval and papermill run
notebooks from different working directories.
"""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The checkout's root (``MSWELU_HOME`` overrides), from the cwd, then this file; else the cwd."""
    env = os.environ.get("MSWELU_HOME")
    if env:
        return Path(env).expanduser().resolve()
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if (candidate / "pyproject.toml").is_file() and (candidate / "mswelu").is_dir():
                return candidate
    return Path.cwd().resolve()


def data_dir() -> Path:
    """Prepared token datasets (``<root>/data``)."""
    return project_root() / "data"


def runs_dir() -> Path:
    """Training runs (``<root>/runs``)."""
    return project_root() / "runs"


def reports_dir() -> Path:
    """HTML reports and metrics (``<root>/reports``)."""
    return project_root() / "reports"


def cache_dir() -> Path:
    """Downloaded or extracted raw inputs (``MSWELU_CACHE`` or ``~/.cache/mswelu``)."""
    return Path(os.environ.get("MSWELU_CACHE", Path.home() / ".cache" / "mswelu")).expanduser()


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the project root when inside it (committed outputs carry no machine's paths)."""
    p = Path(path).expanduser().resolve()
    try:
        return str(p.relative_to(project_root()))
    except ValueError:
        return str(p)
