"""The training loop behind :func:`mswelu.train.train` (one process, or one rank under torchrun).

Order of work in :meth:`Trainer.run`:

1. preflight, before anything is written: the config, the data folder, the vocabulary against the model,
   the run folder (non-empty without ``resume`` -> error unless ``overwrite``), the checkpoint to resume
   from (verified against its manifest, its config compatible). Rank 0 checks, every rank raises the same
   ``ValueError``;
2. build model (seeded), optimizer (:mod:`mswelu.optim`), schedule (:mod:`mswelu.schedule`), loaders;
   restore the checkpoint (weights, optimizer, step, tokens, every RNG, every rank's loader position);
3. loop: ``grad_accum`` micro-batches (DDP gradient sync on the last only), loss averaged over the global
   batch, gradient norm measured and clipped, lr set from the step, optimizer step. A non-finite loss or
   gradient skips the update (counted; ``max_consecutive_nonfinite`` in a row stops the run with a clear
   error). Tokens are counted per optimizer step over all ranks: ``batch_size x seq_len``;
4. periodic metrics (metrics.jsonl + TensorBoard, rank 0), validation (loss, perplexity, bits per byte),
   checkpoints; SIGINT/SIGTERM finish the current step, checkpoint and return (``interrupted=True``);
5. at the end: a final checkpoint, validation, ``final/`` via ``save_pretrained``, ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mswelu import checkpoint as ckpt
from mswelu import distributed as du
from mswelu import progress
from mswelu.baselines import build_model, count_parameters, parse_model_name
from mswelu.hf_compat import quiet_progress_bars
from mswelu.optim import build_optimizer
from mswelu.provenance import code_version
from mswelu.schedule import LRSchedule

if TYPE_CHECKING:
    from mswelu.train import TrainConfig

_RUN_DIR_MARKERS = ("config.json", "metrics.jsonl", "checkpoints", "summary.json")


def _log(msg: str) -> None:
    print(f"[mswelu.train] {msg}", file=sys.stderr, flush=True)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def swelu_metrics(model: nn.Module) -> tuple[dict[str, float], dict[str, float]]:
    """({slot: k}, {slot: lambda}) of every SWELU; empty for models without ``swelu_values``."""
    values_fn = getattr(ckpt.unwrap(model), "swelu_values", None)
    if not callable(values_fn):
        return {}, {}
    values = values_fn()
    return (
        {n: float(v["k"]) for n, v in values.items()},
        {n: float(v.get("lambda", 1.0)) for n, v in values.items()},
    )


class Trainer:
    """One training run; see the module docstring. ``callbacks``: ``cb(event, trainer, info)``."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callable[..., Any]] = ()) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self._bar: Any = None  # the tqdm bar while the loop runs (progress lines are written above it)
        self._bytes_per_token: tuple[torch.Tensor, float] | None = None  # see _byte_table
        self._stop_signal: str | None = None
        self.metrics_file: Any = None
        self.tb: Any = None

    # ------------------------------------------------------------------------------------ preflight
    def _preflight(self, info: du.DistInfo) -> dict[str, Any]:
        """All checks that need files; returns the plan (paths, resume checkpoint, sizes). No writes."""
        from mswelu.data import TokenLoader, load_meta
        from mswelu.paths import runs_dir

        cfg = self.cfg
        if cfg.data is None:
            from mswelu.data import default_dataset

            data = Path(default_dataset())
        else:
            data = Path(cfg.data).expanduser()
            if not data.is_dir():
                raise ValueError(
                    f"data folder {data} does not exist; prepare it with `python -m mswelu.data prepare`"
                )
        meta = load_meta(data)
        probe = TokenLoader(
            data,
            "train",
            batch_size=cfg.micro(info.world_size),
            seq_len=cfg.seq_len,
            seed=cfg.seed,
            rank=0,
            world_size=info.world_size,
        )
        TokenLoader(data, "val", batch_size=1, seq_len=cfg.seq_len, mode="sequential")
        model_vocab = int(cfg.model.get("vocab_size", meta["vocab_size"]))
        probe.check_vocab(model_vocab)
        base, ref = parse_model_name(cfg.preset)
        if ref is None:  # build the model config now: bad overrides fail before any work
            from mswelu.baselines import mswelu_config

            overrides = {k: v for k, v in cfg.model.items() if k != "vocab_size"}
            mcfg = mswelu_config(base, model_vocab, cfg.seq_len, cfg.activation, **overrides)
            probe.check_vocab(mcfg.vocab_size)
        elif cfg.activation is not None:
            raise ValueError(
                f"activation={cfg.activation!r} applies to mswelu presets only, not {cfg.preset!r}"
            )

        run_name = cfg.run_name or cfg.default_run_name()
        out = Path(cfg.out).expanduser() if cfg.out else runs_dir() / run_name
        resume_from: Path | None = None
        skipped: list[tuple[Path, str]] = []
        nonempty = out.is_dir() and any(out.iterdir())
        if out.exists() and not out.is_dir():
            raise ValueError(f"run folder {out} exists and is not a folder")
        if cfg.resume:
            resume_from, skipped = self._find_resume(cfg.resume, out)
            if resume_from is not None:
                self._check_compatible(resume_from, info, meta)
        if nonempty and resume_from is None:
            if cfg.resume == "auto" and not skipped and not (out / "checkpoints").exists():
                pass  # "auto" with nothing to resume from: start fresh in place
            elif cfg.overwrite:
                if not any((out / m).exists() for m in _RUN_DIR_MARKERS):
                    raise ValueError(
                        f"overwrite=True but {out} does not look like a run folder; not deleting it"
                    )
            elif cfg.resume == "auto":
                reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped) or "no checkpoints"
                raise ValueError(f"resume='auto' but {out} holds no usable checkpoint ({reasons})")
            else:
                raise ValueError(
                    f"run folder {out} exists and is not empty: pass resume='auto' (--resume auto) to "
                    "continue it, overwrite=True (--overwrite) to start over, or another out / run_name"
                )
        return {
            "data": data,
            "meta": meta,
            "out": out,
            "run_name": run_name,
            "resume_from": resume_from,
            "skipped": skipped,
            "model_vocab": model_vocab,
            "clear": bool(nonempty and resume_from is None and cfg.overwrite),
        }

    def _find_resume(self, resume: str, out: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
        if str(resume) == "auto":
            return ckpt.latest_checkpoint(out / "checkpoints")
        path = Path(resume).expanduser()
        if ckpt.CKPT_RE.match(path.name):
            try:
                ckpt.verify_checkpoint(path)
            except ckpt.CheckpointError as exc:
                raise ValueError(f"cannot resume: {exc}") from exc
            return path, []
        if path.is_dir():  # a run folder (or its checkpoints folder)
            folder = path / "checkpoints" if (path / "checkpoints").is_dir() else path
            found, skipped = ckpt.latest_checkpoint(folder)
            if found is None:
                reasons = "; ".join(f"{p.name}: {why}" for p, why in skipped) or "no checkpoints"
                raise ValueError(f"cannot resume from {path}: no complete checkpoint ({reasons})")
            return found, skipped
        raise ValueError(f"cannot resume: {path} does not exist")

    def _check_compatible(self, path: Path, info: du.DistInfo, meta: dict[str, Any]) -> None:
        from mswelu.train import _NUMERIC_CHANGES, RESUMABLE_CHANGES

        state = json.loads((path / "trainer_state.json").read_text())
        try:
            seen = state["ranks"][0]["loaders"][0].get("fingerprint")
        except (KeyError, IndexError, TypeError):
            seen = None
        if seen is not None and meta.get("fingerprint") is not None and seen != meta["fingerprint"]:
            raise ValueError(
                f"cannot resume from {path}: it was trained on a dataset with fingerprint {seen!r}, "
                f"the data folder now holds {meta['fingerprint']!r}"
            )

        old = ckpt.read_checkpoint_config(path)
        new = self.cfg.to_dict()
        diffs = {
            k: (old.get(k), v)
            for k, v in new.items()
            if k not in RESUMABLE_CHANGES and k in old and _norm(old.get(k)) != _norm(v)
        }
        if diffs:
            lines = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diffs.items())
            raise ValueError(f"cannot resume from {path}: incompatible config ({lines})")
        old_world = old.get("_world_size", 1)
        if old_world != info.world_size:
            raise ValueError(
                f"cannot resume from {path}: it was written by {old_world} process(es), this run has "
                f"{info.world_size} (the loader positions are per rank)"
            )
        changed = [k for k in _NUMERIC_CHANGES if k in old and _norm(old[k]) != _norm(new.get(k))]
        if changed and info.is_main:
            _log(
                f"resuming with changed {changed}: the run will differ from an uninterrupted one from here on"
            )

    # ------------------------------------------------------------------------------------ set-up
    def _setup(self, info: du.DistInfo, plan: dict[str, Any]) -> None:
        from mswelu.data import TokenLoader

        cfg = self.cfg
        self.info = info
        self.out: Path = plan["out"]
        self.data: Path = plan["data"]
        self.meta = plan["meta"]
        self.accum = cfg.grad_accum(info.world_size)
        self.micro = cfg.micro(info.world_size)
        self.total_steps = cfg.total_steps()
        self.tokens_per_step = cfg.tokens_per_step()
        self.device = info.device
        if self.device.type == "cpu":
            # The scan's backward produces subnormal floats (exp(delta * A) of long decays), which x86 CPUs
            # process many times slower. Flushing them to zero left a 12-step `small` run's loss bit-identical
            # and makes CPU steps faster (`python -m mswelu.bench model --keep-denormals` shows the effect).
            torch.set_flush_denormal(True)
        self.autocast_dtype = (
            torch.bfloat16
            if (cfg.dtype == "bf16" or (cfg.dtype == "auto" and self.device.type == "cuda"))
            else None
        )

        if info.is_main:
            if plan["clear"]:
                shutil.rmtree(self.out)
            self.out.mkdir(parents=True, exist_ok=True)
        du.barrier(info)

        seed_everything(cfg.seed)
        model = build_model(
            cfg.preset,
            vocab_size=plan["model_vocab"],
            max_seq_len=cfg.seq_len,
            activation=cfg.activation,
            **{k: v for k, v in cfg.model.items() if k != "vocab_size"},
        )
        self.raw_model = model.to(self.device)
        self.n_params = count_parameters(self.raw_model)
        self._emit("model", {"model": self.raw_model})
        self.optimizer = build_optimizer(
            self.raw_model,
            cfg.optimizer,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=tuple(cfg.betas),
            eps=cfg.eps,
            k_lr_scale=cfg.k_lr_scale,
            muon_momentum=cfg.muon_momentum,
        )
        self.schedule = LRSchedule(
            self.optimizer, self.total_steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio, cfg.decay_fraction
        )
        fwd_model: nn.Module = self.raw_model
        if cfg.compile:
            fwd_model = torch.compile(fwd_model)
        self.eval_model = fwd_model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            fwd_model = DDP(fwd_model, device_ids=[self.device] if self.device.type == "cuda" else None)
        self.model = fwd_model
        # One loader per micro-step, as if each were its own rank among world_size x accum: the windows of
        # an optimizer step are then one draw of batch_size windows, however it is split into
        # micro-batches and processes (1 process x accum 2 == 2 processes == 1 process, one big batch).
        self.loaders = [
            TokenLoader(
                self.data,
                "train",
                batch_size=self.micro,
                seq_len=cfg.seq_len,
                seed=cfg.seed,
                rank=info.rank * self.accum + i,
                world_size=info.world_size * self.accum,
                mode="random",
            )
            for i in range(self.accum)
        ]
        self.step = 0
        self.tokens = 0
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.last_val: dict[str, float] = {}
        if plan["resume_from"] is not None:
            self._restore(plan["resume_from"])
        if info.is_main:
            self._open_logs(resumed=plan["resume_from"] is not None)

    def resolved_config(self) -> dict[str, Any]:
        d = self.cfg.to_dict()
        d.update(data=str(self.data), out=str(self.out), run_name=self.out.name)
        d["_world_size"] = self.info.world_size
        d["_grad_accum"] = self.accum
        d["_micro_batch_size"] = self.micro
        d["_tokens_per_step"] = self.tokens_per_step
        d["_total_steps"] = self.total_steps
        d["_parameters"] = self.n_params
        d["_device"] = str(self.device)
        d["_data_fingerprint"] = self.meta.get("fingerprint")
        d["_code_version"] = code_version()
        model_cfg = getattr(self.raw_model, "config", None)
        if model_cfg is not None and hasattr(model_cfg, "to_dict"):
            d["_model_config"] = json.loads(json.dumps(model_cfg.to_dict(), default=str))
        info = getattr(self.raw_model, "baseline_info", None)
        if info:
            d["_baseline"] = info
        return d

    def _open_logs(self, resumed: bool) -> None:
        ckpt.atomic_write_json(self.out / "config.json", self.resolved_config())
        metrics = self.out / "metrics.jsonl"
        if resumed and metrics.exists():  # drop lines logged after the checkpoint we resume from
            kept = [
                ln
                for ln in metrics.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= self.step
            ]
            ckpt.atomic_write_text(metrics, "".join(ln + "\n" for ln in kept))
        elif metrics.exists():
            metrics.unlink()
        self.metrics_file = open(metrics, "a", encoding="utf-8")  # noqa: SIM115 (closed in run())
        if self.cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is a declared dependency; keep training without it
                _log(f"TensorBoard disabled ({exc})")
            else:
                self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step if resumed else None)

    # ------------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict[str, Any]:
        local = {"rng": ckpt.rng_state(), "loaders": [ld.state_dict() for ld in self.loaders]}
        if self.info.enabled:
            gathered: list[Any] = [None] * self.info.world_size
            torch.distributed.all_gather_object(gathered, local)
        else:
            gathered = [local]
        return {
            "tokens": self.tokens,
            "world_size": self.info.world_size,
            "ranks": gathered,
            "schedule": self.schedule.state_dict(),
            "nonfinite_total": self.nonfinite_total,
            "last_val": self.last_val,
        }

    def save(self) -> Path | None:
        """Checkpoint the current step (collective under DDP: every rank must call it)."""
        state = self._state()
        path = None
        if self.info.is_main:
            path = ckpt.save_checkpoint(
                self.out / "checkpoints",
                self.step,
                self.raw_model,
                self.optimizer,
                state,
                self.resolved_config(),
                keep=self.cfg.keep_checkpoints or None,
            )
        du.barrier(self.info)
        return path

    def _restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, self.raw_model, self.optimizer, map_location=self.device)
        ranks = state["ranks"]
        if len(ranks) != self.info.world_size:
            raise ValueError(
                f"checkpoint {path} holds {len(ranks)} rank states, this run has {self.info.world_size}"
            )
        mine = ranks[self.info.rank]
        if len(mine["loaders"]) != len(self.loaders):
            raise ValueError(f"checkpoint {path} was written with a different gradient accumulation")
        for loader, st in zip(self.loaders, mine["loaders"], strict=True):
            loader.load_state_dict(st)
        ckpt.set_rng_state(mine["rng"])
        self.step = int(state["step"])
        self.tokens = int(state["tokens"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.last_val = dict(state.get("last_val") or {})
        for group in self.optimizer.param_groups:  # the current config's lr wins (documented)
            scale = self.cfg.k_lr_scale if group.get("name") == "swelu" else 1.0
            group["base_lr"] = self.cfg.lr * scale
            if group.get("name") in ("decay", "muon"):
                group["weight_decay"] = self.cfg.weight_decay
        if self.info.is_main:
            _log(f"resumed from {path} at step {self.step} ({self.tokens} tokens)")

    # ------------------------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def loss_on(self, model: nn.Module, window: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) on a ``(B, L+1)`` window: inputs ``w[:, :-1]``, targets
        ``w[:, 1:]`` (the only shift)."""
        x, y = window[:, :-1], window[:, 1:]
        with self._autocast():
            logits = model(input_ids=x).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (or a skipped one). Returns what it measured."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for i in range(self.accum):
            window = next(self.loaders[i]).to(self.device, non_blocking=True)
            sync = i == self.accum - 1
            ctx = self.model.no_sync() if (self.info.enabled and not sync) else contextlib.nullcontext()
            with ctx:
                loss = self.loss_on(self.model, window) / self.accum
                loss.backward()
            loss_sum += loss.detach()
        loss_value = float(du.all_reduce_mean(loss_sum, self.info))
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
        lrs = {}
        if finite:
            self.schedule.apply(self.step)
            lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
            self.optimizer.step()
            self.step += 1
            self.tokens += self.tokens_per_step
            self.nonfinite_run = 0
        else:
            self.nonfinite_total += 1
            self.nonfinite_run += 1
        self.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_value, "grad_norm": grad_norm, "lr": lrs, "finite": finite}

    @torch.no_grad()
    def evaluate(self, whole_split: bool = False) -> dict[str, float]:
        """Validation loss, perplexity and bits per byte.

        Scored: every window of the val split (``whole_split``, or ``eval_batches=0``), else
        ``eval_batches x batch_size`` windows spread evenly over it; the same windows every time and for
        every run with the same ``seq_len``, however the batch is split over ranks and micro-batches. Bits
        per byte are over exactly the tokens scored: their summed loss / ln 2 / the UTF-8 bytes they stand
        for (a per-token lookup, see :meth:`_byte_table`).
        """
        from mswelu.data import TokenLoader

        self.eval_model.eval()
        loader = TokenLoader(  # no gradients: larger batches than training's, at least 1024 tokens each
            self.data,
            "val",
            batch_size=max(self.micro, 1024 // self.cfg.seq_len),
            seq_len=self.cfg.seq_len,
            rank=self.info.rank,
            world_size=self.info.world_size,
            mode="sequential",
        )
        cfg = self.cfg
        sample = None if whole_split or not cfg.eval_batches else cfg.eval_batches * cfg.batch_size
        table = self._byte_table()
        total = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, tokens, bytes
        windows = loader.eval_windows()
        for window in loader.iter_eval_batches(sample=sample):
            targets = window[:, 1:]
            n = targets.numel()
            total[0] += float(self.loss_on(self.eval_model, window.to(self.device))) * n
            total[1] += n
            total[2] += float(table[0][targets].sum()) * table[1]
        self.eval_model.train()
        total = du.all_reduce_sum(total, self.info)
        val_loss = float(total[0] / total[1])
        result = {
            "val_loss": val_loss,
            "val_ppl": math.exp(min(val_loss, 700.0)),
            "val_bpb": float(total[0] / total[2] / math.log(2)) if total[2] > 0 else None,
            "val_tokens": int(total[1]),
            "val_scope": "sample" if sample is not None and sample < len(windows) else "whole split",
        }
        self.last_val = result
        return result

    def _byte_table(self) -> tuple[torch.Tensor, float]:
        """(UTF-8 bytes per token id, calibration): the bytes behind scored tokens are a lookup. The
        calibration is the split's recorded bytes over the table's sum across the split: exactly 1 for
        byte-level BPE (GPT-2), and it corrects tokenizers whose tokens do not decode one by one."""
        if self._bytes_per_token is None:
            from mswelu.data import TokenLoader, get_tokenizer

            val = self.meta["splits"]["val"]
            try:
                lengths = torch.from_numpy(get_tokenizer(self.meta["tokenizer"]).token_byte_lengths())
            except (ValueError, OSError) as exc:  # e.g. a Hub tokenizer while offline
                if self.info.is_main:
                    _log(f"tokenizer {self.meta['tokenizer']!r} unavailable ({exc}); bits per byte use the "
                         "val split's average bytes per token")
                self._bytes_per_token = (torch.full((self.meta["vocab_size"],), 1.0, dtype=torch.float64),
                                         val["bytes"] / max(1, val["tokens"]))
                return self._bytes_per_token
            split = TokenLoader(self.data, "val", batch_size=1, seq_len=1, mode="sequential").data
            counted = int(lengths[torch.from_numpy(np.asarray(split, dtype=np.int64))].sum())
            recorded = int(val["bytes"])
            calibration = recorded / counted if counted > 0 else 1.0
            if abs(calibration - 1.0) > 1e-3 and self.info.is_main:
                _log(f"token byte lengths sum to {counted} over the val split, meta.json records {recorded}: "
                     f"bits per byte scaled by {calibration:.4f}")
            self._bytes_per_token = (lengths, calibration)
        return self._bytes_per_token

    # ------------------------------------------------------------------------------------ logging
    def _write_metrics(self, record: dict[str, Any]) -> None:
        if not self.info.is_main or self.metrics_file is None:
            return
        self.metrics_file.write(json.dumps(record) + "\n")
        self.metrics_file.flush()
        self._emit("log", record)
        if self.tb is not None:
            step = record["step"]
            for key in ("loss", "grad_norm", "tokens_per_s", "val_loss", "val_ppl", "val_bpb"):
                if key in record and record[key] is not None:
                    self.tb.add_scalar(
                        f"{'val' if key.startswith('val') else 'train'}/{key}", record[key], step
                    )
            for name, lr in (record.get("lr") or {}).items():
                self.tb.add_scalar(f"lr/{name}", lr, step)
            for name, k in (record.get("k") or {}).items():
                self.tb.add_scalar(f"k/{name}", k, step)
            if any(v != 1.0 for v in (record.get("lambda") or {}).values()):
                for name, lam in record["lambda"].items():
                    self.tb.add_scalar(f"lambda/{name}", lam, step)

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event, self, info)

    # ------------------------------------------------------------------------------------ signals
    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl-C: stop now
            self._stop_signal = signal.Signals(signum).name
            _log(f"{self._stop_signal} received: finishing this step, writing a checkpoint, then stopping")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def request_stop(self, reason: str = "request") -> None:
        """Stop after the current step with a checkpoint (what SIGINT/SIGTERM do)."""
        self._stop_signal = reason

    # ------------------------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started_pg = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        info = du.setup(cfg.device)
        try:
            cfg.validate(info.world_size)
            plan: Any = None
            error = None
            if info.is_main:
                try:
                    plan = self._preflight(info)
                except ValueError as exc:
                    error = str(exc)
            plan, error = du.broadcast_object((plan, error), info)  # type: ignore[misc]
            if error is not None:
                raise ValueError(error)
            for path, why in plan["skipped"]:
                if info.is_main:
                    _log(f"ignoring checkpoint {path}: {why}")
            self._setup(info, plan)
            previous = self._install_signals()
            try:
                return self._loop()
            finally:
                for sig, h in previous.items():
                    signal.signal(sig, h)
                if self.metrics_file is not None:
                    self.metrics_file.close()
                if self.tb is not None:
                    self.tb.close()
        finally:
            if started_pg and info.enabled:
                du.cleanup()

    def _loop(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, info = self.cfg, self.info
        start_step, start_tokens = self.step, self.tokens
        wall0 = time.perf_counter()
        train_time = 0.0
        interval_t0, interval_tokens = time.perf_counter(), 0
        last: dict[str, Any] = {}
        interrupted = False
        bar = self._bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=self.out.name,
            unit="step",
            disable=not (info.is_main and cfg.progress),
            dynamic_ncols=True,
        )
        try:
            while self.step < self.total_steps:
                t0 = time.perf_counter()
                last = self.train_step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                dt = time.perf_counter() - t0
                train_time += dt
                self._emit("step", {"step": self.step, **last})
                if not last["finite"]:
                    msg = (
                        f"non-finite loss {last['loss']} or gradient norm {last['grad_norm']} at step "
                        f"{self.step + 1}: update skipped ({self.nonfinite_run} in a row, "
                        f"{self.nonfinite_total} in total)"
                    )
                    if info.is_main:
                        _log(msg)
                    if self.nonfinite_run >= cfg.max_consecutive_nonfinite:
                        raise FloatingPointError(
                            f"stopping: {self.nonfinite_run} consecutive non-finite steps "
                            f"(max_consecutive_nonfinite={cfg.max_consecutive_nonfinite}); the last good "
                            f"checkpoint is in {self.out / 'checkpoints'}; lower lr or check the data"
                        )
                    interval_t0 += dt
                    continue
                interval_tokens += self.tokens_per_step
                bar.update(1)
                if (
                    self.step % cfg.log_every == 0
                    or self.step == self.total_steps
                    or self.step == start_step + 1
                ):
                    elapsed = time.perf_counter() - interval_t0
                    ks, lams = swelu_metrics(self.raw_model)
                    record = {
                        "step": self.step,
                        "tokens": self.tokens,
                        "loss": last["loss"],
                        "lr": last["lr"],
                        "grad_norm": last["grad_norm"],
                        "tokens_per_s": interval_tokens / elapsed if elapsed > 0 else None,
                        "nonfinite_skipped": self.nonfinite_total,
                        "k": ks,
                        "lambda": lams,
                    }
                    self._write_metrics(record)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
                    if info.is_main and cfg.progress:
                        per_step = (time.perf_counter() - wall0) / (self.step - start_step)
                        left = per_step * (self.total_steps - self.step)
                        progress.say(progress.format_step(self.out.name, self.step, self.total_steps,
                                                          last["loss"], record["tokens_per_s"], left), bar)
                    interval_t0, interval_tokens = time.perf_counter(), 0
                if self.step < self.total_steps and (
                    (cfg.eval_every and self.step % cfg.eval_every == 0)
                    or self.step in self._fraction_steps()
                ):
                    self._eval_and_log()
                    interval_t0 = time.perf_counter()
                stop = du.any_true(self._stop_signal is not None, info)
                if stop:
                    interrupted = True
                    break
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and self.step < self.total_steps:
                    self.save()
                    interval_t0 = time.perf_counter()
        finally:
            bar.close()
        self.save()
        if not interrupted:
            self._eval_and_log(whole_split=True)
            self._save_final()
        wall = time.perf_counter() - wall0
        ks, lams = swelu_metrics(self.raw_model)
        summary = {
            "run_dir": str(self.out),
            "run_name": self.out.name,
            "preset": cfg.preset,
            "activation": cfg.activation,
            "optimizer": cfg.optimizer,
            "seed": cfg.seed,
            "steps": self.step,
            "tokens": self.tokens,
            "total_steps": self.total_steps,
            "tokens_per_step": self.tokens_per_step,
            "world_size": info.world_size,
            "grad_accum": self.accum,
            "parameters": self.n_params,
            "train_loss": last.get("loss"),
            "val_loss": self.last_val.get("val_loss"),
            "val_ppl": self.last_val.get("val_ppl"),
            "val_bpb": self.last_val.get("val_bpb"),
            "tokens_per_s": (self.tokens - start_tokens) / train_time if train_time > 0 else None,
            "k": ks,
            "lambda": lams,
            "nonfinite_skipped": self.nonfinite_total,
            "wall_time_s": wall,
            "interrupted": interrupted,
            "stop_reason": self._stop_signal,
            "device": str(self.device),
            "is_main": info.is_main,
            "baseline": getattr(self.raw_model, "baseline_info", None),
        }
        if info.is_main:
            ckpt.atomic_write_json(self.out / "summary.json", summary)
        return summary

    def _fraction_steps(self) -> set[int]:
        """The steps at ``eval_fractions`` of the run (at least step 1)."""
        return {max(1, round(f * self.total_steps)) for f in self.cfg.eval_fractions}

    def _eval_and_log(self, whole_split: bool = False) -> None:
        result = self.evaluate(whole_split=whole_split)
        self._emit("eval", {"step": self.step, **result})
        self._write_metrics({"step": self.step, "tokens": self.tokens, **result})
        if self.info.is_main and self.cfg.progress:
            progress.say(progress.format_eval(self.out.name, self.step, self.total_steps, result["val_loss"],
                                              result["val_bpb"]), self._bar)

    def _save_final(self) -> None:
        if not self.info.is_main:
            du.barrier(self.info)
            return
        if not ckpt.all_finite(self.raw_model):
            raise FloatingPointError("refusing to save final/: the weights contain NaN or inf")
        final = self.out / "final"
        tmp = self.out / f".tmp-final-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        with quiet_progress_bars():
            self.raw_model.save_pretrained(str(tmp))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        ckpt.fsync_dir(self.out)
        du.barrier(self.info)


def _norm(value: Any) -> Any:
    """Normalise tuples/lists and paths so configs read back from JSON compare equal."""
    if isinstance(value, tuple | list):
        return [_norm(v) for v in value]
    if isinstance(value, dict):
        return {k: _norm(v) for k, v in value.items()}
    return value
