"""Every variant's training tokens/s, measured side by side in one process, interleaved, at a study's shape:
the throughput that the equal-time view of a study uses (:mod:`mswelu.analysis.curves`).

Timing each variant in its own run measures it under whatever else the machine was doing then. Here every
variant's model and optimizer are built as the trainer builds them (:func:`mswelu.runs.preflight.plan_run`
on the study's data), at the study's shape: notebook 05's parameters, read from a study's parameter file
(``--study notebooks/studies/activations-cpu.yaml``, the file papermill's ``-f`` reads) over the notebook's
own defaults, with any setting given on the command line on top. Then rounds of a few optimizer steps per
variant, in an order that rotates every round, so that a slow spell of the machine falls on every variant
alike, until every variant has been timed for at least ``--seconds`` (30 by default) and ``--rounds``
rounds. Each variant's figure is the median over rounds, with its spread (min-max and the quartiles), and
its ratio to its mixer's SiLU reference (``mamba`` for Mamba-1 variants, ``mamba2`` for Mamba-2's) when that
was measured beside it. Random tokens: speed does not depend on them.

``python -m mswelu.bench throughput --study notebooks/studies/activations-cpu.yaml --variants
mamba,mamba-swelu,mamba2,mamba2-swelu`` prints the table (``--json``: its rows); ``--record`` also writes it
where the study's equal-time rows read it (``reports/studies/<study>/throughput.json``, keyed by every
variant's speed settings and training-path code: notebook 05 reuses it while they match). Speed is printed
here, never asserted in tests.
"""

from __future__ import annotations

import ast
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mswelu.bench import bench_parser, finish

__all__ = ["MIN_SECONDS", "main", "study_parameters"]

#: the command's default: every variant timed for at least this many seconds
MIN_SECONDS = 30.0
NOTEBOOK = "05_baselines.ipynb"


def study_parameters(study: str | Path | None = None, **given: Any) -> dict[str, Any]:
    """Notebook 05's parameters as a run of it with ``papermill -f study`` has them: the notebook's own
    defaults, the study's parameter file over them, then every ``given`` value that is not None."""
    import papermill
    import yaml

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / NOTEBOOK  # the checkout's
    if not notebook.is_file():
        raise ValueError(f"{notebook} not found: the study parameters are read from a checkout")
    params = {n: ast.literal_eval(p["default"]) for n, p in papermill.inspect_notebook(str(notebook)).items()}
    if study is not None:
        path = Path(study)
        if not path.is_file():
            raise ValueError(f"study parameter file {path} not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} is not a mapping of notebook 05's parameters")
        unknown = sorted(set(loaded) - set(params))
        if unknown:
            raise ValueError(f"{path} sets {unknown}, which are not parameters of {NOTEBOOK}")
        params.update(loaded)
    params.update({k: v for k, v in given.items() if v is not None})
    return params


def study_base(params: Mapping[str, Any]) -> dict[str, Any]:
    """Notebook 05's base config from its parameters ``params`` (the data prepared as the notebook does)."""
    from mswelu.workbook import comparison_config, data_for

    keys = ("max_steps", "batch_size", "seq_len", "lr", "optimizer", "model", "ckpt_every", "device")
    return comparison_config(
        preset=params["preset"],
        data=data_for(params["data"], params["preset"], params["tokenizer"]),
        overwrite=params["overwrite"],
        evaluations=params["evaluations"],
        **{k: params[k] for k in keys},
    )


def _print(table: pd.DataFrame) -> None:
    first = table.iloc[0]
    print(
        f"training tokens/s side by side, interleaved: B={first['batch_size']} L={first['seq_len']} "
        f"{first['dtype']} on {first['device']}, {len(first['rounds'])} rounds (median [min-max], quartiles)"
    )
    for r in table.itertuples():
        measured = isinstance(r.vs_silu, float) and math.isfinite(r.vs_silu)  # NaN or None: no reference ran
        ratio = f"{r.vs_silu:6.3f}x {r.silu_reference}" if r.silu_reference and measured else ""
        print(
            f"  {r.variant:20s} {r.tokens_per_s:9,.0f}  [{r.tokens_per_s_min:,.0f}-{r.tokens_per_s_max:,.0f}]"
            f"  IQR {r.tokens_per_s_q1:,.0f}-{r.tokens_per_s_q3:,.0f}  {r.seconds:5.1f} s  {ratio}"
        )


def main(argv: list[str] | None = None) -> int:
    p = bench_parser("throughput", __doc__, full=True)
    p.add_argument("--study", default=None, help="a study's parameter file (notebooks/studies/NAME.yaml)")
    p.add_argument("--variants", default=None, help="comma-separated (default: the study's)")
    p.add_argument("--preset", default=None)
    p.add_argument("--tokenizer", default=None, help="the embedded corpus' tokenizer: gpt2 | bpe:N")
    p.add_argument("--data", default=None, help="a prepared dataset folder")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--optimizer", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model setting")
    p.add_argument("--seconds", type=float, default=MIN_SECONDS, help="timed seconds per variant, at least")
    p.add_argument("--rounds", type=int, default=5, help="rounds, at least")
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per variant and round")
    p.add_argument("--record", action="store_true", help="write the study's throughput.json")
    args = p.parse_args(argv)

    def compute() -> list[dict[str, Any]]:
        from mswelu.train import parse_model_set
        from mswelu.workbook import side_by_side_throughput, study_ledger

        variants = (
            None if args.variants is None else [v.strip() for v in args.variants.split(",") if v.strip()]
        )
        params = study_parameters(
            args.study,
            variants=variants,
            preset=args.preset,
            tokenizer=args.tokenizer,
            data=args.data,
            batch_size=args.batch_size,
            seq_len=args.seq_len,
            optimizer=args.optimizer,
        )
        params["model"] = parse_model_set(args.set, params.get("model"))
        if args.record and not params.get("study"):
            raise ValueError("--record writes a study's throughput.json: give a study's file (study: true)")
        ledger = study_ledger(params["run_name"]) if args.record else None
        measure = {"rounds": args.rounds, "steps": args.steps, "seconds": args.seconds}
        table = side_by_side_throughput(
            study_base(params), params["variants"], ledger=ledger, reuse=False, **measure
        )
        return json.loads(table.to_json(orient="records"))

    return finish(compute, args.json, lambda rows: _print(pd.DataFrame(rows)))


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
