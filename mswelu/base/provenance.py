"""Where a result came from (package versions, git commit and dirtiness, Python, machine, device, threads),
recorded in every report's ``metrics.json``.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import subprocess
import sys
from typing import Any

from mswelu.base.paths import project_root

__all__ = ["PACKAGES", "code_version", "git_state", "provenance"]

#: Packages whose versions change results or their meaning.
PACKAGES = (
    "mswelu",
    "torch",
    "transformers",
    "datasets",
    "numpy",
    "tiktoken",
    "mamba-ssm",
    "causal-conv1d",
    "triton",
    "papermill",
)


def git_state() -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool}`` of the project checkout, or ``{"commit": None}`` outside one."""
    root = project_root()
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def code_version() -> str:
    """A digest of the package's own source: equal digests, the same code, whatever the git history."""
    import hashlib
    from pathlib import Path

    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    """Versions, git state, Python, platform, device and threads, as plain JSON values."""
    info: dict[str, Any] = {
        "versions": _versions(),
        "git": git_state(),
        "code": code_version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    if "torch" in sys.modules or info["versions"].get("torch"):
        import torch

        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = f"cuda: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
        else:
            info["device"] = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return info
