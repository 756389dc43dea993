"""Keep a study's ledger records valid through a refactor of training-path code, with a recorded proof that
training is unchanged.

Before the change, with the old code, ``fingerprint`` trains every variant a few steps (fp32 and bf16) and
writes the exact losses and a hash of the final weights; after it, ``apply`` recomputes them and, only if
every one is identical, re-keys the records to the new digests and appends the proof to
``reports/studies/<study>/migrations.json``; otherwise the study must be rerun. ``tests/test_ledger.py``
recomputes the latest proof.

    PYTHONPATH=../old python mswelu/workbook/migrate.py fingerprint --study activations-cpu --out old.json
    python -m mswelu.workbook.migrate apply --study activations-cpu --proof old.json

It imports only entry points every version has (``mswelu.train.train``, ``mswelu.data.default_dataset``), so
it runs against old code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["FINGERPRINT", "apply", "fingerprint", "machine", "record_name", "study_fingerprint"]

#: how a fingerprint trains: the study's settings with these overrides (small, fast, every step logged)
FINGERPRINT = {
    "max_steps": 4,
    "batch_size": 4,
    "seq_len": 64,
    "warmup": 1,
    "dtypes": ["fp32", "bf16"],
    "threads": 1,
}
_DATA_TOKENS = 40_000
_TOKENIZER = "bpe:4096"


def machine() -> dict[str, Any]:
    """What a fingerprint's bits depend on besides the code: a proof is checked only where these match."""
    import torch

    return {
        "machine": platform.machine(),
        "torch": torch.__version__.split("+")[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def fingerprint(settings: Mapping[str, Any], data: str | Path, dtype: str) -> dict[str, Any]:
    """Train ``settings`` :data:`FINGERPRINT` steps in ``dtype``: exact losses and a weights hash."""
    from mswelu.train import train

    cfg = dict(settings)
    cfg.update({k: v for k, v in FINGERPRINT.items() if k not in ("dtypes", "threads")})
    if str(data).startswith("task:"):  # a task's examples have their own length
        cfg["seq_len"] = settings["seq_len"]
    cfg.update(eval_every=0, eval_batches=1, ckpt_every=0, progress=False, dtype=dtype, data=str(data))
    with tempfile.TemporaryDirectory(prefix="mswelu-fingerprint-") as out:  # a run folder per record: 44 MB
        cfg.update(out=out, trackers=[])
        run = Path(train(cfg)["run_dir"])
        lines = (run / "metrics.jsonl").read_text().splitlines()
        weights = hashlib.sha256((run / "final" / "model.safetensors").read_bytes()).hexdigest()[:16]
    records = [json.loads(line) for line in lines if line.strip()]
    losses = [float(r["loss"]).hex() for r in records if "loss" in r and r.get("kind", "train") == "train"]
    return {"losses": losses, "weights": weights}


def _ledger_folder(study: str) -> Path:
    """The committed study's folder in the checkout that holds this file (no import: see the docstring)."""
    return Path(__file__).resolve().parents[2] / "reports" / "studies" / study


def record_name(record: Mapping[str, Any]) -> str:
    """What a record's settings and code belong to: its variant, and on a synthetic task ``variant@task`` (a
    task's file is on the training path, so one variant's records differ in code from task to task)."""
    task = record["key"].get("task")
    return record["variant"] + (f"@{task.split('?')[0][len('task:') :]}" if task else "")


def _variant_settings(study: str) -> dict[str, tuple[dict[str, Any], str | None]]:
    """Each variant's settings and task (None: text) from its first trained run's record, else (a study still
    in its lr sweep) its first sweep point's; in a study of synthetic tasks, each variant on each task."""
    records = [json.loads(p.read_text()) for p in sorted((_ledger_folder(study) / "runs").glob("*.json"))]
    out: dict[str, tuple[dict[str, Any], str | None]] = {}
    for kind in ("run", "sweep"):
        for record in (r for r in records if r.get("kind") == kind):
            out.setdefault(record_name(record), (dict(record["key"]["settings"]), record["key"].get("task")))
    if not out:
        raise SystemExit(f"error: study {study!r} has no ledger records under {_ledger_folder(study)}/runs")
    return out


def study_fingerprint(
    study: str,
    variants: Sequence[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every variant's fingerprint on this code, on one thread (bits depend on the thread count), with the
    settings it used (``settings``: a proof's, so that a study that has gained records since is fingerprinted
    as the proof was; default: each variant's first record's)."""
    import torch

    from mswelu.data import default_dataset

    data = default_dataset(max_tokens=_DATA_TOKENS, tokenizer=_TOKENIZER)
    if settings is not None:
        settings = {name: (dict(one["settings"]), one.get("task")) for name, one in settings.items()}
    else:
        settings = _variant_settings(study)
    out = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(FINGERPRINT["threads"])
    try:
        for variant in variants or sorted(settings):
            for dtype in FINGERPRINT["dtypes"]:
                one, task = settings[variant]
                out[f"{variant}/{dtype}"] = fingerprint(one, task or data, dtype)
    finally:
        torch.set_num_threads(threads)
    used = {name: {"settings": one, "task": task} for name, (one, task) in settings.items()}
    return {"study": study, "machine": machine(), "fingerprint": out, "settings": used}


def apply(study: str, proof: Mapping[str, Any], why: str) -> Path:
    """Re-key ``study``'s records if its fingerprint equals ``proof``'s, recording the proof."""
    from mswelu.base.fs import atomic_write_json
    from mswelu.workbook.ledger import record_code

    if proof.get("study") != study:
        raise SystemExit(f"error: the proof is of study {proof.get('study')!r}, not {study!r}")
    if proof.get("machine") != machine():
        raise SystemExit(
            f"error: the proof was made on {proof.get('machine')}, this is {machine()}: make both here"
        )
    folder = _ledger_folder(study)
    records = {path: json.loads(path.read_text()) for path in sorted((folder / "runs").glob("*.json"))}
    names = {record_name(record) for record in records.values()}
    if "settings" in proof and (unproven := sorted(names - set(proof["settings"]))):
        raise SystemExit(
            f"error: the proof names no settings for {', '.join(unproven)} (records added since): "
            "fingerprint the old code again"
        )
    now = study_fingerprint(study, settings=proof.get("settings"))
    differ = sorted(k for k in proof["fingerprint"] if proof["fingerprint"][k] != now["fingerprint"].get(k))
    differ += sorted(set(now["fingerprint"]) - set(proof["fingerprint"]))
    if differ:
        raise SystemExit(
            f"error: training is not bit-identical for {', '.join(differ)}: the records cannot be migrated; "
            f"rerun the study instead"
        )
    old, new = {}, {}
    for path, record in records.items():
        code = record_code(record["key"])
        old.setdefault(record_name(record), record["key"]["code"]["digest"])
        new[record_name(record)] = code["digest"]
        record["key"]["code"] = code
        atomic_write_json(path, record)
    throughput = folder / "throughput.json"
    if throughput.is_file():
        saved = json.loads(throughput.read_text())
        for variant, key in saved.get("keys", {}).items():
            key["code"] = new.get(variant, key["code"])
        atomic_write_json(throughput, saved)
    log = folder / "migrations.json"
    entries = json.loads(log.read_text()) if log.is_file() else []
    entries.append(
        {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "why": why,
            "machine": now["machine"],
            "steps": FINGERPRINT,
            "from": old,
            "to": new,
            "fingerprint": now["fingerprint"],
            "settings": now["settings"],
        }
    )
    atomic_write_json(log, entries)
    return log


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mswelu.workbook.migrate", description=__doc__.split("\n\n")[0]
    )
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fingerprint", help="write this code's fingerprint of a study's variants")
    f.add_argument("--study", required=True)
    f.add_argument("--out", required=True)
    a = sub.add_parser("apply", help="re-key a study's records if this code's fingerprint equals the proof's")
    a.add_argument("--study", required=True)
    a.add_argument("--proof", required=True, help="the fingerprint file the old code wrote")
    a.add_argument("--why", required=True, help="what changed (recorded with the proof)")
    args = p.parse_args(argv)
    if args.command == "fingerprint":
        Path(args.out).write_text(json.dumps(study_fingerprint(args.study), indent=1) + "\n")
        print(f"wrote {args.out}")
    else:
        log = apply(args.study, json.loads(Path(args.proof).read_text()), args.why)
        print(f"records re-keyed; proof appended to {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
