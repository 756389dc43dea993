"""Launching several runs from one call: in this process, as a torchrun DDP job, or the seeds' "independent"
mode (N separate runs at once, one per GPU, each with its own seed or variant).

    from mswelu.launch import launch
    launch("independent", base=cfg, seeds=[0, 1, 2])            # 3 runs side by side
    launch("independent", base=cfg, variants=[{"activation": "swelu"}, {"activation": "silu"}])
    launch("ddp", base=cfg, n_gpus=4)                            # torchrun --nproc_per_node 4
    launch("auto", base=cfg, seeds=[0, 1])                       # picks from the hardware

Child processes run ``python -m mswelu.train --config <file>``; the launcher watches their
``metrics.jsonl`` (a progress bar per run), and when one dies it stops the others (SIGTERM: they checkpoint
and exit) and raises with the dead run's log tail. Logs and the generated configs live in
``<out_root>/.launch/``; the run folders themselves follow the run contract.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mswelu.base import progress
from mswelu.base.errors import check_choice
from mswelu.base.paths import project_root, runs_dir
from mswelu.base.run_names import run_name
from mswelu.runs.folder import METRICS, SUMMARY
from mswelu.training.config import TrainConfig, merge_overrides

#: How several runs are launched (see :func:`launch`).
MODES = ("auto", "single", "ddp", "fsdp", "independent")


def resolve_mode(mode: str, n_gpus: int, n_runs: int) -> str:
    """The concrete mode: ``auto`` is ``independent`` with >= 2 GPUs and >= 2 runs, ``ddp`` with >= 2
    GPUs and one run, else ``single``; any other mode is checked and returned."""
    check_choice("launch mode", mode, MODES)
    if mode != "auto":
        return mode
    return ("independent" if n_runs > 1 else "ddp") if n_gpus >= 2 else "single"


@dataclass
class RunHandle:
    """One child process and where it writes."""

    name: str
    cfg: TrainConfig
    run_dir: Path
    config_path: Path
    log_path: Path
    cmd: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_file: Any = None
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()


def _variant_name(stem: str, variant: dict[str, Any]) -> str:
    """``stem`` and what ``variant`` changes (``<key>-<value>`` per setting, model settings included, the
    seed as ``s<seed>``): the run name of one of several variants."""
    parts = []
    for k, v in variant.items():
        if k in ("out", "run_name", "seed"):
            continue
        if isinstance(v, dict):
            parts.extend(f"{a}-{b}" for a, b in v.items())
        else:
            parts.append(f"{k}-{v}")
    return run_name(stem, re.sub(r"[^A-Za-z0-9_.=-]+", "_", "-".join(parts)), seed=variant.get("seed"))


def expand_variants(
    base: TrainConfig | dict[str, Any] | None,
    variants: Sequence[dict[str, Any]] | None = None,
    seeds: Sequence[int] | None = None,
    out_root: str | Path | None = None,
) -> list[TrainConfig]:
    """One validated TrainConfig per run: ``variants`` (overrides of ``base``; ``model`` dicts are merged),
    crossed with ``seeds`` when both are given. Each gets its own run name and folder under ``out_root``."""
    base_cfg = TrainConfig.coerce(base or {})
    variants = [dict(v) for v in (variants or [{}])]
    if seeds is not None:
        variants = [{**v, "seed": int(s)} for v in variants for s in seeds]
    root = (
        Path(out_root)
        if out_root is not None
        else (Path(base_cfg.out).parent if base_cfg.out else runs_dir())
    )
    stem = base_cfg.run_name or (Path(base_cfg.out).name if base_cfg.out else None)
    cfgs, names = [], set()
    for v in variants:
        cfg = TrainConfig.from_dict(merge_overrides(base_cfg.to_dict(), v))
        stem_v = stem or cfg.default_run_name()
        name = v.get("run_name") or (_variant_name(stem_v, v) if len(variants) > 1 else stem_v)
        if name in names:
            raise ValueError(f"two variants map to the run name {name!r}; give them distinct run_name values")
        names.add(name)
        out = v.get("out") or (base_cfg.out if len(variants) == 1 and base_cfg.out else root / name)
        cfg = cfg.replace(run_name=name, out=str(out))
        cfg.validate()
        cfgs.append(cfg)
    return cfgs


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _read_last_record(path: Path) -> dict[str, Any]:
    """The last complete JSON line of a metrics file (reads only its tail)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return {}
    for line in reversed(tail.splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return {}


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


def _prepare(cfg: TrainConfig, launch_dir: Path, cmd_prefix: list[str], env: dict[str, str]) -> RunHandle:
    launch_dir.mkdir(parents=True, exist_ok=True)
    config_path = launch_dir / f"{cfg.run_name}.yaml"
    config_path.write_text(yaml.safe_dump(cfg.replace(progress=False).to_dict(), sort_keys=False))
    cmd = [*cmd_prefix, "-m", "mswelu.train", "--config", str(config_path)]
    log_path = launch_dir / f"{cfg.run_name}.log"
    return RunHandle(cfg.run_name or "run", cfg, Path(cfg.out or ""), config_path, log_path, cmd, env)


def _start(h: RunHandle, cwd: Path) -> None:
    h.log_file = open(h.log_path, "w", encoding="utf-8")  # noqa: SIM115 (closed by _finish)
    h.proc = subprocess.Popen(
        h.cmd, cwd=cwd, env=h.env, stdout=h.log_file, stderr=subprocess.STDOUT, start_new_session=True
    )


def _finish(h: RunHandle, grace_s: float = 60.0) -> None:
    """A run that is still going is stopped (SIGTERM: it checkpoints and exits; SIGKILL after ``grace_s``);
    then its log is closed."""
    if h.proc is not None and h.proc.poll() is None:
        try:
            os.killpg(h.proc.pid, signal.SIGTERM)
            h.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(h.proc.pid, signal.SIGKILL)
            h.proc.wait()
        except ProcessLookupError:
            pass
    if h.log_file is not None:
        h.log_file.close()
        h.log_file = None


def watch(
    handles: list[RunHandle],
    slots: Sequence[str | None],
    cwd: Path,
    poll_s: float = 5.0,
    progress: bool = True,
    on_metrics: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Start ``handles``, one per free slot (a slot is a ``CUDA_VISIBLE_DEVICES`` value, or None to leave the
    environment as is), follow their metrics, return their summaries. A run that exits non-zero stops the
    others and raises RuntimeError. Each new metrics record is passed to ``on_metrics(run_name, record)``
    and, with ``progress``, printed as a progress line."""
    from tqdm.auto import tqdm

    free = list(slots)
    if not free:
        raise ValueError("watch needs at least one slot")
    taken: dict[str, str | None] = {}
    pending, running, done = list(handles), [], []
    failures: list[RunHandle] = []
    bars = {
        h.name: tqdm(
            total=h.cfg.total_steps(),
            desc=h.name,
            unit="step",
            position=i,
            disable=not progress,
            dynamic_ncols=True,
        )
        for i, h in enumerate(handles)
    }
    try:
        while pending or running:
            while pending and free:
                h = pending.pop(0)
                taken[h.name] = slot = free.pop(0)
                if slot is not None:
                    h.env["CUDA_VISIBLE_DEVICES"] = slot
                _start(h, cwd)
                running.append(h)
            time.sleep(poll_s)
            for h in list(running):
                record = _read_last_record(h.run_dir / METRICS)
                if record.get("step") is not None and record != h.last:
                    h.last = record
                    _report_record(h, record, bars[h.name], progress, on_metrics)
                rc = h.returncode
                if rc is None:
                    continue
                running.remove(h)
                _finish(h)
                free.append(taken.pop(h.name))
                done.append(h)
                if rc != 0:
                    failures.append(h)
                    for other in running:
                        _finish(other)
                    running.clear()
                    pending.clear()
    except KeyboardInterrupt:
        for h in running:
            _finish(h)
        raise
    finally:
        for bar in bars.values():
            bar.close()
    if failures:
        h = failures[0]
        raise RuntimeError(
            f"run {h.name!r} exited with code {h.returncode} (log {h.log_path}); "
            f"{len(failures)} run(s) failed. Last lines:\n{_log_tail(h.log_path)}"
        )
    results = []
    for h in handles:
        path = h.run_dir / SUMMARY
        summary = json.loads(path.read_text()) if path.is_file() else {}
        results.append({"run_name": h.name, "returncode": h.returncode, "log": str(h.log_path), **summary})
    return results


def _report_record(
    h: RunHandle, record: dict[str, Any], bar: Any, show: bool, on_metrics: Callable[..., None] | None
) -> None:
    """A child run's newest metrics record: to ``on_metrics`` and its progress bar, and with ``show`` as a
    progress line."""
    if on_metrics is not None:
        on_metrics(h.name, record)
    step, total = int(record["step"]), h.cfg.total_steps()
    bar.n = step
    if "loss" in record:
        bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
    bar.refresh()
    if not show:
        return
    if "val_loss" in record:
        scores = [record.get(k) for k in ("val_bpb", "val_scope", "val_tokens")]
        progress.say(progress.format_eval(h.name, step, total, record["val_loss"], *scores), bar)
    elif "loss" in record:
        rate = record.get("tokens_per_s")
        left = (total - step) * h.cfg.tokens_per_step() / rate if rate else None
        progress.say(progress.format_step(h.name, step, total, record["loss"], rate, left), bar)


def launch(
    mode: str = "auto",
    base: TrainConfig | dict[str, Any] | None = None,
    variants: Sequence[dict[str, Any]] | None = None,
    seeds: Sequence[int] | None = None,
    n_gpus: int | None = None,
    n_procs: int | None = None,
    out_root: str | Path | None = None,
    poll_s: float = 5.0,
    progress: bool = True,
    on_metrics: Callable[[str, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``base`` x ``variants`` x ``seeds`` and return one summary per run. ``on_metrics(run_name,
    record)`` sees every metrics record as it is written (e.g. a notebook's live report).

    - ``single``: one after another in this process (``train``);
    - ``ddp`` / ``fsdp``: each run as one ``torchrun --nproc_per_node N`` job (``fsdp``: with
      ``parallel="fsdp"``, the model sharded over the N processes), N = ``n_gpus`` GPUs, or ``n_procs``
      CPU processes (gloo) when there is no GPU;
    - ``independent``: all runs at once as separate processes; on GPUs one per device
      (``CUDA_VISIBLE_DEVICES``), queued when there are more runs than GPUs; on CPU ``n_procs`` at a
      time (default: all) with the cores split between them;
    - ``auto``: ``independent`` with >= 2 GPUs and >= 2 runs, ``ddp`` with >= 2 GPUs and one run,
      else ``single``.
    """
    resolve_mode(mode, 0, 1)  # a bad mode fails before the configs are built
    cfgs = expand_variants(base, variants, seeds, out_root)
    gpus = _gpu_count() if n_gpus is None else int(n_gpus)
    if gpus < 0:
        raise ValueError(f"n_gpus must be >= 0, got {n_gpus}")
    mode = resolve_mode(mode, gpus, len(cfgs))
    if mode == "single":
        from mswelu.train import train

        def forward_logs(event: str, trainer: Any, info: dict[str, Any]) -> None:
            if event == "log" and on_metrics is not None:
                on_metrics(trainer.setup.plan.out.name, info)

        return [
            {
                "run_name": c.run_name,
                "returncode": 0,
                **train(c.replace(progress=progress), callbacks=[forward_logs]),
            }
            for c in cfgs
        ]

    if any(c.data is None for c in cfgs):  # prepare the default corpus once, not in racing children
        from mswelu.data import default_dataset

        default = str(default_dataset())
        cfgs = [c if c.data is not None else c.replace(data=default) for c in cfgs]
    root = Path(cfgs[0].out).parent
    launch_dir = root / ".launch"
    cwd = project_root()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("MSWELU_HOME", str(cwd))
    if mode in ("ddp", "fsdp"):  # one torchrun job per run; fsdp shards the model over its processes
        nproc = gpus if gpus >= 1 else int(n_procs or 2)
        if nproc < 1:
            raise ValueError(f"{mode} needs at least one process")
        cfgs = [c.replace(parallel=mode) for c in cfgs]
        child_env = dict(env)
        if gpus == 0:
            child_env["CUDA_VISIBLE_DEVICES"] = ""
            child_env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        handles = [_prepare(c, launch_dir, prefix, child_env) for c in cfgs]
        return watch(handles, [None], cwd, poll_s, progress, on_metrics)

    # independent: one slot per GPU (a queued run takes the GPU that frees up), or n_procs CPU slots
    if gpus >= 1:
        slots: list[str | None] = [str(g) for g in range(gpus)]
    else:
        slots = [None] * int(n_procs or len(cfgs))
    if not slots:
        raise ValueError("independent mode needs at least one slot (n_gpus or n_procs)")
    handles = []
    for c in cfgs:
        child_env = dict(env)
        if gpus >= 1:
            c = c.replace(device="cuda" if c.device == "auto" else c.device)
        else:
            child_env["CUDA_VISIBLE_DEVICES"] = ""
            child_env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // min(len(slots), len(cfgs))))
        handles.append(_prepare(c, launch_dir, [sys.executable], child_env))
    return watch(handles, slots, cwd, poll_s, progress, on_metrics)
