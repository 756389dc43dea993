"""The training metrics log: one JSON line per record in ``metrics.jsonl`` (a step, an evaluation or a device
sample, each with ``step`` and ``tokens``) and the same scalars in every tracker the run names. Only rank 0
holds one; writes hold a lock so other threads' records never interleave.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mswelu.base.devices import DeviceSampler
from mswelu.base.progress import log
from mswelu.runs.folder import METRICS, read_jsonl
from mswelu.runs.writer import RunWriter
from mswelu.training import trackers as tr

__all__ = ["MetricsLog", "attach_to_trackers", "run_summary"]


class MetricsLog:
    """Append records to a run's metrics (truncated to ``resume_step`` when resuming) and its trackers."""

    def __init__(
        self,
        run: RunWriter,
        resume_step: int | None,
        trackers: Sequence[str] | bool = (),
        shape_scalars: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """``trackers``: tracker names (``True`` / ``False``: TensorBoard or none); ``shape_scalars``:
        the learnable shape parameters, logged per slot as ``<param>/<slot>``. A tracker that cannot start
        raises ValueError before the metrics file is touched."""
        if isinstance(trackers, bool):
            trackers = ("tensorboard",) if trackers else ()
        self.run = run
        self.shape_scalars = tuple(shape_scalars)
        self._lock = threading.Lock()
        self.trackers = tr.open_trackers(
            list(trackers),
            run_dir=run.path,
            tensorboard_dir=run.tensorboard,
            state_path=run.tracker_state,
            config=dict(config or {}),
            resume_step=resume_step,
        )
        self.file = run.open_metrics(resume_step)
        self.dropped_torn_line = run.dropped_torn_line  # the resumed log ended in a torn line (a crash)
        self.sampler: DeviceSampler | None = None
        self.on_sample: Callable[[dict[str, Any]], None] = lambda sample: None

    def sample_devices(self, every: float, on_sample: Callable[[dict[str, Any]], None]) -> None:
        """Sample the devices every ``every`` seconds in the background."""
        try:
            self.sampler = DeviceSampler(every).start()
        except ImportError as exc:  # psutil is a dependency; a broken install loses the figures only
            log(f"no device figures: {exc} (pip install psutil)")
        self.on_sample = on_sample

    @classmethod
    def for_run(
        cls,
        run: RunWriter,
        record: Mapping[str, Any],
        trackers: Sequence[str],
        resume_step: int | None,
        last_train: Mapping[str, Any],
    ) -> MetricsLog:
        """The log of a run resumed at ``resume_step``; rewrites a torn ``last_train``."""
        learned = {p for slot in record.get("_shape_slots") or () for p in slot["learnable"]}
        metrics = cls(run, resume_step, trackers, shape_scalars=learned, config=record)
        if resume_step is not None and last_train and metrics.dropped_torn_line:
            if last_train["step"] not in metrics.logged_steps():
                metrics.write(dict(last_train))
                log(f"the step-{last_train['step']} record restored from the checkpoint")
        return metrics

    def logged_steps(self) -> set[int]:
        """Steps of the training records in the log (after a resume's truncation)."""
        self.file.flush()
        return {int(r["step"]) for r in read_jsonl(self.run.path / METRICS) if "loss" in r and "step" in r}

    def write(self, record: dict[str, Any]) -> None:
        """``record`` (with ``step`` and ``tokens``), after the device samples taken since the last one."""
        self._write_device_samples(record["step"], record.get("tokens"))
        self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            if self.trackers:
                values = tr.scalars(record, self.shape_scalars)
                if values:
                    self._to_trackers(values, int(record["step"]))

    def write_device(self, samples: Iterable[Mapping[str, Any]], step: int, tokens: int) -> None:
        """Device samples (:meth:`mswelu.base.devices.DeviceSampler.drain`) as records at ``step``."""
        for s in samples:
            figures = {k: v for k, v in s.items() if k != "time"}
            self._append({"step": step, "tokens": tokens, "time": s.get("time"), "device": figures})

    def _write_device_samples(self, step: int, tokens: int | None) -> None:
        if self.sampler is None:
            return
        samples = self.sampler.drain()
        self.write_device(samples, step, tokens)
        for sample in samples:
            self.on_sample({"step": step, **sample})

    def _to_trackers(self, values: dict[str, float], step: int) -> None:
        for t in list(self.trackers):
            try:
                t.log(values, step)
            except Exception as exc:  # noqa: BLE001 - a tracker must never stop the run
                log(f"tracker {t.name} failed ({type(exc).__name__}: {exc}); it is off from now on")
                self.trackers.remove(t)

    def sync(self) -> None:
        """Make every record durable (before a checkpoint: a crash tears only a later one)."""
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(
        self, summary: Mapping[str, Any] | None = None, failed: bool = False, at: tuple[int, int] = (0, 0)
    ) -> None:
        """Write the last device samples, finish every tracker, close the file."""
        if self.sampler is not None:
            self.sampler.stop()
            self._write_device_samples(*at)
            self.sampler = None
        files = [p for p in self.run.tracked_files() if p.is_file()]
        for t in self.trackers:
            try:
                t.finish(summary or {}, files, failed=failed)
            except Exception as exc:  # noqa: BLE001
                log(f"tracker {t.name} did not finish cleanly ({type(exc).__name__}: {exc})")
        self.trackers = []
        self.file.close()


def attach_to_trackers(run_dir: str | os.PathLike[str], files: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Add ``files`` to the run's wandb / trackio runs; returns the trackers that got them."""
    run = RunWriter(run_dir)
    if not run.tracker_state.is_file():
        return []
    return tr.attach_files(run.tracker_state, run.path, [Path(f) for f in files])


def run_summary(
    record: Mapping[str, Any],
    figures: Mapping[str, Any],
    spent: Mapping[str, float],
    last_val: Mapping[str, Any],
) -> dict[str, Any]:
    """``summary.json``: the run's identity, ``figures`` in order, the time ``spent``."""
    train_s = spent["train_time_s"]
    summary = {k: figures[k] for k in ("run_dir", "run_name")}
    summary.update({k: record[k] for k in ("preset", "activation", "optimizer", "seed")})
    summary.update(
        {k: record[f"_{k}"] for k in ("total_steps", "tokens_per_step", "world_size", "grad_accum")}
    )
    summary.update({k: figures[k] for k in ("steps", "tokens", "parameters", "train_loss")})
    summary.update({k: last_val.get(k) for k in ("val_loss", "val_ppl", "val_bpb")})
    summary.update(tokens_per_s=spent["trained_tokens"] / train_s if train_s > 0 else None)
    summary.update(nonfinite_skipped=figures["nonfinite_skipped"], wall_time_s=spent["wall_time_s"])
    summary.update(train_time_s=train_s)
    rest = {k: v for k, v in figures.items() if k not in summary and k != "shape"}
    summary.update(rest)
    summary.update(baseline=record.get("_baseline"), **figures["shape"])
    return summary
