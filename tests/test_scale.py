"""A study's effect against scale (mswelu.workbook.ladder) on the committed studies' records: the gain along
training ends at the gain the final runs give, a ladder joins rungs in order of size from their own records,
and a rung that cannot be paired is refused with a clear error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mswelu.base import stats
from mswelu.workbook.ladder import effect_at_scale
from mswelu.workbook.study import study_from_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def first() -> object:
    return study_from_records("mamba-swelu-cpu", root=ROOT)


def _final_losses(study: str, variant: str) -> dict[int, float]:
    """Each seed's final whole-split val loss, read from the committed records' JSON directly."""
    out = {}
    for seed in range(5):
        path = ROOT / "reports" / "studies" / study / "runs" / f"{study}-{variant}-s{seed}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            assert (record["kind"], record["variant"]) == ("run", variant)
            out[seed] = float(record["final"]["final_val_loss"])
    return out


def test_the_gain_along_training_ends_at_the_final_runs_gain(first) -> None:
    scale = effect_at_scale(first)
    assert (scale.ours, scale.base, scale.ladder) == ("mamba-swelu", "mamba", None)
    gains = stats.paired_relative_gains(
        _final_losses("mamba-swelu-cpu", "mamba-swelu"), _final_losses("mamba-swelu-cpu", "mamba")
    )
    last = scale.along.iloc[-1]
    assert last.tokens == 409_600 and last.n == len(gains) == 3
    assert last.gain == pytest.approx(sum(gains.values()) / 3, rel=1e-9)
    assert scale.along.tokens.is_monotonic_increasing and len(scale.along) == 3
    json.dumps(scale.metrics())  # metrics.json takes it as is


def test_a_ladder_joins_committed_rungs_by_size_from_their_records(first) -> None:
    scale = effect_at_scale(first, ["activations-cpu"], root=ROOT)
    table = scale.ladder
    assert table.rung.tolist() == ["activations-cpu", "mamba-swelu-cpu"]  # by the SiLU model's parameters
    assert table.tokens.tolist() == [1_024_000, 409_600] and table.n.tolist() == [5, 3]
    second = stats.paired_relative_gains(
        _final_losses("activations-cpu", "mamba-swelu"), _final_losses("activations-cpu", "mamba")
    )
    assert table.gain.iloc[0] == pytest.approx(sum(second.values()) / 5, rel=1e-9)
    assert table.gain.iloc[1] == pytest.approx(scale.along.gain.iloc[-1], rel=1e-12)
    assert scale.slope.df == 0 and math.isnan(scale.slope.per_decade)  # two rungs: no slope interval
    assert scale.metrics()["slope_per_decade"]["value"] is None


def test_a_rung_that_cannot_be_paired_is_refused(first) -> None:
    with pytest.raises(ValueError, match="several text splits"):
        effect_at_scale(first, ["folds-cpu"], root=ROOT)
    with pytest.raises(FileNotFoundError):
        effect_at_scale(first, ["no-such-study"], root=ROOT)
