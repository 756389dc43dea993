"""Analysis of training runs and studies, as pure functions over metrics records and DataFrames (the one
backward pass, |dL/dk|, is :mod:`mswelu.models.shape_gradients`; timing is :mod:`mswelu.bench.throughput`).

By topic:

- :mod:`.frames`: metrics records -> DataFrames; reading a curve (one scope at a time);
- :mod:`.shapes`: where the shape parameters went (k, beta, lambda), placed by the runs' slot records;
- :mod:`.seeds`: figures over seeds;
- :mod:`.claims`: claims as specs (:class:`Claim`, :data:`SEED_CLAIMS`);
- :mod:`.verdicts`: the one evaluator (:func:`evaluate_claims`, :data:`COLUMNS`) and :func:`recompute`;
  :mod:`.measures`: what a row measures; :mod:`.family`: which rows share one error rate (Holm over every
  tested row, one pre-registered primary), :mod:`.splits`: text splits as the unit; :mod:`.rejudge`: a
  committed study's ``verdicts.md``/``.json`` by today's rules;
- :mod:`.tuning`: whether an lr sweep brackets its optimum, and how to extend it;
- :mod:`.curves`: paired convergence and the equal-compute views;
- :mod:`.bootstrap`: the text bootstrap of val bits per byte;
- :mod:`.schema` / :mod:`.reader`: a study's data and its ``metrics.json`` (one writer, one reader, which
  also reads the first study's older schema);
- :mod:`.counts`: the seeds' counts on the architecture they specify;
- :mod:`.tables`: claims tables and counts in words.
"""

from mswelu.analysis.bootstrap import (
    MIN_DOCUMENTS,
    bootstrap_bpb,
    bootstrap_units,
    bpb_intervals,
    paired_bootstrap_gain,
    study_bootstrap,
)
from mswelu.analysis.claims import (
    CLAIM_SETS,
    COMPARABLE_FRACTION,
    COMPUTE_CLAIMS,
    COUNT_CLAIMS,
    DEFAULT_COMPARE,
    SEED_CLAIMS,
    SEED_PARAMETERS,
    SEED_TOKENS,
    SHAPE_MOVED,
    SHAPE_VS_LEARNING,
    Claim,
    claim_set,
    pair_claims,
)
from mswelu.analysis.counts import architecture_claims, architecture_counts
from mswelu.analysis.curves import VIEWS, budget_pairs, equal_compute_table, paired_convergence
from mswelu.analysis.frames import (
    eval_frame,
    loss_at,
    loss_at_fraction,
    scope_curve,
    shape_trajectories,
    tokens_to_reach,
    train_frame,
)
from mswelu.analysis.reader import read_study
from mswelu.analysis.schema import SCHEMA, StudyData, study_data, study_metrics
from mswelu.analysis.seeds import aggregate_seeds, mean_spread, noise_floor, seed_values
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
from mswelu.analysis.tables import verdicts_markdown, verdicts_records
from mswelu.analysis.tuning import LrStatus, extend_lr_grid, lr_status
from mswelu.analysis.verdicts import COLUMNS, VERDICTS, evaluate_claims, recompute

__all__ = [
    "COLUMNS",
    "COMPARABLE_FRACTION",
    "CLAIM_SETS",
    "COMPUTE_CLAIMS",
    "COUNT_CLAIMS",
    "DEFAULT_COMPARE",
    "MIN_DOCUMENTS",
    "SCHEMA",
    "SEED_CLAIMS",
    "SEED_K_RANGES",
    "SEED_K_TABLE",
    "SEED_PARAMETERS",
    "SEED_TOKENS",
    "SHAPE_MOVED",
    "VERDICTS",
    "VIEWS",
    "Claim",
    "SHAPE_VS_LEARNING",
    "claim_set",
    "pair_claims",
    "LrStatus",
    "StudyData",
    "activation_curves",
    "aggregate_seeds",
    "architecture_claims",
    "architecture_counts",
    "bootstrap_bpb",
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
    "noise_floor",
    "paired_bootstrap_gain",
    "paired_convergence",
    "read_study",
    "recompute",
    "scope_curve",
    "seed_values",
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
    "verdicts_markdown",
    "verdicts_records",
]
