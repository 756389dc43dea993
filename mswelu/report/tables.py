"""Tables a reader takes in at a glance: readable column names, one number format per column, names that never
wrap, and the claims table with a badge per verdict and each caveat said once above it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mswelu.report.markup import Html, _is_number, _missing, format_column

__all__ = [
    "COLUMN_NAMES",
    "VERDICT_BADGES",
    "format_column",
    "readable_name",
    "readable_table",
    "table_html",
    "verdict_badge",
    "verdicts_html",
]

#: how a column of the package's frames is headed in a report (others: see :func:`readable_name`)
COLUMN_NAMES = {
    "val_loss": "val loss",
    "val_bpb": "val bpb",
    "val_ppl": "val perplexity",
    "val_tokens": "val tokens",
    "val_scope": "val scope",
    "train_loss": "train loss",
    "final_train_loss": "final train loss",
    "final_val_loss": "final val loss",
    "final_val_bpb": "final val bpb",
    "best_val_bpb": "best val bpb",
    "tune_val_loss": "tuning val loss",
    "tokens_per_s": "tokens/s",
    "wall_time_s": "wall time (s)",
    "params": "parameters",
    "flops_per_token": "FLOPs/token",
    "prompt_len": "prompt tokens",
    "new_tokens": "new tokens",
    "same_tokens": "same tokens",
    "seconds": "seconds (median)",
    "seconds_min": "fastest (s)",
    "seconds_max": "slowest (s)",
    "warmup": "warm-up runs",
    "repeats": "timed runs",
}

#: the CSS class of each verdict's badge (:data:`mswelu.analysis.verdicts.VERDICTS`; others: grey)
VERDICT_BADGES = {
    "supported": "supported",
    "refuted": "refuted",
    "not reproduced at this scale": "not-reproduced",
    "not tested": "not-tested",
    "inconclusive": "inconclusive",
}
_CAVEAT_COLUMNS = ("scale", "caveat")
_VERDICT_SHOWN = (
    "claim",
    "seed says",
    "compares",
    "view",
    "measured",
    "verdict",
    "role",
    "p (Holm)",
    "MDE (80%)",
    "why",
)


def readable_name(name: Any) -> str:
    """``final_train_loss`` -> ``final train loss``, ``wall_time_s`` -> ``wall time (s)``,
    ``tokens_per_s`` -> ``tokens/s``, ``val_bpb seed sd`` -> ``val bpb seed sd``."""
    text = str(name)
    if " " in text:  # "val_bpb seed sd": each word on its own
        return " ".join(readable_name(word) for word in text.split(" "))
    if text in COLUMN_NAMES:
        return COLUMN_NAMES[text]
    if "_" not in text:
        return text
    text = text.replace("_per_", "/")
    if text.endswith("_s"):
        text = text[:-2] + " (s)"
    return text.replace("_", " ")


def _with_index(frame: Any) -> pd.DataFrame:
    """``frame`` as a DataFrame whose meaningful index (named, or not 0..n-1) is its first column."""
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    plain = isinstance(df.index, pd.RangeIndex) and df.index.name is None and df.index.start == 0
    if not plain:  # one column per index level (a MultiIndex: run and task, variant and group, ...)
        names = [
            n if n is not None else ("" if df.index.nlevels == 1 else f"level {i}")
            for i, n in enumerate(df.index.names)
        ]
        names = [n if n not in df.columns else f"{n} " for n in names]
        df = df.reset_index(names=names if df.index.nlevels > 1 else names[0])
    return df


def readable_table(frame: Any) -> pd.DataFrame:
    """``frame`` as text cells under readable headers; a meaningful index becomes the first column."""
    df = _with_index(frame)
    out = pd.DataFrame(  # object cells: pandas' string dtype would turn markup (Html) into plain text
        {i: pd.Series(format_column(df.iloc[:, i].tolist()), dtype=object) for i in range(df.shape[1])}
    )
    out.columns = [readable_name(c) for c in df.columns]
    return out


def table_html(frame: Any) -> Html:
    """:func:`readable_table`'s cells escaped: names never wrap, numbers right-aligned."""
    source = _with_index(frame)
    df = readable_table(source)
    css = []
    for i in range(source.shape[1]):
        present = [v for v in source.iloc[:, i] if not _missing(v)]
        if present and all(isinstance(v, str) and not v.split()[1:] for v in present):
            css.append("name")  # names (runs, variants: single words) stay on one line
        elif present and all(_is_number(v) for v in present):
            css.append("num")
        else:
            css.append("text")
    head = "".join(
        f'<th class="{k}">{html.escape(str(c))}</th>' for k, c in zip(css, df.columns, strict=True)
    )
    rows = []
    for row in df.itertuples(index=False):
        cells = (v if isinstance(v, Html) else html.escape(str(v)) for v in row)
        rows.append(
            "<tr>" + "".join(f'<td class="{k}">{c}</td>' for k, c in zip(css, cells, strict=True)) + "</tr>"
        )
    return Html(f'<div class="frame"><table class="frame"><tr>{head}</tr>{"".join(rows)}</table></div>')


def verdict_badge(verdict: str) -> Html:
    """A verdict as a coloured badge."""
    css = VERDICT_BADGES.get(str(verdict), "other")
    return Html(f'<span class="verdict verdict-{css}">{html.escape(str(verdict))}</span>')


def verdicts_html(claims: pd.DataFrame, columns: Sequence[str] = _VERDICT_SHOWN) -> Html:
    """A claims table: verdicts counted, each caveat once above it, verdict badges."""
    caveat_col = next((c for c in _CAVEAT_COLUMNS if c in claims.columns), None)
    caveats: list[str] = []
    marks: list[str] = []
    if caveat_col is not None:
        for text in claims[caveat_col].fillna("").astype(str):
            if text and text not in caveats:
                caveats.append(text)
            marks.append(f"[{caveats.index(text) + 1}]" if text else "")
    shown = [c for c in columns if c in claims.columns]
    df = claims[shown].copy()
    if "verdict" in df.columns:  # object cells: pandas' string dtype would turn the badges into text
        df["verdict"] = pd.Series([verdict_badge(v) for v in df["verdict"]], index=df.index, dtype=object)
    if len(caveats) > 1:
        df["caveat"] = marks
    counts = claims["verdict"].value_counts() if "verdict" in claims.columns else pd.Series(dtype=int)
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    parts = [f'<p class="meta">{len(claims)} claim(s): {html.escape(summary)}</p>'] if summary else []
    if "role" in claims.columns and (claims["role"] != "").any():
        primary = claims.loc[claims["role"] == "primary", "claim"].tolist()
        said = f"primary (pre-registered, tested alone): {primary[0]}" if primary else "no primary contrast"
        parts.append(
            f'<p class="meta">{html.escape(said)}; every other tested row is exploratory, Holm-corrected '
            "together; a row that does not survive reads inconclusive</p>"
        )
    if len(caveats) == 1:
        parts.append(f'<p class="caveat"><b>Caveat (every row):</b> {html.escape(caveats[0])}</p>')
    elif caveats:
        items = "".join(f"<li>{html.escape(c)}</li>" for c in caveats)
        parts.append(f'<div class="caveat"><b>Caveats</b> (numbered in the table):<ol>{items}</ol></div>')
    parts.append(table_html(df))
    return Html("".join(parts))
