"""``<family>-<activation>-as-learned``: the activation frozen with each slot at the value the same seed's
learnable run ended at (shape found vs learning it), through a comparison, its ledger and its lr sweep."""

from __future__ import annotations

import shutil

import pytest

from mswelu import workbook as wb
from mswelu.training.variants import learned_source, variant_overrides
from mswelu.workbook import compare as C
from mswelu.workbook import ledger as L
from mswelu.workbook.sweep import lr_sweep


@pytest.fixture
def base(tiny_config, embedded_data, tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    cfg = tiny_config(embedded_data, tmp_path / "unused", max_steps=4, eval_every=2, eval_batches=0, lr=0.05)
    cfg.pop("out")
    return cfg


def test_every_learnable_activation_has_an_as_learned_twin_of_its_fixed_one() -> None:
    assert learned_source("mamba-swelu-as-learned") == "mamba-swelu"
    assert learned_source("mamba2-swish-as-learned") == "mamba2-swish"
    assert learned_source("mamba-swelu") is None and learned_source("nothing-as-learned") is None
    assert variant_overrides("mamba-swelu-as-learned", "tiny") == variant_overrides(
        "mamba-swelu-fixed", "tiny"
    )


def test_each_seed_is_frozen_at_what_its_source_learned_and_rebuilds_from_the_ledger(
    base, tmp_path, monkeypatch
) -> None:
    ledger = L.Ledger(tmp_path / "study" / "runs")
    variants = ["mamba-swelu-as-learned", "mamba-swelu"]  # the source is trained first whatever the order
    results, _, runs = wb.run_variants(base, variants, [0, 1], prefix="al", ledger=ledger)
    for seed in (0, 1):
        learned, frozen = runs[f"al-mamba-swelu-s{seed}"], runs[f"al-mamba-swelu-as-learned-s{seed}"]
        assert learned.final_k() != pytest.approx({n: 1.0 for n in learned.final_k()}, abs=1e-4)  # it learned
        assert frozen.final_k() == pytest.approx(learned.final_k(), abs=1e-6)  # frozen where it ended
        assert all(not s.learnable for s in frozen.slots.values())
    assert runs["al-mamba-swelu-s0"].final_k() != runs["al-mamba-swelu-s1"].final_k()
    # a fresh clone rebuilds it from the records: the settings derived from the records match theirs
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(
        C, "train_or_load", lambda *a, **k: pytest.fail("trained instead of reusing a record")
    )
    again, _, _ = wb.run_variants(base, variants, [0, 1], prefix="al", ledger=ledger)
    assert again["val_loss"].tolist() == results["val_loss"].tolist()


def test_its_sweep_point_is_frozen_at_the_sources_point_of_the_same_lr(base, tmp_path) -> None:
    ledger = L.Ledger(tmp_path / "study" / "runs")
    sweep = lr_sweep(base, ["mamba-swelu-as-learned"], [0.02], "sw", ledger=ledger)  # source not listed
    records = ledger.records()
    source, frozen = records["sw-tune-mamba-swelu-lr0.02"], records["sw-tune-mamba-swelu-as-learned-lr0.02"]
    assert frozen.final_k() == pytest.approx(source.final_k(), abs=1e-6)
    assert sorted(sweep["variant"]) == ["mamba-swelu", "mamba-swelu-as-learned"]  # the source's point counts


def test_without_its_source_or_at_equal_time_it_is_refused(base) -> None:
    with pytest.raises(ValueError, match="list 'mamba-swelu' among the variants"):
        wb.run_variants(base, ["mamba", "mamba-swelu-as-learned"], [0], prefix="x")
    from mswelu.analysis.equal_time import TimeMatch

    match = TimeMatch("mamba-swelu-as-learned", "mamba", 0.9, 3, 3, 3)
    with pytest.raises(ValueError, match="not supported"):
        C.time_matched_runs(base, [match], [0], "x", {"mamba-swelu-as-learned": 0.01})
