"""Training entry points: :func:`train` (notebooks, scripts) and ``python -m mswelu.train`` (CLI, torchrun).

    python -m mswelu.train --preset small --data data/default --out runs/small-swelu --max-steps 2000
    torchrun --standalone --nproc_per_node 2 -m mswelu.train --config run.yaml
    python -m mswelu.train --config run.yaml --resume auto

Every value is validated before any work starts; :class:`mswelu.training.config.TrainConfig` documents the
fields (each is a flag: ``--max-steps`` for ``max_steps``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from mswelu.base.fs import DiskFullError, explain_os_error
from mswelu.modules.activations import ACTIVATIONS
from mswelu.trainer import Trainer
from mswelu.training.config import DEVICES, DTYPES, FSDP_PARAM_DTYPES, PARALLEL, TrainConfig
from mswelu.training.optim import OPTIMIZERS
from mswelu.training.schedule import SCHEDULES

__all__ = ["TrainConfig", "build_parser", "config_from_args", "main", "train"]


def train(cfg: TrainConfig | dict[str, Any], callbacks: Sequence[Callable[..., Any]] = ()) -> dict[str, Any]:
    """Run one training job (a single process, or one rank under torchrun) and return its summary:
    run_dir, steps, tokens, final train/val loss, val ppl and bpb, tokens/s, k values, wall time.

    ``callbacks`` are called as ``cb(event, trainer, info)`` with events ``"model"`` (after the model is
    built), ``"step"`` (after each optimizer step or skipped step), ``"eval"`` and ``"log"`` (each record
    written to ``metrics.jsonl``, rank 0 only).
    """
    return Trainer(TrainConfig.coerce(cfg), callbacks=callbacks).run()


# ------------------------------------------------------------------------------------------------ CLI
def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {text!r}")


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else kind(text)

    return parse


def _numbers(text: str) -> tuple[float, ...]:
    """``0.2``, ``0.2,0.5``, ``[0.2, 0.5]`` or ``none`` (no extra evaluations) as a tuple of numbers."""
    body = text.strip().strip("[]()").strip()
    if body.lower() in ("", "none", "null"):
        return ()
    try:
        return tuple(float(part) for part in re.split(r"[,\s]+", body) if part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers such as 0.2 or 0.2,0.5, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """Flags mirror :class:`TrainConfig` fields (``--max-steps`` for ``max_steps``); given flags win over
    ``--config``; ``--set KEY=VALUE`` (YAML value) overrides the model config."""
    p = argparse.ArgumentParser(
        prog="python -m mswelu.train",
        description="Train a mswelu model (or a gpt2 / pythia baseline); flags mirror TrainConfig fields.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--config", help="YAML or JSON file with TrainConfig fields")
    ints = {"max_steps", "max_tokens", "micro_batch_size"}
    choices = {
        "optimizer": OPTIMIZERS,
        "schedule": SCHEDULES,
        "device": DEVICES,
        "dtype": DTYPES,
        "activation": tuple(ACTIVATIONS),
        "parallel": PARALLEL,
        "fsdp_param_dtype": FSDP_PARAM_DTYPES,
    }
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        hint = f"one of {', '.join(choices[f.name])}; " if f.name in choices else ""
        helps = {"help": f"{hint}default {default!r}" if f.name != "model" else None}
        if f.name == "model":
            p.add_argument(
                "--set",
                dest="model_set",
                action="append",
                metavar="KEY=VALUE",
                help="model config override, e.g. --set d_model=512 --set layer_pattern=MAMA; a dotted key "
                "sets one entry of a mapping: --set shape.k.init=0.8",
            )
        elif f.name == "betas":
            p.add_argument(flag, nargs=2, type=float, metavar=("BETA1", "BETA2"), help="default 0.9 0.95")
        elif isinstance(default, bool):
            p.add_argument(flag, type=_parse_bool, nargs="?", const=True, metavar="BOOL", **helps)
        elif f.name in ints:
            p.add_argument(flag, type=_optional(int), **helps)
        elif f.name == "eval_fractions":
            p.add_argument(flag, type=_numbers, metavar="F[,F...]", help="fractions of the run, default 0.2")
        elif f.name == "monitor_every":  # seconds, None by default
            p.add_argument(flag, type=_optional(float), **helps)
        elif isinstance(default, int):
            p.add_argument(flag, type=int, **helps)
        elif isinstance(default, float):
            p.add_argument(flag, type=float, **helps)
        else:
            p.add_argument(flag, type=_optional(str), **helps)
    return p


def parse_model_set(items: Sequence[str], model: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--set KEY=VALUE`` items (values read as YAML) over ``model`` (a config file's model settings), as a
    dict of model config overrides; a dotted key sets one entry of a mapping (``--set shape.k.init=0.8``)."""
    model = json.loads(json.dumps(model or {}))  # a deep copy: the file's mappings are not changed
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        *path, leaf = key.strip().split(".")
        target = model
        for part in path:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[leaf] = yaml.safe_load(value)
    return model


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    base = TrainConfig.from_file(args.pop("config")).to_dict() if "config" in args else {}
    model = parse_model_set(args.pop("model_set", None) or [], base.get("model"))
    base.update(args)
    base["model"] = model
    return TrainConfig.from_dict(base)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 130 when stopped by SIGINT/SIGTERM (checkpoint written),
    2 on a configuration error, 1 when the run had to stop (disk full, non-finite losses)."""
    try:
        cfg = config_from_args(argv)
        summary = train(cfg)
    except ValueError as exc:  # a configuration error: the same on every rank, so said once (torchrun)
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except (DiskFullError, FloatingPointError) as exc:  # the run stopped; its message says what is kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. a read-only run folder
        print(f"error: {explain_os_error(exc)}", file=sys.stderr)
        return 1
    if summary.get("is_main", True):
        keys = (
            "run_dir",
            "steps",
            "tokens",
            "train_loss",
            "val_loss",
            "val_bpb",
            "tokens_per_s",
            "interrupted",
        )
        print(json.dumps({k: summary.get(k) for k in keys}))
    return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
