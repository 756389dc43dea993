"""Helpers the notebooks call (``from mswelu import workbook as wb``), one module per concern (prologue,
plots, profiles, reuse, compare, study, ledger, checks, launching, tasks). This facade exports what the
notebooks use and nothing else (``tests/test_layers.py``); other code imports the modules themselves.
"""

from mswelu.base.paths import display_path
from mswelu.base.run_names import run_name
from mswelu.runs.folder import load_run
from mswelu.runs.metrics_log import attach_to_trackers
from mswelu.workbook.checks import ensure_run, shape_gradients_for_run, smoke_checks
from mswelu.workbook.compare import (
    run_variants,
    side_by_side_throughput,
    study_runs,
    time_matched_runs,
)
from mswelu.workbook.ladder import effect_at_scale
from mswelu.workbook.launching import execute_plan, plan_launch
from mswelu.workbook.ledger import study_ledger
from mswelu.workbook.plots import (
    plot_activation_shapes,
    plot_gain_at_scale,
    plot_k_trajectories,
    plot_loss,
    plot_lr_sweep,
    plot_study_k,
    plot_tokens_per_s,
    plot_variant_bpb,
    plot_variant_curves,
)
from mswelu.workbook.profiles import comparison_config, data_for, resolve_profile, smoke_config, split_data
from mswelu.workbook.prologue import format_samples, keep_executed_notebook, notebook_parameters, start
from mswelu.workbook.study import assemble_study, time_plan
from mswelu.workbook.sweep import bracketed_lr_sweep
from mswelu.workbook.tasks import task_scores

__all__ = [
    "assemble_study",
    "attach_to_trackers",
    "bracketed_lr_sweep",
    "comparison_config",
    "data_for",
    "split_data",
    "display_path",
    "effect_at_scale",
    "ensure_run",
    "execute_plan",
    "format_samples",
    "keep_executed_notebook",
    "load_run",
    "notebook_parameters",
    "plan_launch",
    "plot_activation_shapes",
    "plot_gain_at_scale",
    "plot_k_trajectories",
    "plot_loss",
    "plot_lr_sweep",
    "plot_study_k",
    "plot_tokens_per_s",
    "plot_variant_bpb",
    "plot_variant_curves",
    "resolve_profile",
    "run_name",
    "run_variants",
    "shape_gradients_for_run",
    "side_by_side_throughput",
    "smoke_checks",
    "smoke_config",
    "start",
    "study_ledger",
    "study_runs",
    "task_scores",
    "time_matched_runs",
    "time_plan",
]
