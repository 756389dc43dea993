"""The comparison's variants: the reference Mamba-1 family and the seed architecture's pair."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mswelu import analysis
from mswelu.base.paths import runs_dir
from mswelu.models.build import build_model, count_parameters, preset_parameter_count
from mswelu.modules.swelu import SWELU
from mswelu.training.variants import matched_depth, variant_overrides
from mswelu.workbook.sweep import lr_sweep, tuning_data


@pytest.mark.parametrize("preset", ["tiny", "small", "seed-124m"])
def test_reference_mamba_is_matched_within_two_percent(preset: str) -> None:
    base = preset_parameter_count(preset, 50257, 256)
    model = variant_overrides("mamba", preset)["model"]
    depth = len(model["layer_pattern"])
    assert depth == matched_depth(preset, post_mixer_act=False, dense_sizes=())
    counts = {
        n: preset_parameter_count(preset, 50257, 256, **{**model, "layer_pattern": "M" * n})
        for n in (depth - 1, depth, depth + 1)
    }
    assert abs(counts[depth] / base - 1) <= 0.02
    assert all(abs(counts[depth] - base) <= abs(c - base) for c in counts.values())  # the closest depth


@pytest.mark.parametrize(
    ("variant", "n_slots", "learnable"),
    [("mamba", 0, False), ("mamba-swelu", 3, True), ("mamba-swelu-fixed", 3, False)],
)
def test_reference_family_puts_the_activation_in_the_mixer_only(variant, n_slots, learnable) -> None:
    o = variant_overrides(variant, "tiny")
    model = build_model("tiny", 512, 64, activation=o["activation"], **o["model"])
    cfg = model.config
    assert cfg.post_mixer_act is False and tuple(cfg.dense_sizes) == () and cfg.layer_pattern == "MMM"
    slots = [(s.name, s.module) for s in model.shape_slots()]
    assert len(slots) == n_slots and all(s.group == "in-mixer" for s in model.shape_slots())
    assert all(isinstance(m, SWELU) and m.k_raw.requires_grad is learnable for _, m in slots)
    if n_slots:
        assert all(float(m.k.detach()) == pytest.approx(1.0) for _, m in slots)
    x = torch.randint(0, 512, (2, 9))
    assert model(input_ids=x).logits.shape == (2, 9, 512)


def test_seed_architecture_pair_differs_only_in_the_dense_residual() -> None:
    plain, residual = variant_overrides("swelu", "small"), variant_overrides("swelu-residual", "small")
    assert residual == {"activation": "swelu", "model": {"dense_residual": True}}
    a = build_model("tiny", 512, 64, activation=plain["activation"])
    b = build_model("tiny", 512, 64, activation="swelu", **residual["model"])
    assert (
        count_parameters(a) == count_parameters(b) and b.config.dense_residual and not a.config.dense_residual
    )


def test_reference_family_trains_through_run_variants(tiny_config, tmp_path, monkeypatch) -> None:
    from test_train import write_byte_dataset

    from mswelu import workbook as wb

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    base = tiny_config(write_byte_dataset(tmp_path / "data"), tmp_path / "unused", max_steps=3)
    base.pop("out")
    results, _, runs = wb.run_variants(base, ["mamba", "mamba-swelu"], [0], prefix="ref")
    by = results.set_index("variant")
    assert set(by.index) == {"mamba", "mamba-swelu"} and (by.tokens == 3 * 4 * 16).all()
    assert abs(by.params["mamba-swelu"] / by.params["mamba"] - 1) < 1e-3  # SWELU adds one k per mixer
    swelu_run = runs["ref-mamba-swelu-s0"]
    assert swelu_run.config["activation"] == "swelu" and swelu_run.config["model"]["post_mixer_act"] is False


def test_the_tuning_split_never_holds_a_reported_validation_document(embedded_data) -> None:
    from mswelu.data import load_meta, split_documents

    tune = Path(tuning_data(embedded_data))
    reported, tuning = load_meta(embedded_data), load_meta(tune)
    assert tune != Path(embedded_data) and tuning["tokenizer"] == reported["tokenizer"]
    assert tuning["seed"] != reported["seed"] and tuning["source"] == reported["source"]
    assert not split_documents(Path(embedded_data)) & split_documents(tune)
    stamp = (tune / "val.bin").stat().st_mtime_ns
    assert tuning_data(embedded_data) == str(tune) and (tune / "val.bin").stat().st_mtime_ns == stamp


def test_lr_sweep_gives_every_variant_the_same_grid_and_a_diverged_lr_never_wins(
    tiny_config, embedded_data, tmp_path, monkeypatch
) -> None:
    from mswelu import workbook as wb
    from mswelu.workbook import compare

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    base = tiny_config(embedded_data, tmp_path / "unused", max_steps=3, ckpt_every=0, eval_every=0)
    base.pop("out")
    real = compare.train_or_load

    def diverging_at_lr_one(cfg, reuse=True):
        if cfg["lr"] == 1.0:
            raise FloatingPointError("stopping: 10 consecutive non-finite steps")
        return real(cfg, reuse=reuse)

    monkeypatch.setattr(compare, "train_or_load", diverging_at_lr_one)
    table = lr_sweep(base, ["swelu", "silu"], [1e-3, 1e-2, 1.0], prefix="sw")
    chosen = {v: s.lr for v, s in analysis.lr_status(table).items()}
    assert sorted(table.groupby("variant").lr.apply(list).to_dict().items()) == [
        ("silu", [1e-3, 1e-2, 1.0]),
        ("swelu", [1e-3, 1e-2, 1.0]),
    ]
    assert table.set_index("lr").diverged.groupby(level=0).all().to_dict() == {
        1e-3: False,
        1e-2: False,
        1.0: True,
    }
    for variant, part in table.groupby("variant"):
        ok = part[~part.diverged]
        assert chosen[variant] == ok.lr[ok.tune_val_loss.idxmin()]
    tune = tuning_data(embedded_data)
    assert wb.load_run(Path(runs_dir()) / "sw-tune-swelu-lr0.001").config["data"] == tune
    results, _, _ = wb.run_variants(base, ["swelu", "silu"], [0], prefix="sw", lrs=chosen)
    assert results.set_index("variant").lr.to_dict() == chosen
    assert results.run.tolist() == ["sw-swelu-s0", "sw-silu-s0"]
    table = lr_sweep(base, ["swelu"], [1.0], prefix="sw")  # every lr diverged: no choice
    assert table.diverged.all() and math.isnan(analysis.lr_status(table)["swelu"].lr)
    with pytest.raises(ValueError, match="lrs must be"):
        lr_sweep(base, ["swelu"], [], prefix="sw")


def test_bracketed_sweep_lowers_a_diverged_grid_to_its_bound_then_refuses(
    tiny_config, embedded_data, tmp_path, monkeypatch
) -> None:
    """Every lr of a variant diverging: the sweep tries /2 three more times (the bound of
    mswelu.analysis.tuning), then stops with one line naming the variant and every lr it tried."""
    from mswelu import workbook as wb
    from mswelu.workbook import compare

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    base = tiny_config(embedded_data, tmp_path / "unused", max_steps=3, ckpt_every=0, eval_every=0)
    base.pop("out")
    tried = []

    def always_diverging(cfg, reuse=True):
        tried.append(cfg["lr"])
        raise FloatingPointError("stopping: 10 consecutive non-finite steps")

    monkeypatch.setattr(compare, "train_or_load", always_diverging)
    refused = r"every lr tried diverged for \['swelu'\] \(0\.1, 0\.2, 0\.4, 0\.8\) down to the sweep's bound"
    with pytest.raises(ValueError, match=refused):
        wb.bracketed_lr_sweep(base, ["swelu"], [0.8], prefix="sw")
    assert tried == [0.8, 0.4, 0.2, 0.1]


def test_a_sweep_of_two_seeds_seeds_the_best_lr_and_its_neighbours_and_judges_their_mean(
    tiny_config, embedded_data, tmp_path, monkeypatch
) -> None:
    """``seeds=2``: after bracketing, the best lr and the tried lrs next to it run seed 1 too (named with it);
    the choice is the mean over seeds, so a lr that won on one lucky seed can lose, and the new best's
    neighbours are then seeded as well."""
    from types import SimpleNamespace

    from mswelu import workbook as wb
    from mswelu.workbook import sweep as sweeping

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    base = tiny_config(embedded_data, tmp_path / "unused", max_steps=3, ckpt_every=0, eval_every=0)
    base.pop("out")
    # seed 0 prefers lr 0.02 by a hair; seed 1 ruins it, so the mean prefers 0.01
    loss = {(0.005, 0): 3.0, (0.01, 0): 2.01, (0.02, 0): 2.0, (0.04, 0): 2.5, (0.08, 0): 3.0}
    loss |= {(0.005, 1): 3.0, (0.01, 1): 2.01, (0.02, 1): 2.2, (0.04, 1): 2.5}
    ran = []

    def fake(cfg, name, variant, seed, kind, reuse, ledger):
        ran.append((name, cfg["lr"], cfg["seed"]))
        return SimpleNamespace(final_metrics=lambda: {"final_val_loss": loss[(cfg["lr"], cfg["seed"])]})

    monkeypatch.setattr(sweeping, "run_or_record", fake)
    sweep, status = wb.bracketed_lr_sweep(base, ["mamba"], [0.01, 0.02, 0.04], prefix="sw", seeds=2)
    assert status["mamba"].lr == 0.01 and status["mamba"].interior
    assert sorted((lr, s) for _, lr, s in ran) == sorted(
        [(0.01, 0), (0.02, 0), (0.04, 0), (0.01, 1), (0.02, 1), (0.04, 1), (0.005, 0), (0.005, 1)]
    )
    assert "sw-tune-mamba-lr0.02-s1" in {n for n, _, _ in ran} and "sw-tune-mamba-lr0.02" in set(sweep.run)
    assert sorted(sweep[sweep.lr == 0.02].seed) == [0, 1]
    with pytest.raises(ValueError, match="sweep seeds must be a whole number >= 1"):
        wb.bracketed_lr_sweep(base, ["mamba"], [0.01], prefix="sw", seeds=0)


def test_sweep_points_may_evaluate_once(tiny_config, embedded_data, tmp_path, monkeypatch) -> None:
    """A sweep point is judged by its final evaluation alone: ``evaluations`` cuts its whole-split evaluations
    (every point, the extended ones too) without touching anything else of its settings."""
    from types import SimpleNamespace

    from mswelu import workbook as wb
    from mswelu.workbook import sweep as sweeping

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    base = tiny_config(embedded_data, tmp_path / "unused", max_steps=40, ckpt_every=0, eval_every=10)
    base.pop("out")
    seen = []

    def fake(cfg, name, variant, seed, kind, reuse, ledger):
        seen.append({k: v for k, v in cfg.items() if k not in ("out", "run_name", "lr", "seed", "data")})
        return SimpleNamespace(final_metrics=lambda: {"final_val_loss": 1.0 / cfg["lr"]})  # best at the top

    monkeypatch.setattr(sweeping, "run_or_record", fake)
    _, status = wb.bracketed_lr_sweep(base, ["mamba"], [0.01, 0.02], prefix="sw", evaluations=1)
    assert len(seen) == 5 and not status["mamba"].interior  # extended x2 three times: still at its edge
    assert [s["eval_every"] for s in seen] == [40] * 5
    differ = [{k for k in s if s[k] != seen[0][k]} for s in seen]
    assert differ == [set()] * 5, differ
    wb.bracketed_lr_sweep(base, ["mamba"], [0.01], prefix="sw2")
    assert seen[-1]["eval_every"] == 10  # by default: the base's
    with pytest.raises(ValueError, match="sweep evaluations must be a whole number >= 1"):
        wb.bracketed_lr_sweep(base, ["mamba"], [0.01], prefix="sw", evaluations=0)
