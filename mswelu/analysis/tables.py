"""How figures and claims rows are written out: token and parameter counts in words, and a claims table as
Markdown (the committed re-judged table of a study, README drafts)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["VERDICT_COLUMNS", "params_text", "tokens_text", "verdicts_markdown", "verdicts_records"]

#: what a reader of a claims table needs, in order (the full rows keep every column)
VERDICT_COLUMNS = ["claim", "compares", "view", "measured", "verdict", "why", "p", "p (Holm)", "MDE (80%)"]


def tokens_text(n: float) -> str:
    """``"620M tokens"``, ``"3.1B tokens"``, ``"384 tokens"``."""
    if not math.isfinite(n):
        return "? tokens"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit} tokens"
    return f"{n:.0f} tokens"


def params_text(n: float) -> str:
    """``"3.24M"``."""
    return f"{n / 1e6:.3g}M" if math.isfinite(n) else "?"


def _cell(value: Any, column: str, relative: bool) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if column == "MDE (80%)":
            return f"{value:.2%}" if relative else f"{value:.2g}"
        return f"{value:.2g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def verdicts_markdown(rows: pd.DataFrame, columns: Sequence[str] = VERDICT_COLUMNS) -> str:
    """A claims table as Markdown (the MDE in the effect's unit: % for relative effects)."""
    cols = [c for c in columns if c in rows.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows.to_dict("records"):
        rel = bool(r.get("relative", True))
        lines.append("| " + " | ".join(_cell(r[c], c, rel) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def verdicts_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-ready records without their ``inputs`` (NaN as None)."""
    df = rows.drop(columns=[c for c in ("inputs",) if c in rows.columns])
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in df.astype(object).to_dict("records")
    ]
