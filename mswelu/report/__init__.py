"""Self-contained HTML reports for notebook runs, and the index of all runs.

A notebook creates ``Report(run_name, notebook, params)`` right after its parameters cell. The report is
written at once with status "running" (or, deferred, with its first content: a run refused before then
leaves an earlier report as it was); an IPython ``post_run_cell`` hook rewrites it with status "failed"
and the traceback as soon as any cell raises (papermill then stops with a non-zero exit), so a crashed
run never leaves a report that looks finished. ``finish(metrics)`` writes status "complete",
``reports/<run>/metrics.json`` and regenerates ``reports/index.html``.

Everything put into the HTML is escaped; figures are embedded as base64 PNG; parameters whose name looks
like a credential are dropped.

Modules: ``markup`` (the stylesheet, the number format, the one table), ``tables`` (data frames as a reader
takes them in: readable headers, one number format per column, the claims table with verdict badges and its
caveats once), ``page`` (:class:`Report`), ``index`` (:func:`write_index`).
"""

from mswelu.report.index import INDEX_COLUMNS, STUDIES, load_report_state, write_index
from mswelu.report.page import STATUSES, Report, sanitize_params
from mswelu.report.tables import (
    format_column,
    readable_name,
    readable_table,
    table_html,
    verdict_badge,
    verdicts_html,
)

__all__ = [
    "INDEX_COLUMNS",
    "STATUSES",
    "STUDIES",
    "Report",
    "format_column",
    "load_report_state",
    "readable_name",
    "readable_table",
    "sanitize_params",
    "table_html",
    "verdict_badge",
    "verdicts_html",
    "write_index",
]
