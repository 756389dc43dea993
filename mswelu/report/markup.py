"""The HTML every report and index page is made of: one stylesheet, one number format, one table. Everything
is escaped unless it is :class:`Html` (markup built here from escaped parts).
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

__all__ = [
    "CSS",
    "Html",
    "badge",
    "captioned",
    "document",
    "fmt",
    "format_column",
    "markdown_to_html",
    "now",
    "table",
]

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}.meta{color:#666;font-size:.9em}
.status{display:inline-block;padding:.15em .6em;border-radius:.4em;color:#fff;font-weight:600}
.status-running{background:#b7791f}.status-complete{background:#2f855a}.status-failed{background:#c53030}.status-interrupted{background:#6b46c1}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;border:1px solid #eee}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
pre.error{background:#fff5f5;border-left:4px solid #c53030}
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
details{margin:1em 0}summary{cursor:pointer;font-weight:600}
div.frame{overflow-x:auto}table.frame td{vertical-align:top}
table.frame .name{text-align:left;white-space:nowrap}table.frame .text{text-align:left;min-width:6em}
table.frame .num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:.1em .5em;border-radius:.4em;color:#fff;font-weight:600;
white-space:nowrap}
.verdict-supported{background:#2f855a}.verdict-refuted{background:#c53030}
.verdict-not-reproduced{background:#c05621}.verdict-not-tested,.verdict-other{background:#718096}
.verdict-inconclusive{background:#cbd5e0;color:#1a202c}
.caveat{background:#fffbea;border-left:4px solid #d69e2e;padding:.4em .8em;font-size:.9em;margin:.6em 0}
.caveat ol{margin:.3em 0}
"""


class Html(str):
    """Markup that goes into a page as it is (built from escaped parts); any other text is escaped."""


def now() -> str:
    """The time stamps pages show: ``2026-12-04 20:25:31 UTC``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt(value: Any) -> str:
    """A value as pages show it: yes / no, counts with separators, floats to 4 digits, ``-`` for nothing."""
    if value is None:
        return "-"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        if 1000 <= abs(value) < 1e15:  # counts and rates: whole, with separators like every count
            return f"{value:,.0f}"
        if value != 0 and abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _decimals(values: Sequence[float]) -> int:
    """Decimals for a column: about four significant digits, no more than needed, at most six."""
    typical = float(pd.Series([abs(v) for v in values if v != 0] or [0.0]).median())
    if typical >= 1000:
        return 0
    wanted = (4 if typical >= 1 else 3) - 1 - math.floor(math.log10(typical)) if typical > 0 else 0
    wanted = min(6, max(0, wanted))
    for d in range(wanted + 1):
        if all(abs(v - round(v, d)) <= 1e-9 * max(1.0, abs(v)) for v in values):
            return d
    return wanted


def format_column(values: Sequence[Any]) -> list[str]:
    """A column's cells: yes / no, one number of decimals for the column, separators, ``-`` for missing."""
    values = list(values)
    present = [v for v in values if not _missing(v)]
    if present and all(_is_bool(v) for v in present):
        return ["-" if _missing(v) else ("yes" if v else "no") for v in values]
    if present and all(_is_number(v) for v in present):
        numbers_ = [float(v) for v in present]
        finite = [v for v in numbers_ if math.isfinite(v)]
        if all(v == round(v) for v in finite):
            shown = {i: f"{int(v):,}" for i, v in enumerate(numbers_) if math.isfinite(v)}
        else:
            d = _decimals(finite)
            shown = {i: f"{v:,.{d}f}" for i, v in enumerate(numbers_) if math.isfinite(v)}
        out, k = [], 0
        for v in values:
            if _missing(v):
                out.append("-")
            else:
                out.append(shown.get(k, "-"))
                k += 1
        return out
    return [
        "-" if _missing(v) else v if isinstance(v, Html) else fmt(v) if _is_number(v) else str(v)
        for v in values
    ]


def _cell(value: Any) -> str:
    return value if isinstance(value, Html) else html.escape(fmt(value))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], by_column: bool = False) -> Html:
    """A table with a header row, cells :func:`fmt`-ed (``by_column``: per column) and escaped."""
    rows = [list(row) for row in rows]
    if by_column and rows:
        columns_shown = [format_column(col) for col in zip(*rows, strict=True)]
        rows = [list(row) for row in zip(*columns_shown, strict=True)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return Html(f"<table><tr>{head}</tr>{body}</table>")


def captioned(content: str, caption: str | None) -> Html:
    """A section of a report: ``content`` (markup) under a bold caption."""
    cap = f"<p><b>{html.escape(caption)}</b></p>" if caption else ""
    return Html(f"<section>{cap}{content}</section>")


def badge(status: str, css: str | None = None) -> Html:
    """A coloured status label (``running``, ``complete``, ``failed``; ``css`` picks another colour)."""
    return Html(f'<span class="status status-{html.escape(css or status)}">{html.escape(status)}</span>')


def document(title: str, body: str) -> str:
    """A whole self-contained page: ``title`` (escaped) and ``body`` (markup) with the stylesheet."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n"
    )


def markdown_to_html(text: str) -> str:
    """Markdown with raw HTML escaped (mistune ships with nbconvert); plain escaped text as a fallback."""
    try:
        import mistune  # optional: the fallback below works without it

        md = mistune.create_markdown(escape=True, plugins=["table", "strikethrough"])
        return str(md(text))
    except Exception:  # pragma: no cover - mistune missing or broken
        return f"<pre>{html.escape(text)}</pre>"
