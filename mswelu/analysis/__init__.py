"""Analysis of training runs and studies: pure functions over metrics records and DataFrames, one module per
topic (frames, shapes, seeds, claims, verdicts, tuning, curves, bootstrap, schema/reader, counts, tables).
The one backward pass, |dL/dk|, is :mod:`mswelu.models.shape_gradients`; timing is
:mod:`mswelu.workbook.throughput`.
"""

from mswelu.analysis.bootstrap import bootstrap_units, bpb_intervals, study_bootstrap
from mswelu.analysis.claims import (
    CLAIM_SETS,
    COMPUTE_CLAIMS,
    COUNT_CLAIMS,
    SEED_CLAIMS,
    SHAPE_MOVED,
    Claim,
    claim_set,
)
from mswelu.analysis.counts import architecture_claims
from mswelu.analysis.curves import budget_pairs, equal_compute_table, paired_convergence
from mswelu.analysis.frames import (
    eval_frame,
    loss_at,
    loss_at_fraction,
    scope_curve,
    shape_trajectories,
    tokens_to_reach,
    train_frame,
)
from mswelu.analysis.ladder import gain_along_training, ladder_slope, ladder_table, rung_gains
from mswelu.analysis.reader import read_study
from mswelu.analysis.schema import StudyData, study_data, study_metrics
from mswelu.analysis.seeds import aggregate_seeds, mean_spread
from mswelu.analysis.shapes import (
    SEED_K_RANGES,
    SEED_K_TABLE,
    activation_curves,
    final_shape_table,
    initial_value,
    k_layer_tables,
    movement_trend,
    shape_deviation,
    shape_group_trajectories,
    shape_slot_summary,
    slot_groups,
)
from mswelu.analysis.tuning import extend_lr_grid, lr_status, unseeded_points
from mswelu.analysis.verdicts import COLUMNS, VERDICTS, evaluate_claims, recompute

__all__ = [
    "COLUMNS",
    "CLAIM_SETS",
    "COMPUTE_CLAIMS",
    "COUNT_CLAIMS",
    "SEED_CLAIMS",
    "SEED_K_RANGES",
    "SEED_K_TABLE",
    "SHAPE_MOVED",
    "VERDICTS",
    "Claim",
    "claim_set",
    "StudyData",
    "activation_curves",
    "aggregate_seeds",
    "architecture_claims",
    "bootstrap_units",
    "bpb_intervals",
    "budget_pairs",
    "equal_compute_table",
    "eval_frame",
    "evaluate_claims",
    "extend_lr_grid",
    "final_shape_table",
    "initial_value",
    "k_layer_tables",
    "movement_trend",
    "loss_at",
    "loss_at_fraction",
    "lr_status",
    "mean_spread",
    "paired_convergence",
    "read_study",
    "recompute",
    "scope_curve",
    "shape_deviation",
    "shape_group_trajectories",
    "shape_slot_summary",
    "shape_trajectories",
    "slot_groups",
    "study_bootstrap",
    "study_data",
    "study_metrics",
    "tokens_to_reach",
    "train_frame",
    "unseeded_points",
    "gain_along_training",
    "ladder_slope",
    "ladder_table",
    "rung_gains",
]
