"""A study's ledger holds only the records it names: a sweep point of a later seed only where the study
asks for several sweep seeds (``sweep_seeds``), with that seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from mswelu.training.variants import variant_overrides
from mswelu.workbook.ledger import Record
from mswelu.workbook.ledger_files import LedgerError
from mswelu.workbook.record_checks import check_study_records


def _sweep_record(name: str, seed: int, lr: float) -> Record:
    settings = {**variant_overrides("mamba", "tiny"), "lr": lr, "seed": seed}
    key = {"settings": settings, "data_fingerprint": "d"}
    return Record(name=name, variant="mamba", seed=seed, kind="sweep", key=key, final={}, curve=[])


def test_a_later_seeds_sweep_point_is_named_only_when_the_study_asks_for_it(tmp_path: Path) -> None:
    params = {"variants": ["mamba"], "seeds": [0], "preset": "tiny"}
    records = {"st-tune-mamba-lr0.01": _sweep_record("st-tune-mamba-lr0.01", 0, 0.01)}
    records["st-tune-mamba-lr0.01-s1"] = _sweep_record("st-tune-mamba-lr0.01-s1", 1, 0.01)
    check_study_records("st", {**params, "sweep_seeds": 2}, records, tmp_path)
    with pytest.raises(LedgerError, match="st-tune-mamba-lr0.01-s1.json is refused: the study names no run"):
        check_study_records("st", params, records, tmp_path)
    records["st-tune-mamba-lr0.01-s1"].seed = 2  # a record whose seed is not its name's
    with pytest.raises(LedgerError, match="its seed is 2, the study expects 1"):
        check_study_records("st", {**params, "sweep_seeds": 2}, records, tmp_path)
