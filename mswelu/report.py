"""Self-contained HTML reports for notebook runs, and the index of all runs.

A notebook creates ``Report(run_name, notebook, params)`` right after its parameters cell. The report is
written at once with status "running"; an IPython ``post_run_cell`` hook rewrites it with status
"failed" and the traceback as soon as any cell raises (papermill then stops with a non-zero exit), so a
crashed run never leaves a report that looks finished. ``finish(metrics)`` writes status "complete",
``reports/<run>/metrics.json`` and regenerates ``reports/index.html``.

Everything put into the HTML is escaped; figures are embedded as base64 PNG; parameters whose name looks
like a credential are dropped.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

from mswelu.fs import atomic_write_text
from mswelu.paths import reports_dir
from mswelu.provenance import provenance

__all__ = [
    "Report",
    "load_report_state",
    "sanitize_params",
    "write_index",
]


def _cpu_kernels_used() -> dict[str, str]:
    """Whether this CPU machine runs the scan, SWELU and the loss with mswelu's compiled kernels."""
    import torch

    if torch.cuda.is_available():
        return {}
    from mswelu.ops import cpu_kernels

    ok, why = cpu_kernels.available()
    return {"cpu_kernels": f"in use ({cpu_kernels.describe()['capability']})" if ok else f"not used: {why}"}


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SECRET_PARTS = {"token", "secret", "key", "password", "passwd", "pwd", "apikey", "credential", "credentials"}
_SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
STATUSES = ("running", "complete", "failed")

# Key figures shown in the index, with the metric names that may carry them (first present wins).
INDEX_COLUMNS: dict[str, tuple[str, ...]] = {
    "of run": ("analysed_run",),
    "final val loss": ("final_val_loss", "val_loss"),
    "val bpb": ("val_bpb", "final_val_bpb", "bpb"),
    "tokens": ("tokens", "total_tokens"),
    "tokens/s": ("tokens_per_s", "tok_per_s"),
}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_secret_name(name: str) -> bool:
    parts = [p for p in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()) if p]
    return any(p in _SECRET_PARTS for p in parts) or "apikey" in name.lower()


def sanitize_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop parameters that look like credentials (by name, e.g. ``hf_token``, ``api_key``, or by value,
    e.g. ``hf_...``); ``max_tokens`` or ``top_k`` are kept. Values are made JSON-safe."""
    if not isinstance(params, dict):
        raise ValueError(f"params must be a dict, got {type(params).__name__}")
    clean: dict[str, Any] = {}
    for name, value in params.items():
        name = str(name)
        if _is_secret_name(name) or (isinstance(value, str) and _SECRET_VALUE.match(value.strip())):
            continue
        clean[name] = _json_safe(value)
    return clean


def _json_safe(value: Any) -> Any:
    """Recursively convert numpy/torch scalars, paths and NaN/inf into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _json_safe(value.item())
        except (TypeError, ValueError, RuntimeError):
            pass
    if hasattr(value, "tolist") and callable(value.tolist):
        return _json_safe(value.tolist())
    return str(value)


