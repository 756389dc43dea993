"""How the trainer (rank 0) writes a run folder (:mod:`mswelu.runs.folder` spells its layout): the writer's
lock, the folder prepared or cleared, the metrics file reopened on resume, ``final/`` written atomically."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from mswelu.base.fs import (
    LOCK_NAME,
    DiskFullError,
    FolderLock,
    atomic_write_json,
    atomic_write_text,
    fsync_dir,
    leftovers,
)
from mswelu.base.progress import log
from mswelu.runs.folder import (
    CHECKPOINTS,
    CONFIG,
    DOCUMENTS,
    FINAL,
    METRICS,
    MODEL_CARD,
    SUMMARY,
    TENSORBOARD,
    TRACKER_STATE,
    is_empty,
    looks_like_run,
    read_jsonl,
)
from mswelu.training import checkpoint as ckpt

__all__ = ["RunLock", "RunWriter"]


class RunLock(FolderLock):
    """The run folder's writer lock (see :class:`mswelu.base.fs.FolderLock`). A folder this lock created and
    nothing else wrote (a run refused by its preflight) is removed again on release."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path, "run folder")
        self._created = False

    def acquire(self) -> RunLock:
        self._created = not self.folder.exists()
        super().acquire()
        return self

    def release(self) -> None:
        unused = (
            self._fd is not None and self._created and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]
        )
        if unused:  # remove the lock file while still holding it, so no one else can be holding it
            (self.folder / LOCK_NAME).unlink(missing_ok=True)
        super().release()
        if unused:
            with contextlib.suppress(OSError):
                self.folder.rmdir()


class RunWriter:
    """What the trainer (rank 0) writes into a run folder; see the module docstring for the layout."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.dropped_torn_line = False  # set by open_metrics: the resumed log ended in a torn line

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def tracker_state(self) -> Path:
        return self.path / TRACKER_STATE

    def tracked_files(self) -> list[Path]:
        """The files a tracker keeps with the run at its end: summary, config, the model card."""
        return [self.path / SUMMARY, self.path / CONFIG, self.path / FINAL / MODEL_CARD]

    def prepare(self, clear: bool = False) -> None:
        """Create the folder; with ``clear`` (``overwrite``) remove its old contents first. Leftovers of a
        writer killed mid-write (partial checkpoints, a partial ``final/``) are cleaned up, saying so."""
        if clear:
            self.clear()
        self.path.mkdir(parents=True, exist_ok=True)
        self.clean_leftovers()

    def clean_leftovers(self) -> list[str]:
        """Remove, in one notice, what writers that died mid-write left (:func:`ckpt.clean_leftovers`, and
        a ``.tmp-final-<pid>`` never completed); only those names, only where their process is gone."""
        done = ckpt.clean_leftovers(self.checkpoints)
        for p, _ in leftovers(self.path, re.compile(r"\.tmp-final-(?P<pid>\d+)")):
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}")
        if done:
            log(f"{self.path}: cleaned up after a writer that was killed ({'; '.join(done)})")
        return done

    def clear(self) -> None:
        """Remove the folder's contents (``overwrite``), all but the writer's lock; refuses a folder that
        is not a run."""
        if is_empty(self.path):
            return
        if not looks_like_run(self.path):
            raise ValueError(f"{self.path} does not look like a run folder; not deleting it")
        for p in self.path.iterdir():
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / CONFIG, dict(config))

    def open_metrics(self, resume_step: int | None) -> IO[str]:
        """The metrics file to append to: on resume, without the records logged after ``resume_step`` and
        without a final evaluation (they will be logged again); otherwise a new, empty one."""
        path = self.path / METRICS
        self.dropped_torn_line = False
        if resume_step is not None and path.exists():
            records, self.dropped_torn_line = read_jsonl(path, report_torn=True)
            if self.dropped_torn_line:
                log(f"{path} ended with a torn line (a crash while it was written): dropped")
            # an earlier sitting's final evaluation is redone by the run that finishes
            kept = [r for r in records if r.get("step", 0) <= resume_step and not r.get("final")]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        elif path.exists():
            path.unlink()
        return open(path, "a", encoding="utf-8")  # noqa: SIM115 (the caller closes it)

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write_json(self.path / SUMMARY, dict(summary))

    def write_documents(self, step: int, tokens: int, result: Mapping[str, Any]) -> None:
        """The final evaluation's sums per document and per window (:data:`DOCUMENTS`)."""
        keep = ("val_loss", "val_bpb", "val_tokens", "val_scope", "documents", "windows")
        atomic_write_json(
            self.path / DOCUMENTS, {"step": step, "tokens": tokens, **{k: result[k] for k in keep}}
        )

    def save_final(self, model: Any, extra: Callable[[Path], None] | None = None) -> Path:
        """``model.save_pretrained`` into ``final/`` through a temporary folder and a rename;
        ``extra(folder)`` adds files (tokenizer, model card: :mod:`mswelu.runs.hub`) before the rename."""
        from mswelu.base.hf_compat import quiet_progress_bars

        if not ckpt.all_finite(model):
            raise FloatingPointError("refusing to save final/: the weights contain NaN or inf")
        final = self.path / FINAL
        tmp = self.path / f".tmp-final-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with quiet_progress_bars():
                model.save_pretrained(str(tmp))
            if extra is not None:
                extra(tmp)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if ckpt.is_disk_full(exc):
                raise DiskFullError(
                    f"the disk filled up while writing {final} (the finished model); the partial copy was "
                    f"removed and the checkpoints are intact: free some space, then resume (--resume auto, "
                    f"or run the same notebook again) to write it"
                ) from exc
            raise
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(self.path)
        return final
