"""Helpers the notebooks call (``from mswelu import workbook as wb``), one module per concern; this facade
exports what the notebooks use, and nothing else (tests and other code import the modules themselves):

- ``prologue``: every notebook's start (parameters checked, the report, refusals as one line), outputs
  for checked cells, and keeping papermill's executed notebook in the run folder;
- ``plots``: the figures, with one colour table for the activation slots;
- ``profiles``: notebook 03's profiles, the data a preset gets, notebooks 02 and 05's settings;
- ``reuse``: what a rerun does with a run name that holds a run (reuse, resume, or refuse);
- ``compare``: notebook 05's variants x seeds, the bracketing lr sweep on a tuning split, the side-by-side
  throughput, a study's runs;
- ``study``: a comparison assembled (context, results table, verdicts, metrics), after its runs or from a
  committed study's records alone;
- ``ledger``: a study's committed records of its runs (reused across sittings and machines);
- ``checks``: smoke checks, the run to analyse, the gradient reaching each shape parameter;
- ``launching``: notebook 03's launch plans and their execution;
- ``tasks``: downstream task scores of a notebook's runs (lm-eval, each task once per run).

Runs are read through :mod:`mswelu.runs.folder` (``wb.load_run``); paths shown relative to the project
(``wb.display_path``); a run's report attached to its trackers (``wb.attach_to_trackers``).
"""

from mswelu.base.paths import display_path
from mswelu.base.run_names import run_name
from mswelu.runs.folder import load_run
from mswelu.runs.metrics_log import attach_to_trackers
from mswelu.workbook.checks import ensure_run, shape_gradients_for_run, smoke_checks
from mswelu.workbook.compare import bracketed_lr_sweep, run_variants, side_by_side_throughput, study_runs
from mswelu.workbook.launching import execute_plan, plan_launch
from mswelu.workbook.ledger import study_ledger
from mswelu.workbook.plots import (
    plot_activation_shapes,
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
from mswelu.workbook.study import assemble_study
from mswelu.workbook.tasks import task_scores

__all__ = [
    "assemble_study",
    "attach_to_trackers",
    "bracketed_lr_sweep",
    "comparison_config",
    "data_for",
    "split_data",
    "display_path",
    "ensure_run",
    "execute_plan",
    "format_samples",
    "keep_executed_notebook",
    "load_run",
    "notebook_parameters",
    "plan_launch",
    "plot_activation_shapes",
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
]
