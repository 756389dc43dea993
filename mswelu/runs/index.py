"""What the runs under a folder are and how far they got: ``python -m mswelu.runs list|show``.

    python -m mswelu.runs list [runs/] [--json]    # one line per run: status, steps, tokens, val bpb, ...
    python -m mswelu.runs show NAME [--json]       # one run in full: checkpoints, files, task scores

Status: ``running`` (a live process holds ``<run>/.lock``), ``finished`` / ``interrupted`` (from
``summary.json``; an interrupted run resumes), or ``failed`` (no holder, no summary; its newest complete
checkpoint still resumes it).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mswelu.base.fs import LOCK_NAME
from mswelu.base.paths import runs_dir
from mswelu.runs.folder import (
    CHECKPOINTS,
    CONFIG,
    FINAL,
    METRICS,
    SUMMARY,
    TASK_SCORES,
    TRACKER_STATE,
    list_runs,
    read_json,
    read_jsonl,
    resolve_run,
)
from mswelu.training import checkpoint as ckpt

__all__ = ["folder_size", "lock_holder", "main", "run_info", "run_status", "runs_info"]

REMOTE_FRESH_S = 900  # a lock held on another host counts as running while the run wrote this recently


def _locked_inodes() -> set[tuple[int, int, int]] | None:
    """(major, minor, inode) of every locked file, from ``/proc/locks``; None without it."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    found = set()
    for line in text.splitlines():
        parts = line.split()
        if "->" in parts:  # a process waiting for a lock, not holding one
            continue
        for part in parts:
            fields = part.split(":")
            if len(fields) == 3 and all(fields):
                try:
                    found.add((int(fields[0], 16), int(fields[1], 16), int(fields[2])))
                except ValueError:
                    continue
                break
    return found


