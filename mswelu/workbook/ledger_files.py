"""Reading a ledger's JSON files (records, ``throughput.json``) so that a damaged one is one line naming the
file, what is wrong with it and what to do, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["REBUILD", "LedgerError", "read_ledger_json"]

#: what to do about a damaged or foreign ledger file
REBUILD = "restore it (git checkout) or rerun the study (notebook 05) to rebuild the records"


class LedgerError(ValueError):
    """A ledger file that cannot be used: the message names the file, what is wrong and what to do."""


def read_ledger_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; :class:`LedgerError` for a missing, empty or broken file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LedgerError(f"{path} is missing: {REBUILD}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerError(f"{path} cannot be read ({exc}): {REBUILD}") from None
    if not text.strip():
        raise LedgerError(f"{path} is empty: {REBUILD}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LedgerError(f"{path} is not valid JSON (truncated? {exc}): {REBUILD}") from None
    if not isinstance(doc, dict):
        raise LedgerError(
            f"{path} holds {type(doc).__name__ if doc is not None else 'null'}, not a record: {REBUILD}"
        )
    return doc
