"""Self-contained HTML reports for notebook runs, and the index of all runs (modules: ``markup``, ``tables``,
``page``, ``index``).

A notebook creates ``Report(run_name, notebook, params)`` after its parameters cell; it is written at once
with status "running", an IPython ``post_run_cell`` hook rewrites it as "failed" with the traceback as soon as
a cell raises (so a crashed run never looks finished), and ``finish(metrics)`` writes "complete",
``metrics.json`` and the index. Everything is escaped, figures are base64 PNG, credential-like parameters are
dropped.
"""

from mswelu.report.index import STUDIES, load_report_state, write_index
from mswelu.report.page import Report, sanitize_params
from mswelu.report.tables import format_column, readable_name

__all__ = [
    "STUDIES",
    "Report",
    "format_column",
    "load_report_state",
    "readable_name",
    "sanitize_params",
    "write_index",
]
