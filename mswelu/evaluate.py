"""Downstream tasks with lm-eval-harness (the ``eval`` extra), on a run's model through its Hugging Face
class; scores go to ``<run>/tasks.json``.

    python -m mswelu.evaluate tasks --run main --tasks lambada_openai,hellaswag      # needs the Hub
    python -m mswelu.evaluate tasks --run main --tasks mswelu_lastword,mswelu_choice # offline, see below
    python -m mswelu.evaluate build-tasks --data data/default                        # write the local tasks

Two local tasks are built from the dataset's validation split (:func:`build_local_tasks`): ``mswelu_lastword``
(a passage's last word, LAMBADA's form) and ``mswelu_choice`` (the true next line among four, HellaSwag's
form).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mswelu.base.errors import with_nearest
from mswelu.base.fs import atomic_write_json, atomic_write_text
from mswelu.base.paths import cache_dir
from mswelu.runs import folder as runs
from mswelu.runs import model as run_model

__all__ = ["LOCAL_TASKS", "build_local_tasks", "main", "read_task_scores", "run_tasks", "validation_texts"]

LOCAL_TASKS = ("mswelu_lastword", "mswelu_choice")
_WORD = re.compile(r"(?<= )[A-Za-z]{3,}(?=[.,;:!?]?\s)")


def _need_lm_eval() -> None:
    if importlib.util.find_spec("lm_eval") is None:
        raise ValueError(
            "downstream tasks need lm-eval-harness, which is not installed: pip install 'mswelu[eval]'"
        )


def validation_texts(data: str | Path) -> list[str]:
    """The documents of a prepared dataset's validation split, decoded."""
    from mswelu.data import check_shards, dataset_tokenizer

    folder = Path(data).expanduser()
    meta = check_shards(folder)
    tokens = np.memmap(folder / "val.bin", dtype=meta["dtype"], mode="r")
    cuts = np.flatnonzero(tokens == int(meta["eos_id"]))
    tok = dataset_tokenizer(folder, meta)
    docs, start = [], 0
    for end in [*cuts.tolist(), len(tokens)]:
        if end > start:
            docs.append(tok.decode(tokens[start:end].tolist()))
        start = end + 1
    return [d for d in docs if d.strip()]


def _lastword_docs(texts: Sequence[str], n: int, rng: random.Random, context_chars: int) -> list[dict]:
    """Passages ending before a word of 3+ letters: ``context`` and ``target`` (the space and the word)."""
    found = []
    for text in texts:
        for m in _WORD.finditer(text):
            if m.start() - 1 >= context_chars:
                found.append((text, m.start() - 1, m.end()))
    picks = rng.sample(found, min(n, len(found)))
    return [{"context": t[s - context_chars : s], "target": t[s:e]} for t, s, e in picks]


def _choice_docs(texts: Sequence[str], n: int, rng: random.Random, context_lines: int) -> list[dict]:
    """A passage of whole lines, its true next line and three other lines of the split, in a seeded order."""
    lines = [[ln for ln in t.split("\n")] for t in texts]
    pool = [ln for ls in lines for ln in ls if 5 <= len(ln.strip()) <= 80]
    found = [
        (ls, i)
        for ls in lines
        for i in range(context_lines, len(ls))
        if 5 <= len(ls[i].strip()) <= 80 and all(ls[j].strip() for j in range(i - context_lines, i))
    ]
    docs = []
    for ls, i in rng.sample(found, min(n, len(found))):
        true = ls[i]
        others = []
        while len(others) < 3:
            cand = rng.choice(pool)
            if cand != true and cand not in others:
                others.append(cand)
        choices = [true, *others]
        rng.shuffle(choices)
        context = "\n".join(ls[i - context_lines : i]) + "\n"
        docs.append({"context": context, "choices": choices, "gold": choices.index(true)})
    return docs


