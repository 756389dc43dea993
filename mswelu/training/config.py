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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mswelu.base.config_files import read_config_file, yaml_number_hint
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
    if forced in ("0", "1"):
        return forced == "1"
    return _detected_native_bf16()


@functools.lru_cache(maxsize=1)
def _detected_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        flags = ""
    if flags:
        words = set(flags.split())
        return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})
    if sys.platform == "darwin":
        import subprocess

        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return False
        return out.strip() == "1"
    return False


@dataclass
class TrainConfig:
    """Everything a run needs.

    Args:
        preset: one of our presets (``mswelu.PRESETS``), or ``"gpt2[:preset]"`` / ``"pythia[:preset]"``
            for a Transformer sized to that preset.
        data: prepared dataset folder (holds ``meta.json``); None = the embedded corpus.
        out: run folder; None = ``runs/<run_name>``.
        run_name: None = ``"<preset>-<activation>-<optimizer>-s<seed>"``.
        max_steps: optimizer steps; with ``max_tokens``, whichever budget ends first.
        max_tokens: token budget (tokens = steps x ``batch_size`` x ``seq_len``).
        batch_size: GLOBAL batch in sequences per optimizer step
            (= micro_batch_size x grad_accum x world_size).
        micro_batch_size: sequences per process per forward; None = ``batch_size / world_size``.
        seq_len: tokens per training sequence.
        lr: peak learning rate.
        min_lr_ratio: final lr as a fraction of ``lr`` (cosine, wsd).
        weight_decay: decoupled weight decay of the matrices (see :mod:`mswelu.training.optim` for the
        routing). betas: AdamW betas. eps: AdamW epsilon.
        grad_clip: global gradient-norm clip; 0 = none (the norm is still measured).
        optimizer: ``adamw``, or ``muon`` (Muon on hidden matrices + AdamW on the rest).
        schedule: ``cosine`` | ``wsd`` | ``constant``.
        warmup: linear warm-up steps.
        decay_fraction: wsd only: fraction of the steps in the final decay.
        muon_momentum: Muon's momentum.
        seed: model init and data order.
        eval_every: steps between evaluations on a spread sample of the validation split; 0 = at the end only.
        eval_batches: global batches per intermediate evaluation; 0 = the whole split every time.
        eval_fractions: also evaluate at these fractions of training (0.2: the seeds' "loss at 20%").
            The final evaluation always scores the whole validation split.
        log_every: steps between metrics records.
        ckpt_every: steps between checkpoints; 0 = only at the end (and on interrupt).
        keep_checkpoints: newest checkpoints kept; 0 = all.
        resume: None, ``"auto"`` (the run folder's newest intact checkpoint), or a checkpoint / run folder.
        overwrite: allow starting fresh in a non-empty run folder (its old contents are removed).
        activation: the activation of every slot, overriding the preset's (``mswelu.ACTIVATIONS``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        compile: ``torch.compile`` the model.
        dtype: ``auto`` (bf16 autocast on CUDA and on CPUs with native bf16, else fp32) | ``bf16`` |
        ``fp32``. parallel: how the model is spread over the processes of ``torchrun``: ``ddp`` (a full
            replica per rank) or ``fsdp`` (FSDP2: weights, gradients and optimizer state sharded;
            :mod:`mswelu.training.parallel`).
        fsdp_param_dtype: ``fsdp``: the dtype blocks are gathered in for compute (``fp32``, with bf16
            autocast as the run's dtype says; or ``bf16``: half the traffic, A_log and dt rounded).
        cpu_offload: ``fsdp``: keep the sharded parameters, gradients and optimizer state in host memory.
        activation_checkpointing: recompute each block's activations in the backward instead of keeping
            them (less memory, about a third more compute).
        model: overrides of the model config (``MsweluConfig`` fields, or the baseline's); the
            activation's shape parameters are set there, per parameter (``shape: {k: {init: 0.8,
            learnable: true, lr_scale: 2.0, sharing: separate}}``).
        max_consecutive_nonfinite: non-finite steps in a row (each skipped) before the run stops.
        progress: progress bar and lines.
        tensorboard: also log to ``<run>/tb`` (the older switch, read only while ``trackers`` is None:
            ``[tensorboard]``, or none with ``tensorboard: false``).
        trackers: where the scalars go besides ``metrics.jsonl``: any of ``tensorboard``, ``wandb``,
            ``trackio`` (a list, or ``"tensorboard,wandb"``); None = TensorBoard (see ``tensorboard``);
            when set, it alone decides. Keys come from the environment only (:mod:`mswelu.training.trackers`).
        monitor_every: seconds between device samples (process CPU and memory, GPU utilisation, memory,
            temperature, power: :mod:`mswelu.base.devices`) in ``metrics.jsonl`` and the trackers; None = 10,
            0 = none. A run also records one sample when its loop ends.
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
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a YAML/JSON file, notebook parameters); unknown keys -> ValueError
        with the nearest known names."""
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a mapping, got {type(d).__name__}")
        known = cls.field_names()
        d = migrate_train_settings(d)
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ValueError(f"unknown training config keys {with_nearest(unknown, known)}; known: {known}")
        d = dict(d)
        if isinstance(d.get("betas"), list):
            d["betas"] = tuple(d["betas"])
        if isinstance(d.get("eval_fractions"), list):
            d["eval_fractions"] = tuple(d["eval_fractions"])
        if isinstance(d.get("trackers"), str):  # "tensorboard,wandb": a CLI flag or a notebook parameter
            d["trackers"] = tuple(t.strip() for t in d["trackers"].split(",") if t.strip())
        elif isinstance(d.get("trackers"), list):
            d["trackers"] = tuple(d["trackers"])
        if d.get("model") is None:
            d["model"] = {}
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """YAML (``.yaml``/``.yml``) or JSON file."""
        data = read_config_file(path)
        return cls.from_dict(data or {})

    @classmethod
    def coerce(cls, cfg: TrainConfig | dict[str, Any]) -> TrainConfig:
        return cfg if isinstance(cfg, TrainConfig) else cls.from_dict(cfg)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["eval_fractions"] = list(self.eval_fractions)
        if self.trackers is not None:
            d["trackers"] = list(self.trackers)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

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
        steps = []
        if self.max_steps is not None:
            steps.append(self.max_steps)
        if self.max_tokens is not None:
            steps.append(max(1, -(-self.max_tokens // self.tokens_per_step())))
        return min(steps)

    # ---------------------------------------------------------------------------------- validation
    def validate(self, world_size: int = 1) -> None:
        """Checks that need no files: types, choices, ranges, batch arithmetic. ValueError says what is
        wrong."""
        from mswelu.models.build import parse_model_name

        self._check_types()
        for f in dataclasses.fields(self):  # inf or nan passes every range check below
            values = getattr(self, f.name)
            for value in values if isinstance(values, (list, tuple)) else [values]:
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a finite number, got {getattr(self, f.name)}")

        def choice(name: str, allowed: Sequence[str]) -> None:
            check_choice(name, getattr(self, name), allowed)

        parse_model_name(self.preset)
        if self.run_name is not None:
            check_run_name(self.run_name)
        choice("optimizer", OPTIMIZERS)
        choice("schedule", SCHEDULES)
        choice("dtype", DTYPES)
        choice("parallel", PARALLEL)
        choice("fsdp_param_dtype", FSDP_PARAM_DTYPES)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ValueError(unknown_choice("device", self.device, [*DEVICES, "cuda:N"]))
        if self.activation is not None:
            choice("activation", tuple(ACTIVATIONS))
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

    def _check_types(self) -> None:
        """Every field against its annotation: a string where a boolean belongs (``overwrite: "false"``)
        must not count as true, nor ``"1e-3"`` as a learning rate."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kinds = [k.strip() for k in str(f.type).split("|")]
            if value is None and "None" in kinds:
                continue
            if not any(_is_kind(value, k) for k in kinds):
                want = " or ".join(_KIND_WORDS.get(k, k) for k in kinds)
                got = f"{value!r} ({type(value).__name__}){yaml_number_hint(value)}"
                raise ValueError(f"{f.name} must be {want}, got {got}")


_KIND_WORDS = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "None": "null",
    "tuple[float, float]": "a list of two numbers",
    "tuple[float, ...]": "a list of numbers",
    "tuple[str, ...]": "a list of names",
    "dict[str, Any]": "a mapping",
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return _is_number(value)
    if kind == "str":
        return isinstance(value, str | Path)
    if kind == "tuple[str, ...]":
        return isinstance(value, tuple | list) and all(isinstance(v, str) for v in value)
    if kind.startswith("tuple["):
        return isinstance(value, tuple | list) and all(_is_number(v) for v in value)
    if kind.startswith("dict["):
        return isinstance(value, dict)
    return False
