"""The notebooks' figures, every one colouring the activation slots from one table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import EngFormatter, NullFormatter

from mswelu import analysis
from mswelu.base import stats
from mswelu.modules.slots import slot_records
from mswelu.runs.folder import RunData
from mswelu.workbook.ladder import Scale

__all__ = [
    "SLOT_COLOURS",
    "plot_activation_shapes",
    "plot_gain_at_scale",
    "plot_k_trajectories",
    "plot_loss",
    "plot_lr_sweep",
    "plot_study_k",
    "plot_tokens_per_s",
    "plot_variant_bpb",
    "plot_variant_curves",
]

#: Each slot group's colour (one line per group) and a colormap of the same hue (one line per slot,
#: shaded by depth); a group not listed is drawn as "other".
SLOT_COLOURS: dict[str, tuple[str, str]] = {
    "in-mixer": ("C0", "Blues"),
    "post-mixer": ("C2", "Greens"),
    "dense": ("C1", "Oranges"),
    "attention": ("C4", "Purples"),
    "other": ("C7", "Greys"),
}


def _slot_colour(group: str, shade: float | None = None) -> Any:
    """``group``'s colour, or with ``shade`` (0..1) a shade of its colormap."""
    colour, cmap = SLOT_COLOURS.get(group, SLOT_COLOURS["other"])
    return colour if shade is None else plt.get_cmap(cmap)(shade)


def _figure_and_axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """``ax`` and its figure, or a new ``figsize`` figure (so notebooks can put plots side by side)."""
    if ax is None:
        return plt.subplots(figsize=figsize)
    return ax.figure, ax


def _finish(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str, **legend: Any) -> Any:
    """Labels, grid and (where something is labelled) a legend; the figure laid out."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**legend)
    fig.tight_layout()
    return fig


def plot_loss(
    runs: Mapping[str, RunData] | RunData,
    x: str = "tokens",
    val: bool = True,
    smooth: int = 1,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Training loss (and validation loss, dashed, with markers) against ``x`` ("tokens" or "step")."""
    if isinstance(runs, RunData):
        runs = {runs.name: runs}
    fig, ax = _figure_and_axes(ax, (7, 4))
    for i, (label, run) in enumerate(runs.items()):
        color = f"C{i % 10}"
        tr = run.train
        if not tr.empty:
            y = tr.loss.rolling(max(1, smooth), min_periods=1).mean()
            ax.plot(tr[x], y, color=color, lw=1.2, label=f"{label} train")
        ev = run.eval
        if val and not ev.empty:
            ax.plot(ev[x], ev.val_loss, color=color, ls="--", marker="o", ms=3, label=f"{label} val")
    return _finish(fig, ax, x, "cross-entropy (nats/token)", title or "loss", fontsize=8)


def plot_k_trajectories(
    k: pd.DataFrame,
    ax: Any = None,
    title: str | None = None,
    slots: Mapping[str, Any] | None = None,
    param: str = "k",
) -> Any:
    """One line per slot of a shape parameter per logged step, coloured by slot group and shaded by depth."""
    fig, ax = _figure_and_axes(ax, (7, 4))
    group_of = analysis.slot_groups([str(c) for c in k.columns], slots)
    groups: dict[str, list[str]] = {}
    for col in k.columns:
        groups.setdefault(group_of[str(col)], []).append(col)
    for group, cols in groups.items():
        for j, col in enumerate(cols):
            shade = 0.45 + 0.5 * (j + 1) / (len(cols) + 1)
            ax.plot(k.index, k[col], color=_slot_colour(group, shade), lw=1.2, label=col)
    if len(k.columns):
        records = slot_records([r.to_dict() for r in (slots or {}).values()], [str(c) for c in k.columns])
        init = {analysis.initial_value(records[str(c)], param) for c in k.columns}
        for value in init:
            ax.axhline(value, color="k", lw=0.6, ls=":")
    title = title or f"{param} during training"
    return _finish(fig, ax, "step", param, title, fontsize=7, ncol=2 if len(k.columns) > 8 else 1)


