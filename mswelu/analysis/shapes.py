"""Where the activations' shape parameters went (SWELU's k, Swish's beta, lambda): tables laid out like the
seeds', deviation from init, summaries over seeds and slot groups, the learned curves. A value's group, layer
and slot come from the run's :class:`~mswelu.modules.slots.ShapeSlot` records, never from its name
(``slots=None``: :func:`mswelu.modules.slots.legacy_slot` reads a run written before the records).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mswelu.modules import activations as registry
from mswelu.modules.slots import GROUPS, ShapeSlot, slot_records

__all__ = [
    "SEED_K_RANGES",
    "SEED_K_TABLE",
    "activation_curves",
    "final_shape_table",
    "initial_value",
    "k_layer_tables",
    "movement_trend",
    "shape_deviation",
    "shape_group_trajectories",
    "shape_slot_summary",
    "slot_groups",
]

# What the seed RESULTS document reports after "100k steps" (in-mixer = their "Activation k",
# post-mixer = their "SSM k"); shown next to our measurements, never used as a target.
SEED_K_TABLE = {
    "mamba": pd.DataFrame(
        {
            "in-mixer k": [0.503, 0.665, 0.608, 0.530, 0.485, 0.393],
            "post-mixer k": [0.618, 0.686, 0.981, 0.997, 0.988, 0.976],
        },
        index=pd.Index(range(6), name="layer"),
    ),
    "dense": pd.DataFrame({"k": [1.901, 1.559, 1.889]}, index=pd.Index(range(3), name="dense layer")),
    "mean_abs_deviation": 0.39,
}
#: where the seeds' k ended, per slot group: the range over layers of :data:`SEED_K_TABLE`
SEED_K_RANGES = {"in-mixer": (0.393, 0.665), "post-mixer": (0.618, 0.997), "dense": (1.559, 1.901)}


def _slots(values: Mapping[str, Any], slots: Mapping[str, ShapeSlot] | None) -> dict[str, ShapeSlot]:
    return (
        slot_records(None, [str(n) for n in values])
        if slots is None
        else slot_records([s.to_dict() for s in slots.values()], [str(n) for n in values])
    )


def slot_groups(names: Sequence[str], slots: Mapping[str, ShapeSlot] | None) -> dict[str, str]:
    """``{name: group}`` of slot names, from the slot records (plots colour by group)."""
    records = _slots({str(n): None for n in names}, slots)
    return {str(n): records[str(n)].group for n in names}


def initial_value(slot: ShapeSlot, param: str) -> float:
    """The registered initial value of ``param`` in ``slot``'s activation (1.0 when the kind is unknown)."""
    spec = registry.ACTIVATIONS.get(slot.activation)
    found = [p.init for p in spec.params if p.name == param] if spec is not None else []
    return float(found[0]) if found else 1.0


def _value(value: Any, param: str) -> tuple[float, dict[str, float]]:
    if isinstance(value, Mapping):
        return float(value.get(param, math.nan)), {str(k): float(v) for k, v in value.items() if k != param}
    return float(value), {}


def final_shape_table(
    values: Mapping[str, Any],
    slots: Mapping[str, ShapeSlot] | None,
    param: str = "k",
    init: float | None = None,
) -> pd.DataFrame:
    """One row per slot: place, activation, ``param`` and other shape values, deviation from init."""
    records = _slots(values, slots)
    rows, others = [], []
    for name, value in values.items():
        v, rest = _value(value, param)
        slot = records[str(name)]
        start = initial_value(slot, param) if init is None else float(init)
        others += [k for k in rest if k not in others]
        rows.append(
            {
                "name": str(name),
                "group": slot.group,
                "layer": slot.layer,
                "slot": slot.slot,
                "activation": slot.activation,
                "learnable": param in slot.learnable,
                param: v,
                **rest,
                "deviation": v - start,
            }
        )
    cols = ["name", "group", "layer", "slot", "activation", "learnable", param, *others, "deviation"]
    return pd.DataFrame(rows, columns=cols)


def k_layer_tables(
    values: Mapping[str, Any], slots: Mapping[str, ShapeSlot] | None, param: str = "k"
) -> dict[str, pd.DataFrame]:
    """The seeds' RESULTS layout: ``"mamba"`` (per layer: in-mixer and post-mixer k) and ``"dense"``."""
    long = final_shape_table(values, slots, param)
    mamba = long[long.group.isin(["in-mixer", "post-mixer"])].copy()
    if mamba.empty:
        mamba_wide = pd.DataFrame(index=pd.Index([], name="layer"))
    else:
        mamba["column"] = [
            f"{g} {s} {param}" if s else f"{g} {param}" for g, s in zip(mamba.group, mamba.slot, strict=True)
        ]
        mamba_wide = mamba.pivot_table(index="layer", columns="column", values=param, aggfunc="first")
        mamba_wide.columns.name = None
        mamba_wide.index = mamba_wide.index.astype(int)
    dense = long[long.group == "dense"].set_index("layer")[[param]]
    dense.index = pd.Index(dense.index.astype(int), name="dense layer")
    return {"mamba": mamba_wide, "dense": dense}


