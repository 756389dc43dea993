"""One notebook run's report: ``reports/<run>/report.html``, its state and ``metrics.json``."""

from __future__ import annotations

import base64
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

import pandas as pd
import torch
from IPython import get_ipython

from mswelu.base.errors import RunInterrupted, RunRefused
from mswelu.base.fs import atomic_write_text
from mswelu.base.paths import reports_dir
from mswelu.base.provenance import provenance
from mswelu.ops import cpu_kernels
from mswelu.report.index import write_index
from mswelu.report.markup import badge, captioned, document, markdown_to_html, now, table
from mswelu.report.tables import table_html, verdicts_html

__all__ = ["Report", "sanitize_params"]

_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SECRET_PARTS = {"token", "secret", "key", "password", "passwd", "pwd", "apikey", "credential", "credentials"}
_SECRET_VALUE = re.compile(r"^(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,})$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LIVE_COLUMNS = ("step", "tokens", "loss", "tokens_per_s", "val_loss", "val_bpb", "updated")


def _cpu_kernels_used() -> dict[str, str]:
    """Whether this CPU machine runs the scan, SWELU and the loss with mswelu's compiled kernels."""
    if torch.cuda.is_available():
        return {}
    ok, why = cpu_kernels.available()
    return {"cpu_kernels": f"in use ({cpu_kernels.describe()['capability']})" if ok else f"not used: {why}"}


def _is_secret_name(name: str) -> bool:
    parts = [p for p in re.split(r"[^a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()) if p]
    return any(p in _SECRET_PARTS for p in parts) or "apikey" in name.lower()


def sanitize_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop parameters that look like credentials (by name or value) and make the rest JSON-safe."""
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


class Report:
    """The HTML report of one notebook run (``reports/<run_name>/report.html``); ``params`` shown
    collapsed without credentials. ``defer`` writes nothing until the first content (or :meth:`open`), so a
    run refused before then leaves the folder as it was."""

    def __init__(
        self,
        run_name: str,
        notebook: str,
        params: dict[str, Any] | None = None,
        root: str | os.PathLike[str] | None = None,
        register_hook: bool = True,
        defer: bool = False,
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
        self.started_at = now()
        self.reuse_named = False  # whether a reused run's line has named this report (it is named once)
        self.finished_at: str | None = None
        self.error: str | None = None
        self.metrics: dict[str, Any] = {}
        self.previous: Path | None = None
        self._sections: list[str] = []
        self.provenance = provenance()  # versions, git commit, device: what produced these numbers
        self.provenance.update(_cpu_kernels_used())
        self._live: dict[str, dict[str, Any]] = {}  # run -> its newest train and eval figures
        self._live_written = 0.0
        self._figure_count = 0
        self._hook: Any = None
        self.opened = False
        if not defer:
            self.open()
        if register_hook:
            self._register_hook()

    def open(self) -> None:
        """Write the report and the index, keeping a complete earlier report as ``*.previous.*``."""
        if self.opened:
            return
        self.opened = True
        self.dir.mkdir(parents=True, exist_ok=True)
        self.previous = self._keep_previous()
        self.metrics_path.unlink(missing_ok=True)  # a stale metrics.json would claim success
        self._write()
        write_index(self.root)

    def _keep_previous(self) -> Path | None:
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

    def add_markdown(self, text: str) -> None:
        """Add a block of Markdown (raw HTML inside it is escaped)."""
        self._sections.append(f'<section class="md">{markdown_to_html(str(text))}</section>')
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
        """Add a DataFrame as a readable table (:func:`mswelu.report.tables.table_html`)."""
        self._sections.append(captioned(table_html(df), caption))
        self._write()

    def add_verdicts(self, claims: Any, caption: str | None = None) -> None:
        """Add a claims table (:func:`mswelu.report.tables.verdicts_html`)."""
        frame = claims if isinstance(claims, pd.DataFrame) else pd.DataFrame(claims)
        if "claim" not in frame.columns and frame.index.name == "claim":
            frame = frame.reset_index()
        self._sections.append(captioned(verdicts_html(frame), caption))
        self._write()

    def add_metrics(self, metrics: dict[str, Any], caption: str | None = None) -> None:
        """Show key figures as a two-column table and remember them for ``metrics.json``."""
        if not isinstance(metrics, dict):
            raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
        clean = sanitize_params(metrics)
        self.metrics.update(clean)
        rows = [(k, v) for k, v in clean.items() if not isinstance(v, (dict, list))]
        self._sections.append(captioned(table(("metric", "value"), rows), caption))
        self._write()

    def add_text(self, text: str) -> None:
        """Add preformatted text (samples, logs), escaped."""
        self._sections.append(f"<pre>{html.escape(str(text))}</pre>")
        self._write()

    def update_params(self, values: dict[str, Any]) -> None:
        """Record the values a run used, so the report shows effective settings."""
        self.params.update(sanitize_params({k: v for k, v in values.items() if v is not None}))
        self._write()

    def live(self, run: str, record: dict[str, Any]) -> None:
        """Show a run's newest metrics (``on_metrics``), written at most every 2 s."""
        figures = self._live.setdefault(str(run), {})
        if isinstance(record.get("device"), dict):  # a device sample: its figures, the losses kept
            shown = ("cpu_percent", "rss_gb", "_util", "_mem_used_gb")
            figures["device"] = {k: v for k, v in record["device"].items() if k.endswith(shown)}
            return
        keys = ("val_loss", "val_bpb") if "val_loss" in record else ("loss", "tokens_per_s")
        figures.update({"step": record.get("step"), "tokens": record.get("tokens"), "updated": now()})
        figures.update({k: record.get(k) for k in keys})
        moment = time.monotonic()
        if "val_loss" in record or moment - self._live_written >= 2.0:
            self._live_written = moment
            self._write()

    def finish(self, metrics: dict[str, Any] | None = None) -> Path:
        """Mark the run complete, write ``metrics.json`` and the index; returns the metrics path."""
        if metrics is not None:
            if not isinstance(metrics, dict):
                raise ValueError(f"metrics must be a dict, got {type(metrics).__name__}")
            self.metrics.update(sanitize_params(metrics))
        self.open()
        self.status = "complete"
        self.finished_at = now()
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
        self.open()
        self.status = "failed"
        self.error = _ANSI.sub("", str(error))
        self.finished_at = now()
        self.metrics_path.unlink(missing_ok=True)
        self._write()
        write_index(self.root)

    def interrupted(self, message: str) -> None:
        """Mark the run interrupted: ``message`` says how to continue; no ``metrics.json``."""
        self.open()
        self.status = "interrupted"
        self.error = message
        self.finished_at = now()
        self.metrics_path.unlink(missing_ok=True)
        self._write()
        write_index(self.root)
        self._unregister_hook()

    def _register_hook(self) -> None:
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
        if isinstance(err, RunRefused) and not self.opened:
            return  # refused before the report was written: the earlier one stays as it was
        if isinstance(err, RunInterrupted):
            self.interrupted(str(err))
            return
        self.fail(err)

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
        if not self.opened:
            self.open()  # writes
            return
        atomic_write_text(self.html_path, self.render())
        atomic_write_text(self.state_path, json.dumps(self._state(), indent=2) + "\n")

    def render(self) -> str:
        """The full HTML document for the current state."""
        params = table(("name", "value"), [(k, json.dumps(v)) for k, v in self.params.items()])
        error = ""
        if self.error and self.status == "interrupted":
            error = f"<h2>Interrupted</h2><p>{html.escape(self.error)}</p>"
        elif self.error:
            error = (
                "<h2>Error</h2><p>A cell raised; the run stopped here.</p>"
                f'<pre class="error">{html.escape(self.error)}</pre>'
            )
        finished = f" &middot; finished {html.escape(self.finished_at)}" if self.finished_at else ""
        live = ""
        if self.status == "running" and self._live:
            device = list(dict.fromkeys(k for fig in self._live.values() for k in fig.get("device", {})))
            rows = [
                (run, *(fig.get(c) for c in _LIVE_COLUMNS), *(fig.get("device", {}).get(k) for k in device))
                for run, fig in self._live.items()
            ]
            live = f"<h2>Latest metrics</h2>{table(('run', *_LIVE_COLUMNS, *device), rows)}"
        previous = ""
        if self.previous:
            previous = ' &middot; <a href="report.previous.html">the previous complete report</a>'

        body = (
            f"<h1>{html.escape(self.run_name)}</h1>"
            f'<p class="meta">{badge(self.status)} &middot; '
            f"notebook {html.escape(self.notebook)} &middot; started {html.escape(self.started_at)}{finished}"
            f' &middot; <a href="../index.html">all runs</a>{previous}</p>'
            f"<details><summary>Parameters ({len(self.params)})</summary>{params}</details>"
            f"<details><summary>Provenance</summary><pre>{html.escape(json.dumps(self.provenance, indent=1))}"
            "</pre></details>"
            f"{error}{live}{''.join(self._sections)}"
        )
        return document(f"{self.run_name} - mswelu report", body)
