"""TrainConfig: every setting of a training run, its validation, and which settings a resume may change.

One dataclass serves every entry point (``python -m mswelu.train`` flags, YAML/JSON config files, notebook
parameters, :func:`mswelu.train.train`); every value is checked (type, choice, range, batch arithmetic)
before any work starts, and a bad one raises ``ValueError`` naming the field, the value and what it takes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mswelu.base.config_files import check_field_types, read_config_file
from mswelu.base.errors import check_choice, unknown_choice, with_nearest
from mswelu.base.paths import runs_dir
from mswelu.base.run_names import check_run_name, run_name
from mswelu.models.baselines import BASELINES
from mswelu.modules.activations import ACTIVATIONS, resolve_shape
from mswelu.training.optim import OPTIMIZERS
from mswelu.training.schedule import SCHEDULES
from mswelu.training.settings_policy import (
    NUMERIC_CHANGES,
    RESUMABLE_CHANGES,
    RUNTIME_SETTINGS,
    changed_settings,
    merge_overrides,
    migrate_train_settings,
    run_activation,
)
from mswelu.training.trackers import check_trackers, parse_trackers

__all__ = [
    "DEVICES",
    "DTYPES",
    "NUMERIC_CHANGES",
    "PARALLEL",
    "RESUMABLE_CHANGES",
    "RUNTIME_SETTINGS",
    "TrainConfig",
    "changed_settings",
    "merge_overrides",
    "migrate_train_settings",
]

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bf16", "fp32")
PARALLEL = ("ddp", "fsdp")  # mswelu.training.parallel: a full replica per rank, or FSDP2 shards
FSDP_PARAM_DTYPES = ("fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (x86 AVX512-BF16 or AMX, Arm's BF16 extension), read from
    the kernel's CPU flags (Linux) or ``sysctl`` (macOS). Elsewhere bf16 is emulated and slower than fp32,
    so ``dtype="auto"`` stays fp32; ``MSWELU_CPU_BF16=0`` / ``1`` overrides the detection."""
    forced = os.environ.get("MSWELU_CPU_BF16")
    return forced == "1" if forced in ("0", "1") else _detected_native_bf16()


@functools.cache
def _detected_native_bf16() -> bool:
    import subprocess

    try:
        if Path("/proc/cpuinfo").is_file():
            return bool(set(Path("/proc/cpuinfo").read_text(errors="replace").split()) & _BF16_FLAGS)
        if sys.platform == "darwin":
            cmd = ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"]
            return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        pass
    return False