def lock_holder(path: str | os.PathLike[str]) -> str | None:
    """Who holds the run's writer lock (``"pid 123 on host since 12:00:01"``), or None."""
    lock = Path(path) / LOCK_NAME
    try:
        st = lock.stat()
        text = lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    words = text.split()
    pid = int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else None
    host = words[3] if len(words) > 3 and words[2] == "on" else None
    locked = _locked_inodes()
    if locked is not None and (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in locked:
        return text or "another process"
    if host is not None and host != socket.gethostname():  # its lock is not visible from here
        return text if _remote_running(Path(path)) else None
    if locked is None and pid is not None:  # no /proc/locks: is the named process alive, and not done?
        summary = Path(path) / SUMMARY
        if summary.exists() and summary.stat().st_mtime >= st.st_mtime:
            return None  # it wrote its summary after taking the lock: that session is over
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return text
        return text
    return None


def _remote_running(path: Path) -> bool:
    """A run whose lock another host holds is running while it recently wrote its metrics."""
    times = [(path / f).stat().st_mtime for f in (METRICS, CONFIG) if (path / f).exists()]
    summary = (path / SUMMARY).stat().st_mtime if (path / SUMMARY).exists() else 0.0
    return bool(times) and time.time() - max(times) < REMOTE_FRESH_S and max(times) > summary


def run_status(path: str | os.PathLike[str]) -> str:
    """``running``, ``finished``, ``interrupted`` or ``failed`` (see the module docstring)."""
    path = Path(path)
    if lock_holder(path) is not None:
        return "running"
    summary = read_json(path / SUMMARY)
    if summary is not None:
        return "interrupted" if summary.get("interrupted") else "finished"
    return "failed"


def folder_size(path: Path) -> int:
    """Bytes of every file under ``path`` (links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return total


def _newest_checkpoint(path: Path) -> tuple[str | None, int | None]:
    complete = [p for p in ckpt.list_checkpoints(path / CHECKPOINTS) if (p / ckpt.MANIFEST).is_file()]
    if not complete:
        return None, None
    return complete[-1].name, int(complete[-1].name.split("_")[-1])


def run_info(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """One run's status, progress, figures, checkpoint, size, devices, task scores, trackers."""
    path = Path(path)
    config, summary = read_json(path / CONFIG) or {}, read_json(path / SUMMARY)
    records = read_jsonl(path / METRICS)
    steps = [r for r in records if r.get("loss") is not None]
    evals = [r for r in records if r.get("val_bpb") is not None]
    devices = [r for r in records if isinstance(r.get("device"), dict)]
    holder = lock_holder(path)
    status = run_status(path) if holder is None else "running"
    last = steps[-1] if steps else {}
    total = config.get("_total_steps")
    step = (summary or {}).get("steps", max((int(r.get("step", 0)) for r in records), default=0))
    tokens = (summary or {}).get("tokens", max((int(r.get("tokens", 0)) for r in records), default=0))
    rate = last.get("tokens_per_s")
    eta = None
    if status == "running" and rate and total and config.get("_tokens_per_step"):
        eta = max(0, total - step) * config["_tokens_per_step"] / rate
    name_of = path.name
    if root is not None:
        try:
            name_of = path.relative_to(root).as_posix()
        except ValueError:
            pass
    checkpoint, checkpoint_step = _newest_checkpoint(path)
    tasks = read_json(path / TASK_SCORES) or {}
    return {
        "name": name_of,
        "path": str(path),
        "status": status,
        "held_by": holder,
        "preset": config.get("preset"),
        "activation": (config.get("_model_config") or {}).get("activation", config.get("activation")),
        "step": step,
        "total_steps": total,
        "tokens": tokens,
        "loss": last.get("loss"),
        "tokens_per_s": rate,
        "eta_s": eta,
        "best_val_bpb": min((float(r["val_bpb"]) for r in evals), default=None),
        "val_bpb": float(evals[-1]["val_bpb"]) if evals else None,
        "final_val_bpb": (summary or {}).get("val_bpb") if status == "finished" else None,
        "final": (path / FINAL).is_dir(),
        "newest_checkpoint": checkpoint,
        "newest_checkpoint_step": checkpoint_step,
        "size_bytes": folder_size(path),
        "updated": _when(
            max((p.stat().st_mtime for p in (path / METRICS, path / CONFIG) if p.exists()), default=None)
        ),
        "device": devices[-1]["device"] if devices else None,
        "tasks": {t: s.get("acc", s.get("acc_norm")) for t, s in (tasks.get("tasks") or {}).items()},
        "trackers": sorted(read_json(path / TRACKER_STATE) or {}),
    }


def _when(stamp: float | None) -> str | None:
    return None if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def runs_info(root: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """:func:`run_info` of every run under ``root`` (default ``runs/``), newest first."""
    root = Path(root) if root is not None else runs_dir()
    return [run_info(p, root) for p in list_runs(root)]


def format_size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _f(value: Any, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _table(infos: Sequence[dict[str, Any]]) -> str:
    cols = (
        "run",
        "status",
        "steps",
        "tokens",
        "best bpb",
        "final bpb",
        "final/",
        "newest checkpoint",
        "size",
    )
    rows = [
        (
            i["name"],
            i["status"],
            f"{i['step']}/{i['total_steps'] or '?'}",
            f"{i['tokens']:,}",
            _f(i["best_val_bpb"], ".4f"),
            _f(i["final_val_bpb"], ".4f"),
            "yes" if i["final"] else "no",
            i["newest_checkpoint"] or "-",
            format_size(i["size_bytes"]),
        )
        for i in infos
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(cols, *rows, strict=False)]
    lines = ("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in [cols, *rows])
    return "\n".join(line.rstrip() for line in lines)


def _show(info: dict[str, Any]) -> str:
    lines = [f"{k:>22}  {v}" for k, v in info.items() if k not in ("device", "tasks")]
    for k, v in (info.get("device") or {}).items():
        lines.append(f"{'device ' + k:>22}  {v}")
    for k, v in (info.get("tasks") or {}).items():
        lines.append(f"{'task ' + k:>22}  {v}")
    path = Path(info["path"])
    for c in ckpt.list_checkpoints(path / CHECKPOINTS):
        complete = "complete" if (c / ckpt.MANIFEST).is_file() else "incomplete"
        lines.append(f"{'checkpoint':>22}  {c.name} ({complete}, {format_size(folder_size(c))})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mswelu.runs", description="The runs under a folder.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="every run under a folder (default runs/)")
    ls.add_argument("folder", nargs="?", help="where the runs are (default: runs/)")
    ls.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    sh = sub.add_parser("show", help="one run in full")
    sh.add_argument("name", help="a run name under runs/, or a run folder")
    sh.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.command == "list":
            root = Path(args.folder) if args.folder else runs_dir()
            if not root.is_dir():
                raise ValueError(f"no folder {root}")
            infos = runs_info(root)
            if args.json:
                print(json.dumps(infos, indent=2))
            else:
                print(_table(infos) if infos else f"no runs under {root}")
        else:
            path = resolve_run(args.name)
            if not (path / CONFIG).is_file() and not (path / METRICS).is_file():
                raise ValueError(f"{path} is not a run folder (no {CONFIG} or {METRICS})")
            info = run_info(path, path.parent)
            print(json.dumps(info, indent=2) if args.json else _show(info))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