def shape_deviation(
    values: Mapping[str, Any],
    slots: Mapping[str, ShapeSlot] | None,
    param: str = "k",
    init: float | None = None,
    learnable_only: bool = False,
) -> dict[str, float]:
    """Mean / max |``param`` - init| overall and the mean value per group (the seeds' "0.39 from init");
    ``learnable_only`` leaves out slots whose record says the parameter is frozen."""
    long = final_shape_table(values, slots, param, init)
    if learnable_only:
        long = long[long.learnable]
    if long.empty:
        return {"count": 0}
    out: dict[str, float] = {
        "count": len(long),
        "mean_abs_deviation": float(long.deviation.abs().mean()),
        "max_abs_deviation": float(long.deviation.abs().max()),
        f"min_{param}": float(long[param].min()),
        f"max_{param}": float(long[param].max()),
    }
    for group, part in long.groupby("group", sort=False):
        out[f"mean_{param}_{group}"] = float(part[param].mean())
    return out


def shape_slot_summary(
    by_seed: Mapping[str, Mapping[int, Mapping[str, Any]]],
    slots: Mapping[str, Mapping[str, ShapeSlot] | None] | None = None,
    param: str = "k",
    init: float | None = None,
) -> pd.DataFrame:
    """Where ``param`` went per variant and slot group over seeds (mean, sd, extremes, mean |value -
    init|, the seeds' claimed range for k); ``by_seed``: variant -> seed -> ``{slot: value}``."""
    rows = []
    for variant, seeds in by_seed.items():
        records = (slots or {}).get(variant)
        tables = {s: final_shape_table(v, records, param, init) for s, v in seeds.items() if v}
        if not tables:
            continue
        long = pd.concat([t.assign(seed=s) for s, t in tables.items()], ignore_index=True)
        for group, part in long.groupby("group", sort=False):
            per_seed = part.groupby("seed")[param].mean()
            lo, hi = SEED_K_RANGES.get(group, (math.nan, math.nan)) if param == "k" else (math.nan,) * 2
            rows.append(
                {
                    "variant": variant,
                    "group": group,
                    "seeds": len(per_seed),
                    f"{param} mean": float(per_seed.mean()),
                    f"{param} sd over seeds": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
                    f"{param} min": float(part[param].min()),
                    f"{param} max": float(part[param].max()),
                    f"mean |{param} - init|": float(part.deviation.abs().mean()),
                    "seeds claim": f"{lo:.2f}-{hi:.2f}" if math.isfinite(lo) else "",
                }
            )
    columns = ["variant", "group", "seeds", f"{param} mean", f"{param} sd over seeds", f"{param} min"]
    return pd.DataFrame(rows, columns=[*columns, f"{param} max", f"mean |{param} - init|", "seeds claim"])


def shape_group_trajectories(traj: pd.DataFrame, slots: Mapping[str, ShapeSlot] | None) -> pd.DataFrame:
    """A run's shape parameter per step averaged over layers per slot group (:data:`GROUPS` order)."""
    if traj.empty:
        return pd.DataFrame(index=traj.index)
    records = _slots({c: None for c in traj.columns}, slots)
    groups = [records[str(c)].group for c in traj.columns]
    out = traj.T.groupby(groups, sort=False).mean().T
    order = [g for g in GROUPS if g in out.columns] + [g for g in out.columns if g not in GROUPS]
    return out[order]


def activation_curves(
    values: Mapping[str, Any],
    slots: Mapping[str, ShapeSlot] | None = None,
    z: Sequence[float] | np.ndarray | None = None,
    include_silu: bool = True,
) -> pd.DataFrame:
    """Every slot's learned activation on ``z`` (default [-4, 4]), one column per slot plus ``silu``."""
    z = np.linspace(-4.0, 4.0, 401) if z is None else np.asarray(z, dtype=np.float64)
    records = _slots(values, slots)
    cols: dict[str, np.ndarray] = {}
    for name, value in values.items():
        kind = records[str(name)].activation or "swelu"
        shape = dict(value) if isinstance(value, Mapping) else value
        cols[str(name)] = registry.curve(kind, z, shape)
    if include_silu:
        cols["silu"] = registry.curve("silu", z)
    return pd.DataFrame(cols, index=pd.Index(z, name="z"))


def movement_trend(
    trajectories: Mapping[Any, pd.DataFrame], slots: Mapping[str, ShapeSlot] | None, param: str = "k"
) -> pd.DataFrame:
    """Per slot group and step, the mean over slots and seeds of |``param`` - init|."""
    frames = []
    for traj in trajectories.values():
        if traj.empty:
            continue
        records = _slots({str(c): None for c in traj.columns}, slots)
        init = {str(c): initial_value(records[str(c)], param) for c in traj.columns}
        dev = (traj - pd.Series(init)).abs()
        groups = [records[str(c)].group for c in traj.columns]
        frames.append(dev.T.groupby(groups, sort=False).mean().T)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames).groupby(level=0).mean().sort_index()
