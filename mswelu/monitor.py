"""Every run at a glance, and a run's device figures over time.

    python -m mswelu.monitor [runs/]             # one line per run, newest first
    python -m mswelu.monitor --watch [SECONDS]   # the same, refreshed (default every 5 s) until Ctrl-C
    python -m mswelu.monitor --running           # only the runs a process is writing now

For reports, :func:`device_frame`, :func:`device_summary` and :func:`plot_devices` turn a run's device samples
into a table, one row per figure, and a figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu.base.paths import runs_dir
from mswelu.base.progress import format_duration
from mswelu.runs.index import runs_info

__all__ = ["device_frame", "device_summary", "format_devices", "format_run", "main", "plot_devices"]


def format_devices(device: Mapping[str, float] | None) -> str:
    """``cpu 195%  rss 1.2G  gpu0 97% 40.1/80.0G 65C 300W`` from one device sample."""
    if not device:
        return ""
    parts = []
    if device.get("cpu_percent") is not None:
        parts.append(f"cpu {device['cpu_percent']:.0f}%")
    if device.get("rss_gb") is not None:
        parts.append(f"rss {device['rss_gb']:.1f}G")
    i = 0
    while f"gpu{i}_util" in device or f"gpu{i}_mem_used_gb" in device:
        g = [f"gpu{i}"]
        if f"gpu{i}_util" in device:
            g.append(f"{device[f'gpu{i}_util']:.0f}%")
        if f"gpu{i}_mem_used_gb" in device:
            g.append(f"{device[f'gpu{i}_mem_used_gb']:.1f}/{device.get(f'gpu{i}_mem_total_gb', 0):.1f}G")
        if f"gpu{i}_temp_c" in device:
            g.append(f"{device[f'gpu{i}_temp_c']:.0f}C")
        if f"gpu{i}_power_w" in device:
            g.append(f"{device[f'gpu{i}_power_w']:.0f}W")
        parts.append(" ".join(g))
        i += 1
    return "  ".join(parts)


def format_run(info: Mapping[str, Any], width: int = 0) -> str:
    """One run's line: status, step, loss, val bpb, tokens/s, ETA and devices."""
    parts = [info["name"].ljust(width), info["status"].ljust(11)]
    parts.append(f"step {info['step']}/{info['total_steps'] or '?'}")
    if info.get("loss") is not None:
        parts.append(f"loss {info['loss']:.4f}")
    if info.get("val_bpb") is not None:
        parts.append(f"val {info['val_bpb']:.3f} bpb")
    if info.get("tokens_per_s"):
        parts.append(f"{info['tokens_per_s']:,.0f} tok/s")
    if info["status"] == "running":
        parts.append(f"ETA {format_duration(info.get('eta_s'))}")
    devices = format_devices(info.get("device"))
    if devices:
        parts.append(devices)
    return "  ".join(parts)


def render(root: Path, running_only: bool = False) -> str:
    infos = [i for i in runs_info(root) if not running_only or i["status"] == "running"]
    if not infos:
        return f"no {'running ' if running_only else ''}runs under {root}"
    width = max(len(i["name"]) for i in infos)
    return "\n".join(format_run(i, width) for i in infos)


def device_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A run's device samples, one row per sample: ``time_s`` since the first, ``step``, each figure."""
    rows = [
        {"time": r.get("time"), "step": r.get("step"), **r["device"]}
        for r in records
        if isinstance(r.get("device"), Mapping)
    ]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    df.insert(0, "time_s", df["time"] - df["time"].iloc[0])
    return df.drop(columns="time")


def device_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per figure: mean, max and last over the run (for a report's table)."""
    cols = [c for c in frame.columns if c not in ("time_s", "step")]
    if frame.empty or not cols:
        return pd.DataFrame(columns=["mean", "max", "last"])
    return pd.DataFrame(
        {"mean": frame[cols].mean(), "max": frame[cols].max(), "last": frame[cols].iloc[-1]}
    ).round(3)


def plot_devices(frame: pd.DataFrame, title: str | None = None) -> Any:
    """A Figure of the device figures over time, one panel each (CPU, memory, per GPU)."""
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[tuple[str, str]]]] = [
        ("process CPU (%, 100 = one core)", [("cpu_percent", "process")]),
        ("memory (GB)", [("rss_gb", "process RSS"), ("sys_mem_used_gb", "machine used")]),
    ]
    gpus = sorted({c.split("_")[0] for c in frame.columns if c.startswith("gpu")})
    for unit, suffix in (("utilisation (%)", "util"), ("memory used (GB)", "mem_used_gb")):
        panels.append((f"GPU {unit}", [(f"{g}_{suffix}", g) for g in gpus]))
    for unit, suffix in (("temperature (C)", "temp_c"), ("power (W)", "power_w")):
        panels.append((f"GPU {unit}", [(f"{g}_{suffix}", g) for g in gpus]))
    panels = [(t, [(c, n) for c, n in lines if c in frame.columns]) for t, lines in panels]
    panels = [(t, lines) for t, lines in panels if lines]
    if frame.empty or not panels:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(0.5, 0.5, "no device samples", ha="center", va="center")
        ax.set_axis_off()
        return fig
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3 * rows), squeeze=False)
    minutes = frame["time_s"] / 60
    for ax, (label, lines) in zip(axes.flat, panels, strict=False):
        for col, name in lines:
            ax.plot(minutes, frame[col], label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("minutes")
        if len(lines) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mswelu.monitor", description="Every run at a glance.")
    p.add_argument("folder", nargs="?", help="where the runs are (default: runs/)")
    p.add_argument(
        "--watch", nargs="?", type=float, const=5.0, metavar="SECONDS", help="refresh until Ctrl-C"
    )
    p.add_argument("--running", action="store_true", help="only the runs being written now")
    args = p.parse_args(argv)
    root = Path(args.folder) if args.folder else runs_dir()
    if not root.is_dir():
        print(f"error: no folder {root}", file=sys.stderr)
        return 2
    if args.watch is not None and not args.watch > 0:
        print(f"error: --watch takes seconds > 0, got {args.watch}", file=sys.stderr)
        return 2
    if args.watch is None:
        print(render(root, args.running))
        return 0
    clear = "\x1b[H\x1b[2J" if sys.stdout.isatty() else ""
    try:
        while True:
            head = f"[{time.strftime('%H:%M:%S')}] {root} (every {args.watch:g} s, Ctrl-C to stop)"
            print(f"{clear}{head}\n{render(root, args.running)}")
            sys.stdout.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