_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@dataclass
class TrainConfig:
    """Everything a run needs (each field: its type, its default, and here what it means).

    Args:
        preset: one of ``mswelu.PRESETS``, or ``"gpt2[:preset]"`` / ``"pythia[:preset]"`` (a Transformer
            sized to that preset). data: a prepared dataset folder; None = the embedded corpus.
        out: the run folder (None = ``runs/<run_name>``); run_name (None: :meth:`default_run_name`).
        max_steps, max_tokens: the budget in optimizer steps or tokens (steps x batch_size x seq_len),
            whichever ends first.
        batch_size: GLOBAL sequences per optimizer step (= micro_batch_size x grad_accum x world_size);
            micro_batch_size: per process and forward (None = batch_size / world_size). seq_len: tokens each.
        lr, min_lr_ratio (cosine, wsd: the final lr / lr), weight_decay (of the matrices:
            :mod:`mswelu.training.optim`), betas, eps; grad_clip: the global norm clip, 0 = none.
        optimizer: ``adamw``, or ``muon`` (on hidden matrices, AdamW on the rest; ``muon_momentum``).
        schedule: ``cosine`` | ``wsd`` (``decay_fraction``: the final decay's share) | ``constant``;
            ``warmup``: linear steps. seed: model init and data order.
        eval_every: steps between evaluations on a spread sample of ``eval_batches`` global batches of the
            validation split (0 = at the end only; eval_batches 0 = the whole split); eval_fractions: also at
            these fractions of training (0.2: the seeds' "loss at 20%"). The final one scores the whole split.
        log_every, ckpt_every (0 = only at the end and on interrupt), keep_checkpoints (0 = all).
        resume: None, ``"auto"`` (the run folder's newest intact checkpoint), or a checkpoint / run folder;
            overwrite: start fresh in a non-empty run folder (its old contents are removed).
        activation: the activation of every slot, overriding the preset's (``mswelu.ACTIVATIONS``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; compile: ``torch.compile`` the model; dtype:
            ``auto`` (bf16 autocast on CUDA and on CPUs with native bf16, else fp32) | ``bf16`` | ``fp32``.
        parallel: over the processes of ``torchrun``, ``ddp`` (a replica per rank) or ``fsdp`` (FSDP2 shards:
            :mod:`mswelu.training.parallel`), with ``fsdp_param_dtype`` (the compute gather's dtype) and
            ``cpu_offload``. activation_checkpointing: recompute each block in the backward.
        model: overrides of the model config (``MsweluConfig`` fields, or the baseline's), the activation's
            shape parameters per parameter (``shape: {k: {init: 0.8, learnable: true, lr_scale: 2.0}}``).
        max_consecutive_nonfinite: skipped non-finite steps in a row before the run stops.
        progress: progress bar and lines. trackers: any of ``tensorboard``, ``wandb``, ``trackio`` (a list or
            ``"tensorboard,wandb"``; keys from the environment: :mod:`mswelu.training.trackers`); None =
            TensorBoard unless the older switch ``tensorboard`` is false.
        monitor_every: seconds between device samples (:mod:`mswelu.base.devices`); None = 10, 0 = none.
    """

    preset: str = "small"
    data: str | None = None
    out: str | None = None
    run_name: str | None = None
    max_steps: int | None = 1000
    max_tokens: int | None = None
    batch_size: int = 16
    micro_batch_size: int | None = None
    seq_len: int = 256
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    optimizer: str = "adamw"
    schedule: str = "cosine"
    warmup: int = 100
    decay_fraction: float = 0.2
    muon_momentum: float = 0.95
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 20
    eval_fractions: tuple[float, ...] = (0.2,)
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 3
    resume: str | None = None
    overwrite: bool = False
    activation: str | None = None
    device: str = "auto"
    compile: bool = False
    dtype: str = "auto"
    parallel: str = "ddp"
    fsdp_param_dtype: str = "fp32"
    cpu_offload: bool = False
    activation_checkpointing: bool = False
    model: dict[str, Any] = field(default_factory=dict)
    max_consecutive_nonfinite: int = 10
    progress: bool = True
    tensorboard: bool = True
    trackers: tuple[str, ...] | None = None
    monitor_every: float | None = None

    # ---------------------------------------------------------------------------------- conversion
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a YAML/JSON file, notebook parameters); unknown keys -> ValueError
        with the nearest known names."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        d = migrate_train_settings(d)
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown training config keys {with_nearest(unknown, known)}; known: {known}")
        d = dict(d)
        if isinstance(d.get("trackers"), str):  # "tensorboard,wandb": a CLI flag or a notebook parameter
            d["trackers"] = [t.strip() for t in d["trackers"].split(",") if t.strip()]
        for name in _SEQUENCES:
            if isinstance(d.get(name), list):
                d[name] = tuple(d[name])
        if d.get("model") is None:
            d["model"] = {}
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """YAML (``.yaml``/``.yml``) or JSON file."""
        return cls.from_dict(read_config_file(path) or {})

    @classmethod
    def coerce(cls, cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
        return cfg if isinstance(cfg, TrainConfig) else cls.from_dict(cfg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {**d, **{name: list(d[name]) for name in _SEQUENCES if d[name] is not None}}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------------------------- derived
    def default_run_name(self) -> str:
        """``<preset>-<activation>-<optimizer>-s<seed>`` (a Transformer baseline names no activation)."""
        baseline = ":" in self.preset or self.preset in BASELINES
        act = self.activation or ("" if baseline else "preset")
        return run_name(self.preset.replace(":", "-"), act, self.optimizer, seed=self.seed)

    def resolved_run_name(self) -> str:
        return self.run_name or (Path(self.out).name if self.out else self.default_run_name())

    def out_dir(self) -> Path:
        """The run folder: ``out``, else ``runs/<run_name>``."""
        return Path(self.out).expanduser() if self.out else runs_dir() / self.resolved_run_name()

    def record(
        self, world_size: int, data: Path, out: Path, meta: dict[str, Any], model: Any, device: Any
    ) -> dict[str, Any]:
        """The config as run, for ``config.json`` and checkpoints: every field, the derived values
        (``_``-prefixed: batch arithmetic, parameters, device, data fingerprint, code version) and the
        model's own config (what rebuilds it from a checkpoint)."""
        from mswelu.base.provenance import code_version
        from mswelu.models.build import config_of, count_parameters, shape_slots
        from mswelu.training.code_digest import training_code

        d = self.to_dict()
        d.update(data=str(data), out=str(out), run_name=Path(out).name)
        derived = {
            "world_size": world_size,
            "grad_accum": self.grad_accum(world_size),
            "micro_batch_size": self.micro(world_size),
            "tokens_per_step": self.tokens_per_step(),
            "total_steps": self.total_steps(),
            "parameters": count_parameters(model),
            "device": str(device),
            "data_fingerprint": meta.get("fingerprint"),
            "code_version": code_version(),
            "model_config": config_of(model),
            "baseline": getattr(model, "baseline_info", None),
            "shape_slots": shape_slots(model) or None,  # where each logged shape value sits
            "training_code": training_code(self.to_dict()),  # the files its numbers depend on (reuse)
        }
        d.update({f"_{k}": v for k, v in derived.items() if v is not None})
        return d

    def resolved_trackers(self) -> tuple[str, ...]:
        """The trackers this run logs to: ``trackers``, or TensorBoard unless ``tensorboard`` is false."""
        if self.trackers is None:
            return ("tensorboard",) if self.tensorboard else ()
        return parse_trackers(self.trackers)

    def monitor_interval(self) -> float:
        """Seconds between device samples; 0 = none."""
        return 10.0 if self.monitor_every is None else float(self.monitor_every)

    def optimizer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`mswelu.training.optim.build_optimizer` besides model and name."""
        return {
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "betas": tuple(self.betas),
            "eps": self.eps,
            "muon_momentum": self.muon_momentum,
        }

    def uses_bf16(self, device_type: str) -> bool:
        """bf16 autocast: ``dtype="bf16"``, or ``auto`` on CUDA and on a CPU with native bf16 arithmetic
        (:func:`cpu_has_native_bf16`; measured equal to fp32 within seed noise by ``python -m mswelu.bench
        dtype``)."""
        if self.dtype != "auto":
            return self.dtype == "bf16"
        return device_type == "cuda" or (device_type == "cpu" and cpu_has_native_bf16())

    def grad_accum(self, world_size: int = 1) -> int:
        """Micro-steps per optimizer step; ValueError when the global batch does not divide."""
        micro = self.micro(world_size)
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
        by_tokens = None if self.max_tokens is None else max(1, -(-self.max_tokens // self.tokens_per_step()))
        return min(s for s in (self.max_steps, by_tokens) if s is not None)

    # ---------------------------------------------------------------------------------- validation
    def validate(self, world_size: int = 1) -> None:
        """Checks that need no files: types, choices, ranges, batch arithmetic (a ValueError saying what)."""
        from mswelu.models.build import parse_model_name

        check_field_types(self)
        for f in dataclasses.fields(self):  # inf or nan passes every range check below
            values = getattr(self, f.name)
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a finite number, got {getattr(self, f.name)}")

        parse_model_name(self.preset)
        if self.run_name is not None:
            check_run_name(self.run_name)
        choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "dtype": DTYPES, "parallel": PARALLEL}
        choices.update(fsdp_param_dtype=FSDP_PARAM_DTYPES, activation=tuple(ACTIVATIONS))
        for name, allowed in choices.items():
            if getattr(self, name) is not None:
                check_choice(name, getattr(self, name), allowed)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(unknown_choice("device", self.device, [*DEVICES, "cuda:N"]))
        if self.model.get("shape") is not None and run_activation(self.to_dict()) is not None:
            resolve_shape(run_activation(self.to_dict()), self.model["shape"])  # before any work starts
        for name in ("lr", "eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_lr_ratio", "decay_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        for name in ("batch_size", "seq_len", "log_every", "max_consecutive_nonfinite"):
            self._at_least(name, 1)
        for name in ("warmup", "eval_every", "eval_batches", "ckpt_every", "keep_checkpoints", "seed"):
            self._at_least(name, 0)
        if not all(0 < f < 1 for f in self.eval_fractions):
            raise ValueError(f"eval_fractions must be numbers in (0, 1), got {self.eval_fractions!r}")
        if self.monitor_every is not None and not self.monitor_every >= 0:
            raise ValueError(
                f"monitor_every must be >= 0 seconds (0: no device samples), got {self.monitor_every}"
            )
        check_trackers(self.resolved_trackers())  # installed, and wandb has a key (or is offline)
        if self.max_steps is None and self.max_tokens is None:
            raise ValueError("set max_steps or max_tokens (the training budget)")
        for name in ("max_steps", "max_tokens", "micro_batch_size"):
            if getattr(self, name) is not None:
                self._at_least(name, 1)
        self.grad_accum(world_size)
        self._check_parallel(world_size)

    def _check_parallel(self, world_size: int) -> None:
        """Combinations the parallel modes do not support, refused before anything is written."""
        if self.parallel == "fsdp":
            if world_size < 2:
                raise ValueError(
                    "parallel='fsdp' shards the model over the processes of torchrun, but this run has "
                    "one process: start it with `torchrun --nproc_per_node N -m mswelu.train ...` (N >= 2), "
                    "or use parallel='ddp' (a single process needs no sharding)"
                )
            if self.compile:
                raise ValueError(
                    "compile=True is not supported with parallel='fsdp' yet: leave one of them out"
                )
        else:
            for name, off in (("cpu_offload", False), ("fsdp_param_dtype", "fp32")):
                if getattr(self, name) != off:
                    raise ValueError(
                        f"{name}={getattr(self, name)!r} needs parallel='fsdp' (got {self.parallel!r})"
                    )

    def _at_least(self, name: str, minimum: int) -> None:
        if getattr(self, name) < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {getattr(self, name)!r}")


#: the fields a YAML or JSON file holds as lists
_SEQUENCES = ("betas", "eval_fractions", "trackers")