def _markdown_to_html(text: str) -> str:
    """Markdown with raw HTML escaped (mistune ships with nbconvert); plain escaped text as a fallback."""
    try:
        import mistune

        md = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])
        return str(md(text))
    except Exception:  # pragma: no cover - mistune missing or broken
        return f"<pre>{html.escape(text)}</pre>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if value.is_integer() and abs(value) >= 1e4:  # a count that pandas turned into a float
            return f"{int(value):,}"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}.meta{color:#666;font-size:.9em}
.status{display:inline-block;padding:.15em .6em;border-radius:.4em;color:#fff;font-weight:600}
.status-running{background:#b7791f}.status-complete{background:#2f855a}.status-failed{background:#c53030}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
pre.error{background:#fff5f5;border-left:4px solid #c53030}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
details{margin:1em 0}summary{cursor:pointer;font-weight:600}
"""


class Report:
    """The HTML report of one notebook run (``reports/<run_name>/report.html``).

    Args:
        run_name: folder name under the reports directory (letters, digits, ``._-``).
        notebook: the notebook that produces it (shown in the index).
        params: the notebook's parameters (shown collapsed; credentials dropped).
        root: reports directory; default ``mswelu.paths.reports_dir()``.
        register_hook: register the IPython failure hook when running inside IPython.
    """

    def __init__(
        self,
        run_name: str,
        notebook: str,
        params: dict[str, Any] | None = None,
        root: str | os.PathLike[str] | None = None,
        register_hook: bool = True,
    ) -> None:
        if not isinstance(run_name, str) or not _RUN_NAME.match(run_name):
            raise ValueError(
                f"run_name must be 1-128 characters of letters, digits, '.', '_' or '-' "
                f"(not starting with '.' or '-'), got {run_name!r}"
            )
        self.run_name = run_name
        self.notebook = str(notebook)
        self.params = sanitize_params(dict(params or {}))
        self.root = Path(root) if root is not None else reports_dir()
        self.dir = self.root / run_name
        self.html_path = self.dir / "report.html"
        self.metrics_path = self.dir / "metrics.json"
        self.state_path = self.dir / "report.json"
        self.status = "running"
        self.started_at = _now()
        self.finished_at: str | None = None
        self.error: str | None = None
        self.metrics: dict[str, Any] = {}
        self._sections: list[str] = []
        self.provenance = provenance()  # versions, git commit, device: what produced these numbers
        self.provenance.update(_cpu_kernels_used())
        self._live: dict[str, dict[str, Any]] = {}  # run -> its newest train and eval figures
        self._live_written = 0.0
        self._figure_count = 0
        self._hook: Any = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self.previous = self._keep_previous()
        self.metrics_path.unlink(missing_ok=True)  # a stale metrics.json would claim success
        self._write()
        write_index(self.root)
        if register_hook:
            self._register_hook()

    def _keep_previous(self) -> Path | None:
        """A complete earlier report under this name is kept as ``report.previous.html`` /
        ``metrics.previous.json`` (a rerun that fails must not destroy it); returns its page."""
        try:
            done = json.loads(self.metrics_path.read_text(encoding="utf-8")).get("status") == "complete"
        except (OSError, ValueError, AttributeError):
            done = False
        if not done:
            return None
        previous = self.dir / "report.previous.html"
        os.replace(self.metrics_path, self.dir / "metrics.previous.json")
        if self.html_path.is_file():
            os.replace(self.html_path, previous)
        return previous

    # ----------------------------------------------------------------- content
    def add_markdown(self, text: str) -> None:
        """Add a block of Markdown (raw HTML inside it is escaped)."""
        self._sections.append(f'<section class="md">{_markdown_to_html(str(text))}</section>')
        self._write()

    def add_figure(self, fig: Any, caption: str | None = None, dpi: int = 100) -> None:
        """Embed a matplotlib figure as a base64 PNG (the figure is left open for the notebook to show)."""
        if not hasattr(fig, "savefig"):
            raise ValueError(f"add_figure expects a matplotlib Figure, got {type(fig).__name__}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        self._figure_count += 1
        alt = html.escape(caption or f"figure {self._figure_count}", quote=True)
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self._sections.append(f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">{cap}</figure>')
        self._write()

    def add_table(self, df: Any, caption: str | None = None) -> None:
        """Add a pandas DataFrame (or anything ``pd.DataFrame`` accepts) as an escaped HTML table, every
        number in the format of :meth:`add_metrics` (counts with separators, other floats to 4 digits)."""
        import pandas as pd

        frame = df if isinstance(df, pd.DataFrame) else pd.DataFrame(df)
        shown = frame.astype(object).map(
            lambda v: (
                "-"
                if v is None or (isinstance(v, float) and v != v)
                else _fmt(v)
                if isinstance(v, (int, float))
                else v
            )
        )
        table = shown.to_html(escape=True, border=0, na_rep="-")
        cap = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
        self._sections.append(f"<section>{cap}{table}</section>")
        self._write()

    def add_metrics(self, metrics: dict[str, Any], caption: str | None = None) -> None:
        """Show key figures as a two-column table and remember them for ``metrics.json``."""
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
        clean = sanitize_params(metrics)
        self.metrics.update(clean)
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in clean.items()
            if not isinstance(v, (dict, list))
        )
        cap = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
        self._sections.append(
            f"<section>{cap}<table><tr><th>metric</th><th>value</th></tr>{rows}</table></section>"
        )
        self._write()

    def add_text(self, text: str) -> None:
        """Add preformatted text (samples, logs), escaped."""
        self._sections.append(f"<pre>{html.escape(str(text))}</pre>")
        self._write()

    def update_params(self, values: dict[str, Any]) -> None:
        """Record the values a run actually used (e.g. what a profile filled in for parameters left at
        None), so the report and ``metrics.json`` show effective settings, not placeholders."""
        self.params.update(sanitize_params({k: v for k, v in values.items() if v is not None}))
        self._write()

    def live(self, run: str, record: dict[str, Any]) -> None:
        """Show a run's newest metrics while the report is "running" (pass as ``on_metrics`` to
        :func:`mswelu.workbook.execute_plan`); written at most every 2 s, evaluations at once."""
        figures = self._live.setdefault(str(run), {})
        keys = ("val_loss", "val_bpb") if "val_loss" in record else ("loss", "tokens_per_s")
        figures.update({"step": record.get("step"), "tokens": record.get("tokens"), "updated": _now()})
        figures.update({k: record.get(k) for k in keys})
        now = time.monotonic()
        if "val_loss" in record or now - self._live_written >= 2.0:
            self._live_written = now
            self._write()

    # ---------------------------------------------------------------- outcomes
    def finish(self, metrics: dict[str, Any] | None = None) -> Path:
        """Mark the run complete, write ``metrics.json`` and the index; returns the metrics path."""
        if metrics is not None:
            if not isinstance(metrics, dict):
                raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
            self.metrics.update(sanitize_params(metrics))
        self.status = "complete"
        self.finished_at = _now()
        payload = {
            "run": self.run_name,
            "notebook": self.notebook,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "params": self.params,
            "metrics": self.metrics,
            "provenance": self.provenance,
        }
        atomic_write_text(self.metrics_path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
        self._write()
        write_index(self.root)
        self._unregister_hook()
        return self.metrics_path

    def fail(self, error: BaseException | str) -> None:
        """Mark the run failed with ``error`` (an exception or a formatted traceback)."""
        if isinstance(error, BaseException):
            error = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.status = "failed"
        self.error = _ANSI.sub("", str(error))
        self.finished_at = _now()
        self.metrics_path.unlink(missing_ok=True)
        self._write()
        write_index(self.root)

    # ------------------------------------------------------------------ IPython
    def _register_hook(self) -> None:
        try:
            from IPython import get_ipython
        except ImportError:  # pragma: no cover - IPython is a dependency
            return
        ip = get_ipython()
        if ip is None:
            return
        # Re-running the report cell in Jupyter must not leave the previous report's hook behind.
        for cb in list(ip.events.callbacks.get("post_run_cell", [])):
            owner = getattr(cb, "__self__", None)
            if isinstance(owner, Report):
                ip.events.unregister("post_run_cell", cb)
        ip.events.register("post_run_cell", self._post_run_cell)
        self._hook = ip

    def _unregister_hook(self) -> None:
        if self._hook is not None:
            try:
                self._hook.events.unregister("post_run_cell", self._post_run_cell)
            except ValueError:
                pass
            self._hook = None

    def _post_run_cell(self, result: Any) -> None:
        err = getattr(result, "error_in_exec", None) or getattr(result, "error_before_exec", None)
        if err is None:
            return
        self.fail(err)

    # ------------------------------------------------------------------ output
    def _state(self) -> dict[str, Any]:
        return {
            "run": self.run_name,
            "notebook": self.notebook,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": (self.error or "").strip().splitlines()[-1:] or None,
        }

    def _write(self) -> None:
        atomic_write_text(self.html_path, self.render())
        atomic_write_text(self.state_path, json.dumps(self._state(), indent=2) + "\n")

    def render(self) -> str:
        """The full HTML document for the current state."""
        title = html.escape(self.run_name)
        status = html.escape(self.status)
        params_rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(json.dumps(v))}</td></tr>"
            for k, v in self.params.items()
        )
        error = ""
        if self.error:
            error = (
                "<h2>Error</h2><p>A cell raised; the run stopped here.</p>"
                f'<pre class="error">{html.escape(self.error)}</pre>'
            )
        finished = f" &middot; finished {html.escape(self.finished_at)}" if self.finished_at else ""
        live = ""
        if self.status == "running" and self._live:
            cols = ("step", "tokens", "loss", "tokens_per_s", "val_loss", "val_bpb", "updated")
            head = "".join(f"<th>{c}</th>" for c in ("run", *cols))
            rows = "".join(
                f"<tr><td>{html.escape(run)}</td>"
                + "".join(f"<td>{html.escape(_fmt(fig.get(c)))}</td>" for c in cols)
                + "</tr>"
                for run, fig in self._live.items()
            )
            live = f"<h2>Latest metrics</h2><table><tr>{head}</tr>{rows}</table>"
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title} - mswelu report</title><style>{_CSS}</style></head><body>"
            f"<h1>{title}</h1>"
            f'<p class="meta"><span class="status status-{status}">{status}</span> &middot; '
            f"notebook {html.escape(self.notebook)} &middot; started {html.escape(self.started_at)}{finished}"
            ' &middot; <a href="../index.html">all runs</a>'
            + (
                ' &middot; <a href="report.previous.html">the previous complete report</a>'
                if self.previous
                else ""
            )
            + "</p>"
            f"<details><summary>Parameters ({len(self.params)})</summary><table>"
            f"<tr><th>name</th><th>value</th></tr>{params_rows}</table></details>"
            f"<details><summary>Provenance</summary><pre>{html.escape(json.dumps(self.provenance, indent=1))}"
            "</pre></details>"
            f"{error}{live}{''.join(self._sections)}</body></html>\n"
        )


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
    """Every training run folder under ``runs_root`` (from notebooks or ``python -m mswelu.train``),
    newest first, with its status and final figures read from ``summary.json`` / ``config.json``."""
    from mswelu import runs

    found = []
    for path in runs.list_runs(runs_root):  # newest first
        run = runs.load_run(path)
        if path.name.startswith(".") or not run.config:
            continue
        summary = run.summary or {}
        if summary:
            status = "interrupted" if summary.get("interrupted") else "complete"
        else:
            status = "running"  # or stopped without a summary: its checkpoints say how far it got
        name = path.relative_to(runs_root).as_posix()
        found.append((runs.last_written(path), name, status, run.config, summary))
    if not found:
        return ""
    cols = ("run", "status", "preset", "activation", "steps", "tokens", "val loss", "val bpb", "date")
    head = "".join(f"<th>{c}</th>" for c in cols)
    rows = []
    for when, name, status, config, summary in found:
        date = _dt.datetime.fromtimestamp(when, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        figures = [
            config.get("preset"),
            config.get("activation"),
            summary.get("steps"),
            summary.get("tokens"),
            summary.get("val_loss"),
            summary.get("val_bpb"),
        ]
        css = "failed" if status == "interrupted" else status
        status_cell = f'<span class="status status-{css}">{status}</span>'
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{status_cell}</td>"
            + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in figures)
            + f"<td>{date}</td></tr>"
        )
    return (
        f'<h2>Training runs</h2><p class="meta">{len(rows)} run folder(s) under runs/, from notebooks '
        f"or the command line</p><table><tr>{head}</tr>{''.join(rows)}</table>"
    )


def write_index(
    root: str | os.PathLike[str] | None = None, runs_root: str | os.PathLike[str] | None = None
) -> Path:
    """Regenerate ``<reports>/index.html``: every report with its status and key figures, then every
    training run folder (``runs_root``, default ``runs/`` beside the reports folder)."""
    root = Path(root) if root is not None else reports_dir()
    runs_root = Path(runs_root) if runs_root is not None else root.parent / "runs"
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        state = load_report_state(run_dir)
        if state is None:
            continue
        metrics = state.get("metrics") or {}
        rows.append((state.get("finished_at") or state.get("started_at") or "", run_dir.name, state, metrics))
    rows.sort(key=lambda r: r[0], reverse=True)
    columns = ("run", "status", "notebook", *INDEX_COLUMNS, "date")
    header = "".join(f"<th>{html.escape(h)}</th>" for h in columns)
    body = []
    for date, name, state, metrics in rows:
        status = str(state.get("status", "?"))
        link = f'<a href="{html.escape(name, quote=True)}/report.html">{html.escape(name)}</a>'
        cells = [
            link,
            f'<span class="status status-{html.escape(status)}">{html.escape(status)}</span>',
            html.escape(str(state.get("notebook", ""))),
        ]
        cells += [html.escape(_fmt(_key_figure(metrics, names))) for names in INDEX_COLUMNS.values()]
        cells.append(html.escape(date))
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    doc = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>mswelu runs</title>'
        f"<style>{_CSS}</style></head><body><h1>mswelu runs</h1>"
        f'<p class="meta">{len(body)} report(s), newest first; generated {_now()}</p>'
        f"<table><tr>{header}</tr>{''.join(body)}</table>{_training_runs_table(runs_root)}</body></html>\n"
    )
    return atomic_write_text(root / "index.html", doc)
