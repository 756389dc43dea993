"""What a notebook does with a run name that holds a run: reuse a finished run of the same settings, data and
code, continue an interrupted one, or refuse unless asked to overwrite.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import mswelu.data
import mswelu.train
from mswelu.base.errors import RunInterrupted, RunRefused
from mswelu.base.paths import display_path, runs_dir
from mswelu.base.progress import in_kernel, say
from mswelu.base.run_names import check_run_name
from mswelu.runs.folder import CONFIG, FINAL, NOTEBOOK, SUMMARY, RunData, is_empty, load_run, read_json
from mswelu.training.code_digest import changed_files, training_code
from mswelu.training.config import RUNTIME_SETTINGS, TrainConfig, changed_settings
from mswelu.workbook.prologue import current_report

__all__ = ["announce_reuse", "as_run", "reusable", "run_decision", "train_or_load"]


def as_run(cfg: dict[str, Any], name: str, **settings: Any) -> dict[str, Any]:
    """``cfg`` (a TrainConfig dict) as the run ``name`` under ``runs/``, with ``settings`` on top."""
    return {**cfg, **settings, "run_name": name, "out": str(runs_dir() / check_run_name(name))}


def reusable(cfg: dict[str, Any], out: Path) -> str | None:
    """None when ``out`` holds a finished run of exactly ``cfg``'s settings, data and code; else why not."""
    summary = read_json(out / SUMMARY)
    if summary is None or not (out / FINAL).is_dir():
        return "no finished run there"
    if summary.get("interrupted"):
        return "the run there was interrupted"
    why = _differs(cfg, out)
    if why:
        return why
    recorded = (read_json(out / CONFIG) or {}).get("_training_code")
    changed = changed_files(recorded, training_code(TrainConfig.coerce(dict(cfg)).to_dict()))
    if changed:
        return f"trained by other code ({', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''} changed)"
    return None


def _differs(cfg: dict[str, Any], out: Path) -> str | None:
    """Why the run in ``out`` is not a run of ``cfg``'s settings on ``cfg``'s data, or None."""
    tc = TrainConfig.coerce(dict(cfg))
    old = read_json(out / CONFIG)
    if not old:
        return f"its {CONFIG} is missing or unreadable"
    changed = sorted(changed_settings(old, tc.to_dict(), ignore=RUNTIME_SETTINGS))
    if changed:
        return f"settings differ: {', '.join(changed)}"
    if tc.data is None:
        return None
    if old.get("_data_fingerprint") != mswelu.data.load_meta(tc.data).get("fingerprint"):
        return "trained on other data"
    return None


def run_decision(cfg: dict[str, Any]) -> str:
    """``"train"``, ``"reuse"`` or ``"resume"`` for ``cfg``'s folder; anything else is a ``RunRefused``."""
    tc = TrainConfig.coerce(dict(cfg))
    out = tc.out_dir()
    if is_empty(out) or tc.overwrite:
        return "train"
    if reusable(cfg, out) is None:
        return "reuse"
    finished = (read_json(out / SUMMARY) or {}).get("interrupted") is False and (out / FINAL).is_dir()
    why = _differs(cfg, out) or ("trained by other code" if finished else None)
    if why is None:
        return "resume"
    kept = f" (its executed notebook: {display_path(out / NOTEBOOK)})" if (out / NOTEBOOK).is_file() else ""
    raise RunRefused(
        f"run_name {out.name!r} already holds a run ({why}); nothing was changed: pick another run_name, "
        f"or pass overwrite=True to replace it{kept}"
    )


def announce_reuse(out: str | os.PathLike[str]) -> str:
    """One line, on the terminal and in the notebook, saying the run in ``out`` is reused (the first in a
    report also says where the report goes); returns it."""
    report = current_report()
    where = ""
    if report is not None and not report.reuse_named:  # a comparison reusing hundreds of runs names it once
        report.reuse_named = True
        where = f"; report: {display_path(report.html_path)}"
    line = (
        f"reusing the finished run {Path(out).name!r} ({display_path(out)}: same settings, data and code, "
        f"nothing to train){where}"
    )
    say(line)
    if in_kernel():  # say() went to the terminal; the notebook shows it too
        print(line)
    return line


def train_or_load(cfg: dict[str, Any], reuse: bool = True) -> RunData:
    """The run of ``cfg`` as :func:`run_decision` decides (``reuse=False`` retrains a matching run). A run
    stopped by Ctrl-C / SIGTERM raises :class:`~mswelu.base.errors.RunInterrupted`: a comparison must not go
    on with a half-trained model, and the same call resumes it."""
    tc = TrainConfig.coerce(dict(cfg))
    decision = run_decision(cfg) if reuse else "train"
    if decision == "reuse":
        run = load_run(tc.out_dir())
        run.reused = True
        announce_reuse(run.path)
        return run
    if decision == "resume":
        tc = dataclasses.replace(tc, resume="auto")
    elif not reuse:
        tc = dataclasses.replace(tc, overwrite=True)
    summary = mswelu.train.train(tc)
    if summary.get("interrupted"):
        raise RunInterrupted(
            f"run {tc.out_dir().name} stopped at step {summary.get('steps')} (checkpoint written): run "
            "the same cell or command again to resume it"
        )
    return load_run(tc.out_dir())
