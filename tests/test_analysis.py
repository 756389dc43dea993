"""Analysis: metrics frames, where the shape parameters went (placed by slot records), figures over seeds,
curves (paired convergence, equal-compute views), the lr sweep rule and the text bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mswelu import analysis as A
from mswelu.modules.activations import curve
from mswelu.modules.slots import ShapeSlot


def _records(n_steps=5, k_names=("blocks.0.mixer.act", "blocks.0.post_act", "dense.0.act")):
    recs = []
    for s in range(1, n_steps + 1):
        recs.append(
            {
                "step": s,
                "tokens": 100 * s,
                "loss": 5.0 / s,
                "lr": {"main": 1e-3, "k": 2e-3},
                "grad_norm": 1.0,
                "tokens_per_s": 50.0,
                "k": {n: 1.0 + 0.1 * s * (i + 1) for i, n in enumerate(k_names)},
                "lambda": {n: 1.0 for n in k_names},
            }
        )
        if s % 2 == 0:
            recs.append(
                {
                    "step": s,
                    "tokens": 100 * s,
                    "val_loss": 6.0 / s,
                    "val_ppl": math.exp(6.0 / s),
                    "val_bpb": 1.0 / s,
                    "val_tokens": 64,
                    "val_scope": "sample",
                }
            )
    final = {
        "step": n_steps,
        "tokens": 100 * n_steps,
        "val_loss": 0.9,
        "val_ppl": math.exp(0.9),
        "val_bpb": 0.4,
    }
    recs.append({**final, "val_tokens": 999, "val_scope": "whole split"})
    return recs


def test_frames_split_train_and_eval_keep_scopes_and_dedupe():
    recs = _records(n_steps=4)
    recs.append({**recs[-3], "loss": 0.123})  # resumed run logs step 4 again: keep the last
    tr, ev = A.train_frame(recs), A.eval_frame(recs)
    assert list(tr.step) == [1, 2, 3, 4] and tr.loss.iloc[-1] == 0.123 and tr.lr.iloc[0] == 2e-3
    # step 4 was evaluated at two scopes: both rows stay, each says which
    assert list(ev.step) == [2, 4, 4] and list(ev.scope) == ["sample", "sample", "whole split"]
    assert list(A.scope_curve(ev, "sample").val_loss) == [3.0, 1.5]
    assert list(A.scope_curve(ev, "whole split").val_tokens) == [999]
    assert A.train_frame([]).empty and list(A.eval_frame([]).columns)[:3] == ["step", "tokens", "val_loss"]


def test_shape_trajectories_columns_in_log_order():
    df = A.shape_trajectories(_records())
    assert list(df.columns) == ["blocks.0.mixer.act", "blocks.0.post_act", "dense.0.act"]
    assert df.index.tolist() == [1, 2, 3, 4, 5]
    assert df.loc[3, "blocks.0.post_act"] == pytest.approx(1.6)
    assert A.shape_trajectories(_records(), "lambda").iloc[0].tolist() == [1.0, 1.0, 1.0]


def _slot(name, group, layer, slot="", activation="swelu", learnable=("k",)):
    params = ("k", "lambda") if activation == "swelu" else ("beta",)
    return ShapeSlot(name, group, layer, slot, activation, params, learnable, "mamba1")


def test_groups_come_from_the_slot_records_not_the_names():
    slots = {
        "a": _slot("a", "in-mixer", 0, "conv"),
        "b": _slot("b", "in-mixer", 0, "gate"),
        "c": _slot("c", "post-mixer", 0),
        "d": _slot("d", "dense", 2, learnable=()),
    }
    values = {"a": {"k": 0.8, "lambda": 1.0}, "b": {"k": 0.9, "lambda": 1.0}, "c": 1.2, "d": 1.0}
    t = A.final_shape_table(values, slots)
    assert t.set_index("name").loc["d", "group"] == "dense" and t.set_index("name").loc["d", "layer"] == 2
    assert t.set_index("name").loc["a", "deviation"] == pytest.approx(-0.2)  # SWELU's registered init: 1
    assert list(t.learnable) == [True, True, True, False]
    layers = A.k_layer_tables(values, slots)
    assert list(layers["mamba"].columns) == ["in-mixer conv k", "in-mixer gate k", "post-mixer k"]
    assert layers["dense"].index.name == "dense layer" and layers["dense"].loc[2, "k"] == 1.0
    assert A.slot_groups(["c", "a"], slots) == {"c": "post-mixer", "a": "in-mixer"}
    # a learnable beta (Swish) with its own init
    beta = A.final_shape_table(
        {"s": 1.3}, {"s": _slot("s", "in-mixer", 0, activation="swish", learnable=("beta",))}, "beta"
    )
    assert beta.beta.iloc[0] == 1.3 and beta.deviation.iloc[0] == pytest.approx(0.3)
    # a run from before the records: the names are read once, by legacy_slot
    old = A.final_shape_table({"blocks.3.mixer.act_gate": 1.1, "dense.1.act": 1.5}, None)
    assert list(zip(old.group, old.layer, old.slot, strict=True)) == [
        ("in-mixer", 3, "gate"),
        ("dense", 1, ""),
    ]


def test_shape_deviation_matches_seed_arithmetic():
    # The seed table's 15 values, init 1.0: their "mean deviation 0.39" is the mean |k - 1|.
    seed = A.SEED_K_TABLE
    values, slots = {}, {}
    for i, k in enumerate(seed["mamba"]["in-mixer k"]):
        values[f"m{i}"], slots[f"m{i}"] = k, _slot(f"m{i}", "in-mixer", i)
    for i, k in enumerate(seed["mamba"]["post-mixer k"]):
        values[f"p{i}"], slots[f"p{i}"] = k, _slot(f"p{i}", "post-mixer", i)
    for i, k in enumerate(seed["dense"]["k"]):
        values[f"d{i}"], slots[f"d{i}"] = k, _slot(f"d{i}", "dense", i)
    dev = A.shape_deviation(values, slots, init=1.0)
    assert dev["count"] == 15
    assert dev["mean_abs_deviation"] == pytest.approx(0.39, abs=0.005)
    assert dev["max_k"] == pytest.approx(1.901)
    assert dev["mean_k_dense"] == pytest.approx((1.901 + 1.559 + 1.889) / 3)


def test_swelu_curve_known_values_and_limits():
    z = np.array([-2.0, -1.0, 0.0, 1.0, 1e-8, 50.0])
    y = curve("swelu", z, 1.0)
    assert y[3] == pytest.approx(1 - math.exp(-1)) and y[1] == pytest.approx(-(1 - math.exp(-1)))
    assert y[2] == 0.0 and y[5] == pytest.approx(1.0)
    assert y[4] == pytest.approx(1e-8, rel=1e-6)  # expm1 keeps tiny values exact
    scaled = curve("swelu", np.array([2.0]), {"k": 2.0, "lambda": 3.0})[0]
    assert scaled == pytest.approx(3 * (1 - math.exp(-4)))
    assert curve("silu", np.array([0.0, 1.0]))[1] == pytest.approx(1 / (1 + math.exp(-1)))
    with pytest.raises(ValueError):
        curve("swelu", z, 0.0)


def test_activation_curves_take_the_kind_from_the_record():
    slots = {"a": _slot("a", "in-mixer", 0), "s": _slot("s", "in-mixer", 1, activation="swish")}
    df = A.activation_curves({"a": {"k": 2.0, "lambda": 1.5}, "s": {"beta": 2.0}}, slots, z=[0.0, 1.0])
    assert list(df.columns) == ["a", "s", "silu"]
    assert df.loc[1.0, "a"] == pytest.approx(1.5 * (1 - math.exp(-1)))
    assert df.loc[1.0, "s"] == pytest.approx(1 / (1 + math.exp(-2)))


def test_shape_slot_summary_and_group_trajectories():
    slots = {
        "m0": _slot("m0", "in-mixer", 0),
        "m1": _slot("m1", "in-mixer", 1),
        "d0": _slot("d0", "dense", 0),
    }
    by_seed = {
        "swelu": {0: {"m0": 0.6, "m1": 0.8, "d0": 1.5}, 1: {"m0": 0.8, "m1": 1.0, "d0": 1.7}},
        "empty": {0: {}},
    }
    table = A.shape_slot_summary(by_seed, {"swelu": slots}).set_index(["variant", "group"])
    assert list(table.index) == [("swelu", "in-mixer"), ("swelu", "dense")]  # no values at all: no rows
    mixer = table.loc[("swelu", "in-mixer")]
    assert mixer["seeds"] == 2 and mixer["k mean"] == pytest.approx(0.8)  # seed means 0.7 and 0.9
    assert mixer["k sd over seeds"] == pytest.approx(0.2 / 2**0.5)
    assert (mixer["k min"], mixer["k max"]) == (0.6, 1.0)
    assert mixer["mean |k - init|"] == pytest.approx((0.4 + 0.2 + 0.2 + 0.0) / 4)
    assert mixer["seeds claim"] == "0.39-0.67" and table.loc[("swelu", "dense"), "seeds claim"] == "1.56-1.90"
    traj = pd.DataFrame({"d0": [1.0, 1.2], "m0": [1.0, 0.8], "m1": [1.0, 0.6]}, index=[1, 2])
    groups = A.shape_group_trajectories(traj, slots)
    assert list(groups.columns) == ["in-mixer", "dense"]  # display order of the groups
    assert groups["in-mixer"].tolist() == pytest.approx([1.0, 0.7])


def test_aggregate_seeds_mean_and_spread():
    res = pd.DataFrame(
        {"variant": ["x", "x", "x", "y"], "seed": [0, 1, 2, 0], "val_loss": [1.0, 2.0, 3.0, 5.0]}
    )
    agg = A.aggregate_seeds(res)
    assert agg.loc["x", "val_loss_mean"] == 2.0 and agg.loc["x", "val_loss_std"] == pytest.approx(1.0)
    assert agg.loc["x", "val_loss_sem"] == pytest.approx(1 / math.sqrt(3))
    assert agg.loc["x", "n"] == 3 and math.isnan(agg.loc["y", "val_loss_std"])
    with pytest.raises(ValueError):
        A.aggregate_seeds(res, by="nope")
    assert A.mean_spread(2.0, 1.0) == "2.000 ± 1.000" and A.mean_spread(2.0, float("nan")) == "2.000 (1 seed)"


def test_tokens_to_reach_and_loss_at_fraction():
    c = pd.DataFrame({"tokens": [0, 100, 200, 300], "val_loss": [10.0, 6.0, 4.0, 3.0]})
    assert A.tokens_to_reach(c, 5.0) == pytest.approx(150.0)
    assert A.tokens_to_reach(c, 10.0) == 0.0
    assert math.isnan(A.tokens_to_reach(c, 2.0))
    assert A.loss_at_fraction(c, 0.5) == pytest.approx(5.0)
    assert math.isnan(A.loss_at(c, 400.0))  # no extrapolation
    with pytest.raises(ValueError):
        A.loss_at_fraction(c, 1.5)


def _curve(variant, seed, final, speed=1.0, scope="whole split", n=11):
    """A loss curve final + 5 exp(-t / (300 / speed)) at n evenly spaced evaluations up to 1000 tokens."""
    toks = np.linspace(100, 1000, n)
    return pd.DataFrame(
        {
            "variant": variant,
            "seed": seed,
            "step": toks / 10,
            "tokens": toks,
            "val_loss": final + 5.0 * np.exp(-toks * speed / 300),
            "scope": scope,
        }
    )


def test_paired_convergence_targets_each_seeds_own_final_and_flags_censoring():
    curves = pd.concat(
        [_curve("ours", s, 3.0 + s * 0.01, speed=2.0) for s in range(3)]
        + [_curve("base", s, 3.0 + s * 0.01) for s in range(3)]
    )
    t = A.paired_convergence(curves, "ours", "base")
    assert list(t.seed) == [0, 1, 2] and (t.bound == "").all()
    assert t.target.tolist() == pytest.approx(
        [curves[(curves.variant == "base") & (curves.seed == s)].val_loss.iloc[-1] for s in range(3)]
    )
    # the same curve shape twice as fast: about half the tokens (linear interpolation between evaluations)
    assert t.speedup.tolist() == pytest.approx([0.5] * 3, abs=0.03)
    # a run that never reaches the target gives an upper bound; one below it at its first evaluation a lower
    worse = pd.concat([_curve("ours", 0, 3.5), _curve("base", 0, 3.0)])
    assert A.paired_convergence(worse, "ours", "base").bound.iloc[0] == "upper"
    early = pd.concat([_curve("ours", 0, 2.0, speed=50.0), _curve("base", 0, 3.0)])
    assert A.paired_convergence(early, "ours", "base").bound.iloc[0] == "lower"
    # a baseline that never reaches a given target: the speed-up is a lower bound
    fixed = A.paired_convergence(curves, "ours", "base", target=3.0 + 5 * np.exp(-2000 / 300) - 1e-6)
    assert "lower" in set(fixed.bound) or "unknown" in set(fixed.bound)
    # evaluations of another scope are never mixed in
    mixed = pd.concat([curves, _curve("ours", 0, 1.0, scope="sample")])
    assert A.paired_convergence(mixed, "ours", "base").speedup.tolist() == pytest.approx(t.speedup.tolist())


def test_equal_compute_reads_both_runs_at_the_smaller_budget():
    curves = pd.concat([_curve("fast", 0, 3.0), _curve("slow", 0, 2.9)])
    tps = {"fast": 2000.0, "slow": 1000.0}  # slow needs twice the time for its 1000 tokens
    pairs = A.budget_pairs(curves, "slow", "fast", "time", tps, {})
    assert pairs.budget.iloc[0] == pytest.approx(0.5)  # the fast run's 1000 tokens take 0.5 s
    # at 0.5 s the slow run has seen 500 tokens: its loss there, interpolated on its curve
    slow = curves[curves.variant == "slow"]
    assert pairs.ours.iloc[0] == pytest.approx(np.interp(500, slow.tokens, slow.val_loss))
    assert pairs.base.iloc[0] == pytest.approx(curves[curves.variant == "fast"].val_loss.iloc[-1])
    runs = pd.DataFrame(
        {"variant": ["fast", "slow"], "seed": [0, 0], "tokens": [1000, 1000], "val_loss": [3.0, 2.9]}
    )
    table = A.equal_compute_table(runs, curves, tps, {"fast": 10.0, "slow": 10.0}).set_index("variant")
    assert table.loc["slow", "tokens/s vs fast"] == pytest.approx(0.5)
    assert table.loc["slow", "val_loss at equal time"] == pytest.approx(pairs.ours.iloc[0])
    assert table.loc["slow", "val_loss at equal FLOPs"] == pytest.approx(slow.val_loss.iloc[-1])


def _sweep(losses):
    return pd.DataFrame(
        [
            {"variant": v, "lr": lr, "tune_val_loss": x, "diverged": not math.isfinite(x), "run": ""}
            for v, points in losses.items()
            for lr, x in points.items()
        ]
    )


def test_lr_sweep_extends_at_an_edge_up_to_its_bound():
    sweep = _sweep(
        {"a": {1e-3: 4.0, 2e-3: 3.9, 4e-3: 3.95}, "b": {1e-3: 4.0, 2e-3: 3.8}, "c": {1e-3: 3.7, 2e-3: 3.9}}
    )
    status = A.lr_status(sweep, [1e-3, 2e-3, 4e-3])
    assert status["a"].interior and status["a"].next_lr is None and status["a"].sensitivity == 0
    assert status["b"].edge == "high" and status["b"].next_lr == pytest.approx(4e-3)
    assert status["b"].sensitivity == pytest.approx((4.0 - 3.8) / 4.0)
    assert status["c"].edge == "low" and status["c"].next_lr == pytest.approx(5e-4)
    assert A.extend_lr_grid(sweep, [1e-3, 2e-3, 4e-3]) == {
        "b": [pytest.approx(4e-3)],
        "c": [pytest.approx(5e-4)],
    }
    # a diverged neighbour brackets from above
    capped = _sweep({"b": {1e-3: 4.0, 2e-3: 3.8, 4e-3: math.inf}})
    assert A.lr_status(capped, [1e-3, 2e-3])["b"].interior
    # three extensions beyond the grid and still at the edge: the bound is reached, nothing more to run
    walked = _sweep({"b": {1e-3: 4.0, 2e-3: 3.9, 4e-3: 3.8, 8e-3: 3.7, 1.6e-2: 3.6}})
    last = A.lr_status(walked, [1e-3, 2e-3])["b"]
    assert last.edge == "high" and last.next_lr is None and "bound" in last.reason
    assert A.extend_lr_grid(walked, [1e-3, 2e-3]) == {}
    # everything diverged: go down
    gone = A.lr_status(_sweep({"d": {1e-2: math.inf, 2e-2: math.inf}}), [1e-2, 2e-2])["d"]
    assert gone.next_lr == pytest.approx(5e-3) and "diverged" in gone.reason


def test_bootstrap_of_bpb_matches_resampling_by_hand():
    rng = np.random.default_rng(1)
    n = 40
    units = pd.DataFrame(
        {
            "variant": "a",
            "seed": 0,
            "unit": range(n),
            "kind": "document",
            "loss": rng.uniform(50, 150, n),
            "tokens": 40,
            "bytes": rng.uniform(80, 120, n),
        }
    )
    iv = A.study_bootstrap(units, n_boot=4000, seed=3).iloc[0]
    assert iv.bpb == pytest.approx(units.loss.sum() / units.bytes.sum() / math.log(2))
    # by hand: resample documents with replacement, recompute the ratio
    idx = np.random.default_rng(7).integers(0, n, size=(4000, n))
    by_hand = units.loss.to_numpy()[idx].sum(1) / units.bytes.to_numpy()[idx].sum(1) / math.log(2)
    lo, hi = np.quantile(by_hand, [0.025, 0.975])
    assert iv.lo == pytest.approx(lo, rel=0.01) and iv.hi == pytest.approx(hi, rel=0.01)
    # two documents are too few: stretches of windows instead, labelled as such
    few = A.bootstrap_units(
        {"loss": [10.0, 20.0], "tokens": [5, 5], "bytes": [9.0, 9.0]},
        {"loss": list(range(64)), "tokens": [4] * 64, "bytes": [8.0] * 64},
    )
    assert len(few) == 32 and set(few.kind) == {"block"} and few.loss.sum() == sum(range(64))


def test_study_bootstrap_resamples_the_same_units_for_every_run():
    rng = np.random.default_rng(2)
    rows = []
    base = rng.uniform(50, 150, 30)
    for variant, shift in (("a", 1.0), ("b", 0.98)):
        for seed in range(3):
            loss = base * shift * (1 + rng.normal(0, 0.001, 30))
            rows += [
                {
                    "variant": variant,
                    "seed": seed,
                    "unit": u,
                    "kind": "document",
                    "loss": x,
                    "tokens": 10,
                    "bytes": 100.0,
                }
                for u, x in enumerate(loss)
            ]
    units = pd.DataFrame(rows)
    table = A.study_bootstrap(units, n_boot=500).set_index("variant")
    assert table.loc["a", "seeds"] == 3 and table.loc["a", "units"] == 30
    assert table.loc["a", "lo"] < table.loc["a", "bpb"] < table.loc["a", "hi"]
    # beside the interval over seeds, per variant
    per_run = units.groupby(["variant", "seed"]).sum(numeric_only=True)
    runs = pd.DataFrame(
        [
            {"variant": v, "seed": s, "val_bpb": r.loss / r.bytes / math.log(2)}
            for (v, s), r in per_run.iterrows()
        ]
    )
    both = A.bpb_intervals(runs, units, n_boot=500).set_index("variant")
    assert both.loc["a", "val_bpb"] == pytest.approx(table.loc["a", "bpb"])
    assert (
        both.loc["a", "text lo"] == pytest.approx(table.loc["a", "lo"])
        and both.loc["a", "text units"] == "30 documents"
    )
    assert both.loc["a", "seed lo"] < both.loc["a", "val_bpb"] < both.loc["a", "seed hi"]


def test_shape_gradients_match_finite_differences():
    from mswelu.models.shape_gradients import shape_gradients

    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from mswelu import MsweluConfig, MsweluForCausalLM

    torch.manual_seed(0)
    model = MsweluForCausalLM(MsweluConfig.from_preset("tiny", vocab_size=64)).double()
    with torch.no_grad():  # move k away from the init so each slot differs
        for i, m in enumerate(s.module for s in model.shape_slots()):
            m.k_raw.add_(0.1 * i - 0.3)
    ids = torch.randint(0, 64, (2, 17))
    grads = {n: g["k"] for n, g in shape_gradients(model, ids).items()}
    assert list(grads) == list(model.shape_values())
    assert all(p.grad is None for p in model.parameters())

    def loss():  # the model casts logits to fp32; finite differences need float64 all through
        hidden, _ = model.backbone(input_ids=ids[:, :-1])
        logits = model.lm_head(hidden)
        return float(F.cross_entropy(logits.reshape(-1, 64), ids[:, 1:].reshape(-1)))

    model.eval()
    h = 1e-5
    for name, m in ((s.name, s.module) for s in model.shape_slots()):
        with torch.no_grad():
            m.k_raw.add_(h)
            up = loss()
            m.k_raw.sub_(2 * h)
            down = loss()
            m.k_raw.add_(h)
            dk_draw = float(torch.sigmoid(m.k_raw))  # k = k_min + softplus(k_raw)
        fd = abs((up - down) / (2 * h)) / dk_draw
        assert grads[name] == pytest.approx(fd, rel=1e-3), name  # the scan keeps some fp32 internals
    assert max(grads.values()) > 0