def plot_study_k(runs_by_variant: Mapping[str, Mapping[int, RunData]], param: str = "k") -> Any:
    """One panel per variant: ``param`` per step averaged over layers per slot group, one line per seed, with
    the seeds' claimed final k range per slot group as a band of the same colour."""
    variants = [v for v, runs in runs_by_variant.items() if runs]
    fig, axes = plt.subplots(1, max(1, len(variants)), figsize=(5 * max(1, len(variants)), 4), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=False):
        shown: set[str] = set()
        for _, run in sorted(runs_by_variant[variant].items()):
            groups = analysis.shape_group_trajectories(run.shape(param), run.slots)
            for group in groups.columns:
                label = group if group not in shown else None
                ax.plot(groups.index, groups[group], color=_slot_colour(group), lw=1.2, label=label)
                shown.add(group)
        for group in shown if param == "k" else ():
            lo, hi = analysis.SEED_K_RANGES.get(group, (None, None))
            if lo is not None:
                ax.axhspan(lo, hi, color=_slot_colour(group), alpha=0.12)
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set(
            xlabel="step",
            ylabel=f"mean {param} over layers",
            title=f"{variant} ({len(runs_by_variant[variant])} seeds)",
        )
        ax.grid(alpha=0.3)
        if shown:
            band = " (band: seeds' claim)" if param == "k" else ""
            ax.legend(fontsize=8, title=f"slot{band}", title_fontsize=8)
    fig.tight_layout()
    return fig


def plot_activation_shapes(
    values: Mapping[str, Any],
    z: Sequence[float] | None = None,
    ax: Any = None,
    title: str = "learned activations vs SiLU",
    slots: Mapping[str, Any] | None = None,
) -> Any:
    """Each slot's learned activation over z, coloured by group, with SiLU in black."""
    curves = analysis.activation_curves(values, slots, z)
    group_of = analysis.slot_groups(list(values), slots)
    fig, ax = _figure_and_axes(ax, (7, 4))
    names = [c for c in curves.columns if c != "silu"]
    for j, col in enumerate(names):
        shape = values[col] if isinstance(values[col], Mapping) else {"k": values[col]}
        shown = ", ".join(f"{p}={float(v):.2f}" for p, v in shape.items() if p != "lambda" or float(v) != 1.0)
        ax.plot(
            curves.index,
            curves[col],
            color=_slot_colour(group_of[col], 0.5 + 0.4 * (j + 1) / (len(names) + 1)),
            lw=1.1,
            label=f"{col} ({shown})",
        )
    ax.plot(curves.index, curves["silu"], color="k", lw=1.8, label="SiLU")
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    return _finish(fig, ax, "z", "activation(z)", title, fontsize=7, ncol=2 if len(names) > 8 else 1)


def plot_tokens_per_s(runs: Mapping[str, RunData] | RunData, ax: Any = None) -> Any:
    """Training throughput per logged step."""
    if isinstance(runs, RunData):
        runs = {runs.name: runs}
    fig, ax = _figure_and_axes(ax, (7, 3))
    for i, (label, run) in enumerate(runs.items()):
        tr = run.train
        if not tr.empty:
            ax.plot(tr.step, tr.tokens_per_s, color=f"C{i % 10}", lw=1, label=label)
    return _finish(fig, ax, "step", "tokens/s", "throughput", fontsize=8)