def _task_yaml(name: str, data_file: Path, kind: str) -> str:
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "doc_to_text": "context",
        "target_delimiter": "",  # the space, if any, is part of the target / choices
    }
    if kind == "lastword":
        config.update(
            output_type="loglikelihood",
            doc_to_target="target",
            metric_list=[
                {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            ],
        )
    else:
        config.update(
            output_type="multiple_choice",
            doc_to_choice="choices",
            doc_to_target="gold",
            metric_list=[
                {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
            ],
        )
    config["metadata"] = {"version": 1.0}
    return yaml.safe_dump(config, sort_keys=False)


def build_local_tasks(
    data: str | Path, out: str | Path | None = None, n: int = 200, seed: int = 0, context_chars: int = 400
) -> Path:
    """Write the two local tasks from ``data``'s validation split into ``out`` (default: the cache)."""
    from mswelu.data import load_meta

    meta = load_meta(data)
    if out is None:
        key = f"{meta.get('fingerprint', 'data')}-n{n}-s{seed}-c{context_chars}"
        out = cache_dir() / "lm_eval_tasks" / key
    out = Path(out).expanduser().resolve()
    texts = validation_texts(data)
    rng = random.Random(seed)
    built = {
        "lastword": _lastword_docs(texts, n, rng, context_chars),
        "choice": _choice_docs(texts, n, rng, max(1, context_chars // 40)),
    }
    for kind, docs in built.items():
        if not docs:
            raise ValueError(f"the validation split of {data} is too short for the {kind} task")
        rows = out / f"mswelu_{kind}.jsonl"
        atomic_write_text(rows, "".join(json.dumps(d) + "\n" for d in docs))
        atomic_write_text(out / f"mswelu_{kind}.yaml", _task_yaml(f"mswelu_{kind}", rows, kind))
    return out


def _tokenizer_for(model_dir: Path, model: Any) -> Any:
    """The run's tokenizer: the one saved in ``final/``, else built from the name its data records."""
    from transformers import AutoTokenizer

    from mswelu.runs.hub import hf_tokenizer

    if (model_dir / "tokenizer.json").is_file() or (model_dir / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
    return hf_tokenizer(run_model.tokenizer_name(model_dir))


def run_tasks(
    run: str | Path,
    tasks: Sequence[str],
    include: str | Path | None = None,
    limit: int | float | None = None,
    batch_size: int = 8,
    device: str = "auto",
    num_fewshot: int | None = None,
    log_samples: bool = False,
) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on a run's model and save the scores in ``<run>/tasks.json``."""
    tasks = [t.strip() for t in tasks if t.strip()]
    if not tasks:
        raise ValueError("no tasks given: e.g. --tasks lambada_openai,hellaswag or mswelu_lastword")
    misspelt = [t for t in tasks if t.startswith("mswelu_") and t not in LOCAL_TASKS]
    if misspelt:
        raise ValueError(f"unknown local task {with_nearest(misspelt, LOCAL_TASKS)}: expected {LOCAL_TASKS}")
    _need_lm_eval()
    import torch

    path = runs.resolve_run(run, require_model=True)
    local = [t for t in tasks if t in LOCAL_TASKS]
    if local and include is None:
        data = (runs.read_json(path / runs.CONFIG) or {}).get("data")
        if not data:
            raise ValueError(f"{path} records no dataset to build {local} from; pass --include DIR")
        include = build_local_tasks(data)
    if [t for t in tasks if t not in LOCAL_TASKS] and include is None:
        from mswelu.data.tokenizer import check_hub

        check_hub()  # the real tasks read their data from the Hub: fail now, not in lm-eval's retries
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(
        include_path=str(include) if include else None, include_defaults=not _only_local(tasks)
    )
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        known = list(manager.all_tasks)
        raise ValueError(f"unknown task {with_nearest(unknown, known)} (lm-eval knows {len(known)} tasks)")
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model, model_dir = run_model.load_model(path, device=dev)
    lm = HFLM(
        pretrained=model, tokenizer=_tokenizer_for(model_dir, model), backend="causal", batch_size=batch_size
    )
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        limit=limit,
        num_fewshot=num_fewshot,
        log_samples=log_samples,
        bootstrap_iters=0,
    )
    if results is None:  # not the main process under accelerate
        return {}
    save_scores(path, results, model_dir, limit)
    return results


def _only_local(tasks: Sequence[str]) -> bool:
    return all(t in LOCAL_TASKS for t in tasks)


def save_scores(path: Path, results: dict[str, Any], model_dir: Path, limit: int | float | None) -> Path:
    """Add each task's metrics (without lm-eval's ``,none`` suffix) to ``<run>/tasks.json``."""
    import lm_eval

    file = path / runs.TASK_SCORES
    old = runs.read_json(file) or {}
    scores = dict(old.get("tasks") or {})
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    for task, metrics in (results.get("results") or {}).items():
        entry = {
            k.split(",")[0]: v
            for k, v in metrics.items()
            if k not in ("alias", "sample_len") and isinstance(v, int | float) and v == v  # no NaN stderr
        }
        entry["n"] = (results.get("n-samples") or {}).get(task, {}).get("effective")
        entry.update(num_fewshot=(results.get("n-shot") or {}).get(task), limit=limit, evaluated_at=now)
        scores[task] = entry
    doc = {"tasks": scores, "model": str(model_dir), "lm_eval": lm_eval.__version__}
    return atomic_write_json(file, doc)


def read_task_scores(run: str | Path) -> dict[str, dict[str, Any]]:
    """``{task: {metric: value, "n": ..., ...}}`` from a run's ``tasks.json`` (empty when none)."""
    path = runs.resolve_run(run)
    return dict((runs.read_json(path / runs.TASK_SCORES) or {}).get("tasks") or {})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mswelu.evaluate", description="Downstream tasks (lm-eval).")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tasks", help="run lm-eval tasks on a run's model; scores to <run>/tasks.json")
    t.add_argument("--run", help="a run name under runs/ or a run folder (default: the newest with a model)")
    t.add_argument(
        "--tasks", required=True, help="comma-separated: lambada_openai,hellaswag or mswelu_lastword,..."
    )
    t.add_argument("--include", help="a folder of task YAMLs (lm-eval's include_path)")
    t.add_argument("--limit", type=float, help="documents per task (a fraction if < 1)")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--num-fewshot", type=int)
    b = sub.add_parser("build-tasks", help="write the local tasks from a dataset's validation split")
    b.add_argument("--data", required=True, help="a prepared dataset folder")
    b.add_argument("--out", help="where to write them (default: a cache folder)")
    b.add_argument("-n", type=int, default=200, help="documents per task")
    b.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        if args.command == "build-tasks":
            print(build_local_tasks(args.data, args.out, n=args.n, seed=args.seed))
            return 0
        limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
        results = run_tasks(
            args.run,
            args.tasks.split(","),
            args.include,
            limit,
            args.batch_size,
            args.device,
            args.num_fewshot,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for task, metrics in (results.get("results") or {}).items():
        shown = {k.split(",")[0]: round(v, 4) for k, v in metrics.items() if isinstance(v, float) and v == v}
        print(json.dumps({"task": task, **shown}))
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
