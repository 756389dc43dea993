"""A committed study re-judged by today's rules from its ``metrics.json`` alone, e.g. the first study's run of
2026-12-02: ``python -m mswelu.analysis.rejudge reports/studies/mamba-swelu-cpu/2026-12-02
reports/studies/mamba-swelu-cpu/2026-12-02/k`` rewrites its ``verdicts.md`` and ``verdicts.json``;
``tests/test_verdicts.py`` checks the committed files.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mswelu.analysis.claims import COMPARABLE_FRACTION
from mswelu.analysis.tables import verdicts_markdown, verdicts_records

__all__ = ["RULES", "rejudged", "write_rejudged"]

#: the rules a re-judged table applies, in words (the module docstring of
#: :mod:`mswelu.analysis.verdicts` has them in full)
RULES = (
    "one verdict vocabulary (supported / refuted / not reproduced at this scale / not"
    f" tested / inconclusive); one scale rule (a claim is comparable from {COMPARABLE_FRACTION:.0%} of its "
    "tokens and parameters); the premise, treatment and trained-variant checks (a "
    "variant the study never trained: not tested); the lr rule (an optimum at the "
    "edge of the grid keeps a verdict only if it survives one more grid step); two-"
    "sided equivalence (TOST, +-5%) for 'comparable to GPT-2'; p-values with Holm's "
    "correction over every row that ran a test (a pre-registered primary contrast "
    "alone), a row that does not survive it reading inconclusive; the minimal "
    "detectable effect at 80% power; each row states the scale, data, tokenizer and "
    "text split(s) it was judged on"
)


def _paths(study: str | Path, companions: Sequence[str | Path]) -> tuple[Path, list[Path]]:
    return Path(study), [Path(c) / "metrics.json" for c in companions]


def rejudged(study: str | Path, companions: Sequence[str | Path] = ()) -> tuple[str, dict[str, Any]]:
    """``(verdicts.md text, verdicts.json document)`` of the study in ``study``, with the seeds' counts."""
    from mswelu.analysis.counts import architecture_claims
    from mswelu.analysis.reader import read_study
    from mswelu.analysis.verdicts import recompute

    folder, comps = _paths(study, companions)
    name = folder.name
    rows = recompute(folder / "metrics.json", comps)
    missing = read_study(folder / "metrics.json", comps).missing
    counts = architecture_claims()
    call = f"mswelu.analysis.recompute({str(folder / 'metrics.json')!r}, {[str(c) for c in comps]!r})"
    doc = {
        "study": name,
        "generated_by": call,
        "rules": RULES,
        "missing": missing,
        "rows": verdicts_records(rows),
        "counts": verdicts_records(counts),
    }
    lines = [
        f"# {name}, re-judged",
        "",
        f"The study's claims recomputed from its committed `metrics.json` alone by today's rules: {RULES}.",
        "",
        f"Recompute: `python -m mswelu.analysis.rejudge {folder} {' '.join(str(c) for c in companions)}`"
        f" (`{call}`); `tests/test_verdicts.py` checks that these files are what it gives.",
        "",
    ]
    if missing:
        lines += ["What this `metrics.json` lacks (the rows that need it say so):", ""]
        lines += [f"- {what}: {why}" for what, why in missing.items()]
        lines.append("")
    scales = list(dict.fromkeys(rows.scale))
    lines += ["Judged on:", "", *(f"- {s}" for s in scales), ""]
    lines.append(verdicts_markdown(rows))
    lines += ["The seeds' counts, on the architecture they specify (`seed-124m`, counted, no training):", ""]
    lines.append(verdicts_markdown(counts, ["claim", "measured", "verdict", "why"]))
    return "\n".join(lines), doc


def write_rejudged(study: str | Path, companions: Sequence[str | Path] = ()) -> list[Path]:
    """:func:`rejudged` written to ``verdicts.md`` and ``verdicts.json`` in ``study`` (atomic writes)."""
    from mswelu.base.fs import atomic_write_json, atomic_write_text

    text, doc = rejudged(study, companions)
    folder = Path(study)
    return [atomic_write_text(folder / "verdicts.md", text), atomic_write_json(folder / "verdicts.json", doc)]


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m mswelu.analysis.rejudge STUDY_FOLDER [COMPANION_FOLDER ...]")
    missing = [p for p in sys.argv[1:] if not (Path(p) / "metrics.json").is_file()]
    if missing:
        sys.exit(f"no metrics.json in {', '.join(missing)}")
    for path in write_rejudged(sys.argv[1], sys.argv[2:]):
        print(path)