def plot_variant_curves(curves: pd.DataFrame, results: pd.DataFrame) -> Any:
    """Notebook 05's figure: val loss against tokens per variant (seed mean, band) beside tokens/s."""
    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    for i, (variant, part) in enumerate(curves.groupby("variant", sort=False)):
        band = part.groupby("tokens").val_loss.agg(["mean", "min", "max"])
        axes[0].plot(band.index, band["mean"], color=f"C{i}", marker="o", ms=3, label=variant)
        axes[0].fill_between(band.index, band["min"], band["max"], color=f"C{i}", alpha=0.2)
    axes[0].set(xlabel="tokens", ylabel="val loss", title="validation loss (band: min-max over seeds)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    _per_variant(results, "tokens_per_s", axes[1], interval=False, higher_better=True)
    axes[1].set(title="training tokens/s (dots: seeds; bar: mean)", xlabel="tokens/s")
    fig.tight_layout()
    return fig


def _per_variant(
    results: pd.DataFrame,
    value: str,
    ax: Any,
    interval: bool,
    level: float = 0.95,
    higher_better: bool = False,
) -> list[str]:
    """One row per variant, best mean on top: seeds as dots, mean as a bar; returns the order."""
    stats_of = {
        v: stats.t_interval(part[value].astype(float).to_numpy(), level)
        for v, part in results.groupby("variant", sort=False)
    }
    order = sorted(stats_of, key=lambda v: stats_of[v].mean, reverse=higher_better)
    colour = {v: f"C{i % 10}" for i, v in enumerate(results["variant"].drop_duplicates())}
    for row, variant in enumerate(reversed(order)):
        iv = stats_of[variant]
        seeds = results.loc[results["variant"] == variant, value].astype(float)
        ax.scatter(seeds, [row] * len(seeds), color=colour[variant], s=14, alpha=0.6, zorder=3)
        if interval and iv.n >= 2:
            ax.errorbar(
                iv.mean, row, xerr=[[iv.mean - iv.lo], [iv.hi - iv.mean]], fmt="none", ecolor="k", capsize=4
            )
        ax.plot([iv.mean, iv.mean], [row - 0.3, row + 0.3], color="k", lw=2, zorder=4)
    ax.set_yticks(range(len(order)), list(reversed(order)))
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.grid(alpha=0.3, axis="x")
    return order


def plot_variant_bpb(
    results: pd.DataFrame,
    value: str = "val_bpb",
    level: float = 0.95,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """The headline figure: each variant's mean ``value`` with its t interval, seeds as dots."""
    if "variant" not in results.columns or value not in results.columns:
        raise ValueError(f"results needs 'variant' and {value!r} columns; has {list(results.columns)}")
    n = results["variant"].nunique()
    fig, ax = _figure_and_axes(ax, (7, 0.9 + 0.45 * n))
    _per_variant(results, value, ax, interval=True, level=level)
    seeds = results.groupby("variant").size()
    few = " (one seed: no interval)" if (seeds < 2).any() else ""
    label = "val bits per byte (lower is better)" if value == "val_bpb" else value.replace("_", " ")
    ax.set_xlabel(label)
    ax.set_title(
        title or f"{label.split(' (')[0]}: mean and {level:.0%} t interval over seeds; dots: seeds{few}"
    )
    fig.tight_layout()
    return fig


def plot_lr_sweep(sweep: pd.DataFrame, status: Mapping[str, Any] | None = None, ax: Any = None) -> Any:
    """Each variant's tuning loss against lr: chosen lr circled, diverged points as crosses."""
    fig, ax = _figure_and_axes(ax, (7, 4))
    finite = sweep[~sweep.diverged.astype(bool)]
    top = float(finite.tune_val_loss.max()) if not finite.empty else 1.0
    for i, (variant, part) in enumerate(sweep.groupby("variant", sort=False)):
        part = part.sort_values("lr")
        ok = part[~part.diverged.astype(bool)]
        s = (status or {}).get(variant)
        label = variant if s is None or s.interior else f"{variant} (at the {s.edge} edge)"
        ax.plot(ok.lr, ok.tune_val_loss, marker="o", ms=4, color=f"C{i % 10}", label=label)
        bad = part[part.diverged.astype(bool)]
        ax.scatter(bad.lr, [top] * len(bad), marker="x", color=f"C{i % 10}")
        if s is not None and s.lr == s.lr:
            chosen = ok[ok.lr == s.lr]
            ax.scatter(chosen.lr, chosen.tune_val_loss, s=120, facecolors="none", edgecolors=f"C{i % 10}")
    ax.set_xscale("log")
    return _finish(
        fig, ax, "learning rate", "final loss on the tuning split", "lr sweep per variant", fontsize=8
    )


def _gain_panel(ax: Any, x: pd.Series, frame: pd.DataFrame, xlabel: str, title: str) -> None:
    """Mean gains (in %) with their 95% intervals against ``x`` on a log axis, zero drawn."""
    pct = frame[["gain", "lo", "hi"]] * 100
    ax.errorbar(x, pct.gain, yerr=[pct.gain - pct.lo, pct.hi - pct.gain], fmt="o-", capsize=3)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow log range otherwise labels every minor tick
    ax.set_xlabel(xlabel)
    ax.set_ylabel("paired gain in val loss (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)


def plot_gain_at_scale(scale: Scale) -> Any:
    """A :class:`~mswelu.workbook.ladder.Scale`: the gain ``1 - ours / base`` along training and, with a
    ladder, against parameters across the rungs, each point a mean over seeds with its 95% t interval; the
    ladder's weighted slope per tenfold parameters in its title."""
    ladder, slope, label = scale.ladder, scale.slope, f"{scale.ours} vs {scale.base}"
    panels = 1 if ladder is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    axes = axes[0]
    _gain_panel(axes[0], scale.along.tokens, scale.along, "training tokens", f"{label} along training")
    if ladder is not None:
        _gain_panel(axes[1], ladder.params, ladder, "parameters", f"{label} by size")
        for _, r in ladder.iterrows():
            axes[1].annotate(
                f"{r.rung}\n{r['tokens/param']:.1f} tok/param", (r.params, r.gain * 100), fontsize=7
            )
        if slope is not None and math.isfinite(slope.per_decade):
            axes[1].set_title(
                f"{label} by size: {slope.per_decade * 100:+.2f} points per 10x "
                f"[{slope.lo * 100:+.2f}, {slope.hi * 100:+.2f}], {slope.df} df"
            )
    fig.tight_layout()
    return fig
