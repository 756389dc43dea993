"""``reports/index.html``: every report with its status and figures, the studies, then the run folders."""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
from pathlib import Path
from typing import Any

from mswelu.base.fs import atomic_write_text
from mswelu.base.paths import reports_dir, runs_dir
from mswelu.report.markup import Html, badge, document, now, table
from mswelu.runs import folder as runs

__all__ = ["INDEX_COLUMNS", "STUDIES", "load_report_state", "write_index"]

# Key figures shown in the index, with the metric names that may carry them (first present wins).
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "of run": ("analysed_run",),
    "final val loss": ("final_val_loss", "val_loss"),
    "val bpb": ("val_bpb", "final_val_bpb", "bpb"),
    "tokens": ("tokens", "total_tokens"),
    "tokens/s": ("tokens_per_s", "tok_per_s"),
}
#: the folder of ``reports/`` whose reports are committed: a study's (see ``notebooks/studies/``)
STUDIES = "studies"
_RUN_COLUMNS = ("run", "status", "preset", "activation", "steps", "tokens", "val loss", "val bpb", "date")


def load_report_state(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Status and key figures of one report folder (``report.json`` + ``metrics.json``), or None."""
    run_dir = Path(run_dir)
    state: dict[str, Any] = {}
    for name in ("report.json", "metrics.json"):
        path = run_dir / name
        if path.is_file():
            try:
                state.update(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, json.JSONDecodeError):
                continue
    if not state:
        return None
    state.setdefault("run", run_dir.name)
    return state


def _key_figure(metrics: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if metrics.get(name) is not None:
            return metrics[name]
    return None


def _training_runs_table(runs_root: Path) -> str:
    """Every training run folder under ``runs_root``, newest first, with its status and final figures."""
    rows = []
    for path in runs.list_runs(runs_root):  # newest first
        run = runs.load_run(path)
        if path.name.startswith(".") or not run.config:
            continue
        summary = run.summary or {}
        when = _dt.datetime.fromtimestamp(runs.last_written(path), _dt.timezone.utc)
        status = run.status
        rows.append(
            (
                path.relative_to(runs_root).as_posix(),
                badge(status, "failed" if status == "interrupted" else None),
                run.config.get("preset"),
                run.config.get("activation"),
                summary.get("steps"),
                summary.get("tokens"),
                summary.get("val_loss"),
                summary.get("val_bpb"),
                when.strftime("%Y-%m-%d %H:%M:%S UTC"),
            )
        )
    if not rows:
        return ""
    return (
        f'<h2>Training runs</h2><p class="meta">{len(rows)} run folder(s) under runs/, from notebooks '
        f"or the command line</p>{table(_RUN_COLUMNS, rows, by_column=True)}"
    )


def _report_rows(root: Path, prefix: str = "") -> list[tuple[Any, ...]]:
    """One row per report under ``root``, newest first: link, status, notebook, key figures and date."""
    found = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        state = load_report_state(run_dir)
        if state is not None:
            date = state.get("finished_at") or state.get("started_at") or ""
            found.append((date, run_dir.name, state, state.get("metrics") or {}))
    found.sort(key=lambda r: r[0], reverse=True)
    rows = []
    for date, name, state, metrics in found:
        href = html.escape(f"{prefix}{name}/report.html", quote=True)
        link = Html(f'<a href="{href}">{html.escape(name)}</a>')
        figures = [_key_figure(metrics, names) for names in INDEX_COLUMNS.values()]
        status = badge(str(state.get("status", "?")))
        rows.append((link, status, str(state.get("notebook", "")), *figures, date))
    return rows


def _studies_table(root: Path) -> str:
    """The committed studies (``<root>/studies/*``), linked, for the index of every run."""
    folder = root / STUDIES
    rows = _report_rows(folder, f"{STUDIES}/") if folder.is_dir() else []
    if not rows:
        return ""
    return (
        f'<h2>Studies</h2><p class="meta">{len(rows)} committed stud{"y" if len(rows) == 1 else "ies"} '
        f'under reports/{STUDIES}/ (<a href="{STUDIES}/index.html">their own index</a>)</p>'
        f"{table(('study', 'status', 'notebook', *INDEX_COLUMNS, 'date'), rows, by_column=True)}"
    )


def write_index(
    root: str | os.PathLike[str] | None = None, runs_root: str | os.PathLike[str] | None = None
) -> Path:
    """Regenerate ``<reports>/index.html``: every report with its status and key figures, the committed
    studies, then the run folders under ``runs_root`` (default ``runs/`` for the project's reports). The
    studies' index refreshes the project's too."""
    root = Path(root) if root is not None else reports_dir()
    if runs_root is None and root == reports_dir():
        runs_root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    rows = _report_rows(root)
    body = (
        f'<h1>mswelu runs</h1><p class="meta">{len(rows)} report(s), newest first; generated {now()}</p>'
        f"{table(('run', 'status', 'notebook', *INDEX_COLUMNS, 'date'), rows, by_column=True)}"
        f"{_studies_table(root)}"
        f"{_training_runs_table(Path(runs_root)) if runs_root is not None else ''}"
    )
    written = atomic_write_text(root / "index.html", document("mswelu runs", body))
    if root.name == STUDIES and root.parent == reports_dir():
        write_index(root.parent)
    return written
