"""Helpers the notebooks call (``from mswelu import workbook as wb``), one module per concern:

- ``prologue``: every notebook's start (parameters checked, the report, refusals as one line), outputs
  for checked cells, and keeping papermill's executed notebook in the run folder;
- ``plots``: the figures, with one colour table for the activation slots;
- ``profiles``: notebook 03's profiles, the data a preset gets, notebooks 02 and 05's settings;
- ``reuse``: what a rerun does with a run name that holds a run (reuse, resume, or refuse);
- ``compare``: notebook 05's variants x seeds, the bracketing lr sweep on a tuning split, the side-by-side
  throughput, a study's runs;
- ``ledger``: a study's committed records of its runs (reused across sittings and machines);
- ``checks``: smoke checks, the run to analyse, the gradient reaching each k;
- ``launching``: notebook 03's launch plans and their execution;
- ``tasks``: downstream task scores of a notebook's runs (lm-eval, each task once per run).

Runs are read through :mod:`mswelu.runs` (re-exported here: ``wb.load_run``, ``wb.RunData``, ...).
"""

from mswelu.paths import runs_dir
from mswelu.run_names import parse_run_name, run_name
from mswelu.runs import RunData, list_runs, load_run, newest_run, read_jsonl
from mswelu.variants import VARIANTS, hybrid_pattern, variant_overrides
from mswelu.workbook.checks import ensure_run, k_gradients_for_run, shape_gradients_for_run, smoke_checks
from mswelu.workbook.compare import (
    bracketed_lr_sweep,
    lr_sweep,
    run_variants,
    side_by_side_throughput,
    study_from_records,
    study_runs,
    tuning_data,
    variant_config,
)
from mswelu.workbook.launching import execute_plan, plan_launch
from mswelu.workbook.ledger import Ledger, Record, study_ledger
from mswelu.workbook.plots import (
    SLOT_COLOURS,
    plot_activation_shapes,
    plot_k_trajectories,
    plot_loss,
    plot_lr_sweep,
    plot_study_k,
    plot_tokens_per_s,
    plot_variant_bpb,
    plot_variant_curves,
)
from mswelu.workbook.profiles import (
    PROFILES,
    SMOKE_DATA_TOKENS,
    comparison_config,
    data_for,
    data_label,
    resolve_profile,
    smoke_config,
)
from mswelu.workbook.prologue import (
    STUDIES,
    check_parameters,
    current_report,
    format_samples,
    keep_executed_notebook,
    notebook_parameters,
    require_list,
    rounded,
    start,
)
from mswelu.workbook.reuse import announce_reuse, as_run, reusable, run_decision, train_or_load
from mswelu.workbook.tasks import task_scores

__all__ = [
    "PROFILES",
    "SLOT_COLOURS",
    "SMOKE_DATA_TOKENS",
    "STUDIES",
    "VARIANTS",
    "RunData",
    "Ledger",
    "Record",
    "announce_reuse",
    "as_run",
    "bracketed_lr_sweep",
    "check_parameters",
    "comparison_config",
    "current_report",
    "data_for",
    "data_label",
    "ensure_run",
    "execute_plan",
    "format_samples",
    "hybrid_pattern",
    "k_gradients_for_run",
    "shape_gradients_for_run",
    "side_by_side_throughput",
    "study_ledger",
    "keep_executed_notebook",
    "list_runs",
    "load_run",
    "lr_sweep",
    "newest_run",
    "notebook_parameters",
    "parse_run_name",
    "plan_launch",
    "plot_activation_shapes",
    "plot_k_trajectories",
    "plot_loss",
    "plot_lr_sweep",
    "plot_study_k",
    "plot_tokens_per_s",
    "plot_variant_bpb",
    "plot_variant_curves",
    "read_jsonl",
    "resolve_profile",
    "require_list",
    "reusable",
    "rounded",
    "run_decision",
    "run_name",
    "run_variants",
    "runs_dir",
    "smoke_checks",
    "smoke_config",
    "start",
    "task_scores",
    "study_from_records",
    "study_runs",
    "train_or_load",
    "tuning_data",
    "variant_config",
    "variant_overrides",
]
