"""Training entry points: :class:`TrainConfig`, :func:`train` (notebooks) and ``python -m mswelu.train`` (CLI,
torchrun).

    python -m mswelu.train --preset small --data data/default --out runs/small-swelu --max-steps 2000
    torchrun --standalone --nproc_per_node 2 -m mswelu.train --config run.yaml
    python -m mswelu.train --config run.yaml --resume auto

Every value is validated before any work starts; see :class:`TrainConfig` for the fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mswelu.optim import OPTIMIZERS
from mswelu.schedule import SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bf16", "fp32")
STRATEGIES = ("ddp",)
ACTIVATIONS = ("swelu", "swelu-fixed", "silu")

# Fields whose change on resume alters the numbers from here on (allowed, reported as a warning).
_NUMERIC_CHANGES = (
    "lr",
    "min_lr_ratio",
    "weight_decay",
    "betas",
    "eps",
    "grad_clip",
    "schedule",
    "warmup",
    "decay_fraction",
    "k_lr_scale",
    "muon_momentum",
    "dtype",
    "max_steps",
    "max_tokens",
)
# Fields that may change between a run and its resumption (they do not change what was computed so far,
# nor what the checkpoint holds). Every other field must match the checkpoint's config.
RESUMABLE_CHANGES = frozenset(_NUMERIC_CHANGES) | {
    "eval_every",
    "eval_batches",
    "eval_fractions",
    "log_every",
    "ckpt_every",
    "keep_checkpoints",
    "resume",
    "overwrite",
    "progress",
    "tensorboard",
    "max_consecutive_nonfinite",
    "device",
    "compile",
    "run_name",
    "out",
    "data",
}


@dataclass
class TrainConfig:
    """Everything a run needs. ``batch_size`` is the GLOBAL batch in sequences per optimizer step:
    ``batch_size = micro_batch_size x grad_accum x world_size``; tokens per step = batch_size x seq_len."""

    preset: str = "small"  # one of our presets, or "gpt2[:preset]" / "pythia[:preset]"
    data: str | None = None  # prepared dataset folder (meta.json); None -> mswelu.data.default_dataset()
    out: str | None = None  # run folder; None -> runs_dir() / run_name
    run_name: str | None = None  # None -> "<preset>-<activation>-<optimizer>-s<seed>"
    max_steps: int | None = 1000  # optimizer steps
    max_tokens: int | None = None  # token budget; with max_steps, whichever comes first
    batch_size: int = 16
    micro_batch_size: int | None = None  # per process; None -> batch_size / world_size (no accumulation)
    seq_len: int = 256
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 = no clipping (the norm is still measured)
    optimizer: str = "adamw"  # adamw | muon (Muon on hidden matrices + AdamW on the rest)
    schedule: str = "cosine"  # cosine | wsd | constant
    warmup: int = 100  # steps
    decay_fraction: float = 0.2  # wsd: fraction of steps in the final decay
    k_lr_scale: float = 1.0  # lr multiplier of the SWELU k / lambda group
    muon_momentum: float = 0.95
    seed: int = 0
    eval_every: int = 200  # steps; 0 = only at the end
    eval_batches: int = 20  # global batches per evaluation, spread over the split; 0 = the whole split
    eval_fractions: tuple[float, ...] = (0.2,)  # also evaluate at these fractions of training (0.2: the
    #                                             seeds' "loss at 20%"); the final evaluation is always
    #                                             over the whole validation split
    log_every: int = 10
    ckpt_every: int = 500  # steps; 0 = only at the end (and on interrupt)
    keep_checkpoints: int = 3
    resume: str | None = None  # None | "auto" | path to a checkpoint or run folder
    overwrite: bool = False  # allow starting fresh in a non-empty run folder (its old contents are removed)
    activation: str | None = None  # overrides the preset's (swelu | swelu-fixed | silu)
    device: str = "auto"  # auto | cpu | cuda
    compile: bool = False
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | bf16 | fp32
    strategy: str = "ddp"  # data parallel strategy under torchrun
    model: dict[str, Any] = field(default_factory=dict)  # MambaSWELUConfig (or baseline config) overrides
    max_consecutive_nonfinite: int = 10
    progress: bool = True
    tensorboard: bool = True

    # ---------------------------------------------------------------------------------- conversion
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a YAML/JSON file, notebook parameters); unknown keys -> ValueError."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {cls.field_names()}")
        d = dict(d)
        if "betas" in d and d["betas"] is not None:
            d["betas"] = tuple(float(b) for b in d["betas"])
        if isinstance(d.get("eval_fractions"), list):
            d["eval_fractions"] = tuple(d["eval_fractions"])
        if d.get("model") is None:
            d["model"] = {}
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """YAML (``.yaml``/``.yml``) or JSON file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return cls.from_dict(data or {})

    @classmethod
    def coerce(cls, cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
        return cfg if isinstance(cfg, TrainConfig) else cls.from_dict(cfg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["eval_fractions"] = list(self.eval_fractions)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------------------------- validation
    def default_run_name(self) -> str:
        act = self.activation or ("" if ":" in self.preset or self.preset in ("gpt2", "pythia") else "preset")
        parts = [self.preset.replace(":", "-"), act, self.optimizer, f"s{self.seed}"]
        return "-".join(p for p in parts if p)

    def validate(self, world_size: int = 1) -> None:
        """Checks that need no files: choices, ranges, batch arithmetic. ValueError says what is wrong."""
        from mswelu.baselines import parse_model_name

        def choice(name: str, allowed: Sequence[str]) -> None:
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}: expected one of {tuple(allowed)}")

        parse_model_name(self.preset)
        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("dtype", DTYPES)
        choice("strategy", STRATEGIES)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(f"unknown device {self.device!r}: expected one of {DEVICES} or cuda:N")
        if self.activation is not None:
            choice("activation", ACTIVATIONS)
        if not isinstance(self.model, dict):
            raise ValueError(f"model overrides must be a mapping, got {type(self.model).__name__}")
        for name in ("lr", "eps"):
            if not self._num(name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip"):
            if not self._num(name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self._num("min_lr_ratio") <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not 0 <= self._num("decay_fraction") <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if not self._num("k_lr_scale") > 0:
            raise ValueError(f"k_lr_scale must be > 0, got {self.k_lr_scale}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("batch_size", "seq_len", "log_every", "max_consecutive_nonfinite"):
            self._int(name, minimum=1)
        for name in ("warmup", "eval_every", "eval_batches", "ckpt_every", "keep_checkpoints", "seed"):
            self._int(name, minimum=0)
        fractions = self.eval_fractions
        if not isinstance(fractions, tuple | list) or not all(
                isinstance(f, int | float) and not isinstance(f, bool) and 0 < f < 1 for f in fractions):
            raise ValueError(f"eval_fractions must be numbers in (0, 1), got {fractions!r}")
        if self.max_steps is None and self.max_tokens is None:
            raise ValueError("set max_steps or max_tokens (the training budget)")
        if self.max_steps is not None:
            self._int("max_steps", minimum=1)
        if self.max_tokens is not None:
            self._int("max_tokens", minimum=1)
        if self.micro_batch_size is not None:
            self._int("micro_batch_size", minimum=1)
        self.grad_accum(world_size)
        if self.resume is not None and not isinstance(self.resume, str | Path):
            raise ValueError(f"resume must be None, 'auto' or a path, got {self.resume!r}")

    def _num(self, name: str) -> float:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)

    def _int(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")

    def grad_accum(self, world_size: int = 1) -> int:
        """Micro-steps per optimizer step; ValueError when the global batch does not divide."""
        micro = self.micro_batch_size or self.batch_size // max(1, world_size)
        if micro < 1 or self.batch_size % (micro * world_size):
            raise ValueError(
                f"batch_size={self.batch_size} (global, sequences) must be a multiple of "
                f"micro_batch_size={self.micro_batch_size or micro} x world_size={world_size}"
            )
        return self.batch_size // (micro * world_size)

    def micro(self, world_size: int = 1) -> int:
        return self.micro_batch_size or self.batch_size // max(1, world_size)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def total_steps(self) -> int:
        """Optimizer steps of the whole run: max_steps, or the token budget, whichever is smaller."""
        steps = []
        if self.max_steps is not None:
            steps.append(self.max_steps)
        if self.max_tokens is not None:
            steps.append(max(1, -(-self.max_tokens // self.tokens_per_step())))
        return min(steps)


def train(cfg: TrainConfig | dict[str, Any], callbacks: Sequence[Callable[..., Any]] = ()) -> dict[str, Any]:
    """Run one training job (a single process, or one rank under torchrun) and return its summary:
    run_dir, steps, tokens, final train/val loss, val ppl and bpb, tokens/s, k values, wall time.

    ``callbacks`` are called as ``cb(event, trainer, info)`` with events ``"model"`` (after the model is
    built), ``"step"`` (after each optimizer step or skipped step), ``"eval"`` and ``"log"`` (each record
    written to ``metrics.jsonl``, rank 0 only).
    """
    from mswelu.trainer import Trainer

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
        "activation": ACTIVATIONS,
        "strategy": STRATEGIES,
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
                help="model config override, e.g. --set d_model=512 --set layer_pattern=MAMA",
            )
        elif f.name == "betas":
            p.add_argument(flag, nargs=2, type=float, metavar=("BETA1", "BETA2"), help="default 0.9 0.95")
        elif isinstance(default, bool):
            p.add_argument(flag, type=_parse_bool, nargs="?", const=True, metavar="BOOL", **helps)
        elif f.name in ints:
            p.add_argument(flag, type=_optional(int), **helps)
        elif isinstance(default, int):
            p.add_argument(flag, type=int, **helps)
        elif isinstance(default, float):
            p.add_argument(flag, type=float, **helps)
        else:
            p.add_argument(flag, type=_optional(str), **helps)
    return p


def config_from_args(argv: Sequence[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    base = TrainConfig.from_file(args.pop("config")).to_dict() if "config" in args else {}
    model = dict(base.get("model") or {})
    for item in args.pop("model_set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        model[key.strip()] = yaml.safe_load(value)
    base.update(args)
    base["model"] = model
    return TrainConfig.from_dict(base)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0 on success, 130 when stopped by SIGINT/SIGTERM (checkpoint written),
    2 on a configuration error."""
    try:
        cfg = config_from_args(argv)
        summary = train(cfg)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    sys.exit(main())
