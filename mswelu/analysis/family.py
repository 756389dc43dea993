"""Which rows of a claims table share one error rate, and what a row that does not survive it reads.

Every row that ran a test is in the family, whatever its verdict (with only the decided rows, 6.3-7.5% of
simulated null studies showed a false "supported"; 0.5% this way: ``tests/test_verdicts.py``). A row repeating
another's test (equal FLOPs at equal FLOPs per token) takes its twin's adjusted p and counts once. A
pre-registered ``primary`` claim is tested alone at ``alpha``; the exploratory rows are corrected together
(Holm). A decided row whose adjusted p exceeds ``alpha`` reads **inconclusive** and says why.
"""

from __future__ import annotations

import math

import pandas as pd

from mswelu.base import stats

__all__ = ["DECIDED", "apply_family"]

#: the verdicts that rest on a test (and can be demoted by the correction)
DECIDED = ("supported", "refuted", "not reproduced at this scale")


def apply_family(df: pd.DataFrame, alpha: float = stats.ALPHA, primary: str = "") -> pd.DataFrame:
    """``df`` with ``role``, ``p (Holm)`` and ``Holm`` filled in and the rows that do not survive demoted."""
    df = df.copy()
    if primary and primary not in set(df.claim):
        raise ValueError(f"the primary contrast {primary!r} is not one of this study's claims")
    p = pd.to_numeric(df["p"], errors="coerce").astype(float)
    tested = p.map(math.isfinite)
    twin = _twins(df)
    is_primary = df.claim == primary if primary else pd.Series(False, index=df.index)
    family = tested & ~is_primary & twin.isna()
    adjusted = pd.Series(math.nan, index=df.index)
    adjusted[family] = stats.holm(p[family].tolist())
    adjusted[is_primary & tested] = p[is_primary & tested]
    for i, j in twin.dropna().items():
        adjusted[i] = adjusted[j]
    df["role"] = [
        "primary" if prim else ("exploratory" if t else "")
        for prim, t in zip(is_primary, tested, strict=True)
    ]
    df["p (Holm)"] = adjusted
    m = int(family.sum())
    holm, verdicts, whys = [], [], []
    for i, row in df.iterrows():
        a = float(adjusted[i])
        verdict, why = row["verdict"], row["why"]
        if not math.isfinite(a):
            holm.append("")
        else:
            survives = a <= alpha
            holm.append("survives" if survives else "does not survive")
            if is_primary[i]:
                holm[-1] = f"primary, alone at {alpha:g}: " + holm[-1]
            elif not pd.isna(twin[i]):
                holm[-1] = f"the test of {df.claim[twin[i]]!r} again: " + holm[-1]
            if not survives and verdict in DECIDED:
                over = "tested alone" if is_primary[i] else f"Holm's correction over {m} exploratory rows"
                figures = f"p {row['p']:.2g}, adjusted {a:.2g} > {alpha:g}"
                why = f"does not survive {over} ({figures}); the test alone said {verdict!r}: {why}"
                verdict = "inconclusive"
        verdicts.append(verdict)
        whys.append(why)
    df["Holm"], df["verdict"], df["why"] = holm, verdicts, whys
    return df


def _twins(df: pd.DataFrame) -> pd.Series:
    """For each row repeating another's test (``inputs["same_test_as"]``), that row's index, else NaN."""
    own = {}
    for i, inputs in df["inputs"].items():
        sig = (inputs or {}).get("test_signature")
        if sig:
            own.setdefault(sig, i)
    out = pd.Series(math.nan, index=df.index, dtype=object)
    for i, inputs in df["inputs"].items():
        same = (inputs or {}).get("same_test_as")
        if same and same in own and own[same] != i:
            out[i] = own[same]
    return out
