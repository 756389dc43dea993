"""The training loop behind :func:`mswelu.train.train` (one process, or one rank under torchrun).

:meth:`Trainer.run`, in order:

1. the plan (:func:`mswelu.preflight.plan_run`), before anything is written; rank 0 checks, every rank
   raises the same ``ValueError``;
2. build model (seeded), optimizer (:mod:`mswelu.optim`), schedule (:mod:`mswelu.schedule`), loaders; restore
   the checkpoint (weights, optimizer, step, tokens, every RNG, every rank's loader position);
3. loop: ``grad_accum`` micro-batches (DDP gradient sync on the last only), loss averaged over the global
   batch, gradient norm measured and clipped, lr set from the step, optimizer step. A non-finite loss or
   gradient skips the update (counted; ``max_consecutive_nonfinite`` in a row stops the run). Tokens are
   counted per optimizer step over all ranks: ``batch_size x seq_len``;
4. metrics (:mod:`mswelu.metrics_log`, rank 0), validation (:mod:`mswelu.evaluation`), checkpoints;
   SIGINT/SIGTERM finish the current step, checkpoint and return (``interrupted=True``);
5. at the end: a final checkpoint, validation over the whole split, ``final/``, ``summary.json``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from mswelu import checkpoint as ckpt
from mswelu import distributed as du
from mswelu import evaluation, progress
from mswelu.baselines import build_model, count_parameters
from mswelu.metrics_log import MetricsLog
from mswelu.ops.lm_loss import next_token_loss, split_window
from mswelu.optim import build_optimizer, set_hyperparameters
from mswelu.preflight import RunPlan, plan_run
from mswelu.provenance import code_version
from mswelu.runs import RunWriter
from mswelu.schedule import LRSchedule
from mswelu.train_config import TrainConfig


def _log(msg: str) -> None:
    print(f"[mswelu.train] {msg}", file=sys.stderr, flush=True)


def swelu_metrics(model: nn.Module) -> tuple[dict[str, float], dict[str, float]]:
    """({slot: k}, {slot: lambda}) of every SWELU; empty for models without ``swelu_values``."""
    values = getattr(ckpt.unwrap(model), "swelu_values", None)
    if not callable(values):
        return {}, {}
    v = values()
    return {n: float(x["k"]) for n, x in v.items()}, {n: float(x.get("lambda", 1.0)) for n, x in v.items()}


class Trainer:
    """One training run; see the module docstring. ``callbacks``: ``cb(event, trainer, info)``."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callable[..., Any]] = ()) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self._bar: Any = None  # the tqdm bar while the loop runs (progress lines are written above it)
        self._stop_signal: str | None = None
        self._byte_table: tuple[torch.Tensor, float] | None = None
        self.log: MetricsLog | None = None

    # ------------------------------------------------------------------------------------ set-up
    def _setup(self, info: du.DistInfo, plan: RunPlan) -> None:
        from mswelu.data import TokenLoader

        cfg = self.cfg
        self.info, self.plan, self.out = info, plan, plan.out
        self.run_dir = RunWriter(plan.out)
        self.accum, self.micro = cfg.grad_accum(info.world_size), cfg.micro(info.world_size)
        self.total_steps, self.tokens_per_step = cfg.total_steps(), cfg.tokens_per_step()
        self.device = info.device
        if self.device.type == "cpu":
            # The scan's backward produces subnormal floats (exp(delta * A) of long decays), which x86 CPUs
            # process many times slower; flushing them left a 12-step `small` run's loss bit-identical
            # (`python -m mswelu.bench model --keep-denormals` shows the effect).
            torch.set_flush_denormal(True)
        bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and self.device.type == "cuda")
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        if info.is_main:
            if plan.clear:
                self.run_dir.clear()
            self.out.mkdir(parents=True, exist_ok=True)
        du.barrier(info)

        ckpt.seed_everything(cfg.seed)
        overrides = {k: v for k, v in cfg.model.items() if k != "vocab_size"}
        self.raw_model = build_model(
            cfg.preset,
            vocab_size=plan.model_vocab,
            max_seq_len=cfg.seq_len,
            activation=cfg.activation,
            **overrides,
        ).to(self.device)
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
        self.eval_model = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        self.model = du.wrap_ddp(self.eval_model, info)
        # One loader per micro-step, as if each were its own rank among world_size x accum: the windows of
        # an optimizer step are one draw of batch_size windows however it is split (1 process x accum 2 ==
        # 2 processes == 1 process with one big batch).
        self.loaders = [
            TokenLoader(
                plan.data,
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
        self.step = self.tokens = self.nonfinite_total = self.nonfinite_run = 0
        self.last_val: dict[str, Any] = {}
        if plan.resume_from is not None:
            self._restore(plan.resume_from)
        if info.is_main:
            self.run_dir.write_config(self.resolved_config())
            resumed = self.step if plan.resume_from is not None else None
            self.log = MetricsLog(self.run_dir, resumed, cfg.tensorboard)

    def resolved_config(self) -> dict[str, Any]:
        """The config as run: every field plus derived values (``_``-prefixed) and the model's config."""
        d = self.cfg.to_dict()
        d.update(data=str(self.plan.data), out=str(self.out), run_name=self.out.name)
        d.update(
            _world_size=self.info.world_size,
            _grad_accum=self.accum,
            _micro_batch_size=self.micro,
            _tokens_per_step=self.tokens_per_step,
            _total_steps=self.total_steps,
            _parameters=self.n_params,
            _device=str(self.device),
            _data_fingerprint=self.plan.meta.get("fingerprint"),
            _code_version=code_version(),
        )
        model_cfg = getattr(self.raw_model, "config", None)
        if model_cfg is not None and hasattr(model_cfg, "to_dict"):
            import json

            d["_model_config"] = json.loads(json.dumps(model_cfg.to_dict(), default=str))
        if getattr(self.raw_model, "baseline_info", None):
            d["_baseline"] = self.raw_model.baseline_info
        return d

    # ------------------------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Checkpoint the current step (collective under DDP: every rank must call it)."""
        local = {"rng": ckpt.rng_state(), "loaders": [ld.state_dict() for ld in self.loaders]}
        state = {
            "tokens": self.tokens,
            "world_size": self.info.world_size,
            "ranks": du.all_gather(local, self.info),
            "schedule": self.schedule.state_dict(),
            "nonfinite_total": self.nonfinite_total,
            "last_val": self.last_val,
        }
        if self.info.is_main:
            ckpt.save_checkpoint(
                self.run_dir.checkpoints,
                self.step,
                self.raw_model,
                self.optimizer,
                state,
                self.resolved_config(),
                keep=self.cfg.keep_checkpoints or None,
            )
        du.barrier(self.info)

    def _restore(self, path: Any) -> None:
        state = ckpt.load_checkpoint(path, self.raw_model, self.optimizer, map_location=self.device)
        if len(state["ranks"]) != self.info.world_size:
            raise ValueError(
                f"checkpoint {path} holds {len(state['ranks'])} rank states, this run has "
                f"{self.info.world_size}"
            )
        mine = state["ranks"][self.info.rank]
        if len(mine["loaders"]) != len(self.loaders):
            raise ValueError(f"checkpoint {path} was written with a different gradient accumulation")
        for loader, st in zip(self.loaders, mine["loaders"], strict=True):
            loader.load_state_dict(st)
        ckpt.set_rng_state(mine["rng"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.last_val = dict(state.get("last_val") or {})
        set_hyperparameters(self.optimizer, self.cfg.lr, self.cfg.weight_decay, self.cfg.k_lr_scale)
        if self.info.is_main:
            _log(f"resumed from {path} at step {self.step} ({self.tokens} tokens)")

    # ------------------------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def loss_on(self, model: nn.Module, window: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``model`` on a ``(B, L+1)`` window."""
        x, y = split_window(window)
        with self._autocast():
            logits = model(input_ids=x).logits
        return next_token_loss(logits, y)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (or a skipped one). Returns what it measured."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for i in range(self.accum):
            window = next(self.loaders[i]).to(self.device, non_blocking=True)
            sync = i == self.accum - 1
            with contextlib.nullcontext() if (sync or not self.info.enabled) else self.model.no_sync():
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

    def evaluate(self, whole_split: bool = False) -> dict[str, Any]:
        """Validation on the whole split (``whole_split`` or ``eval_batches=0``), else on ``eval_batches x
        batch_size`` windows spread over it (see :mod:`mswelu.evaluation`)."""
        cfg = self.cfg
        if self._byte_table is None:
            self._byte_table = evaluation.byte_table(
                self.plan.data, self.plan.meta, announce=self.info.is_main
            )
        sample = None if whole_split or not cfg.eval_batches else cfg.eval_batches * cfg.batch_size
        self.last_val = evaluation.evaluate(
            self.eval_model,
            self.plan.data,
            cfg.seq_len,
            self._byte_table,
            self.info,
            batch_size=max(self.micro, 1024 // cfg.seq_len),
            sample=sample,
            autocast=self._autocast,
        )
        return self.last_val

    # ------------------------------------------------------------------------------------ events
    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event, self, info)

    def _record(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)
            self._emit("log", record)

    def _say(self, line: str) -> None:
        if self.info.is_main and self.cfg.progress:
            progress.say(line, self._bar)

    def request_stop(self, reason: str = "request") -> None:
        """Stop after the current step with a checkpoint (what SIGINT/SIGTERM do)."""
        self._stop_signal = reason

    @contextlib.contextmanager
    def _signals(self) -> Any:
        """SIGINT/SIGTERM request a stop after the current step; a second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self._stop_signal = signal.Signals(signum).name
            _log(f"{self._stop_signal} received: finishing this step, writing a checkpoint, then stopping")

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)

    # ------------------------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        started_pg = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        info = du.setup(self.cfg.device)
        try:
            self.cfg.validate(info.world_size)
            plan = du.run_on_main(lambda: plan_run(self.cfg, info.world_size), info)
            if info.is_main:
                for path, why in plan.skipped:
                    _log(f"ignoring checkpoint {path}: {why}")
                if plan.changed:
                    _log(
                        f"resuming with changed {plan.changed}: the run will differ from an uninterrupted "
                        "one from here on"
                    )
            self._setup(info, plan)
            with self._signals():
                try:
                    return self._loop()
                finally:
                    if self.log is not None:
                        self.log.close()
        finally:
            if started_pg and info.enabled:
                du.cleanup()

    def _due(self, every: int, extra: set[int] = frozenset()) -> bool:
        return self.step < self.total_steps and ((every and self.step % every == 0) or self.step in extra)

    def _loop(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, info = self.cfg, self.info
        start_step, start_tokens = self.step, self.tokens
        wall0 = time.perf_counter()
        train_time, interval_t0, interval_tokens = 0.0, time.perf_counter(), 0
        fraction_steps = {max(1, round(f * self.total_steps)) for f in cfg.eval_fractions}
        last: dict[str, Any] = {}
        interrupted = False
        self._bar = tqdm(
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
                    self._skipped(last)
                    interval_t0 += dt
                else:
                    interval_tokens += self.tokens_per_step
                    self._bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step in (self.total_steps, start_step + 1):
                        elapsed = time.perf_counter() - interval_t0
                        self._log_step(
                            last, interval_tokens / elapsed if elapsed > 0 else None, wall0, start_step
                        )
                        interval_t0, interval_tokens = time.perf_counter(), 0
                    if self._due(cfg.eval_every, fraction_steps):
                        self._eval_and_log()
                        interval_t0 = time.perf_counter()
                if du.any_true(self._stop_signal is not None, info):  # on every path, skipped steps too
                    interrupted = True
                    break
                if last["finite"] and self._due(cfg.ckpt_every):
                    self.save()
                    interval_t0 = time.perf_counter()
        finally:
            self._bar.close()
        self.save()
        if not interrupted:
            self._eval_and_log(whole_split=True)
            if info.is_main:
                if not ckpt.all_finite(self.raw_model):
                    raise FloatingPointError("refusing to save final/: the weights contain NaN or inf")
                self.run_dir.save_final(self.raw_model)
            du.barrier(info)
        return self._summary(
            last,
            interrupted,
            time.perf_counter() - wall0,
            (self.tokens - start_tokens) / train_time if train_time > 0 else None,
        )

    def _skipped(self, last: dict[str, Any]) -> None:
        if self.info.is_main:
            _log(
                f"non-finite loss {last['loss']} or gradient norm {last['grad_norm']} at step "
                f"{self.step + 1}: update skipped ({self.nonfinite_run} in a row, "
                f"{self.nonfinite_total} in total)"
            )
        if self.nonfinite_run >= self.cfg.max_consecutive_nonfinite:
            found, _ = ckpt.latest_checkpoint(self.run_dir.checkpoints, check_hash=False)
            where = f"the last good checkpoint is {found}" if found else "no checkpoint was written yet"
            raise FloatingPointError(
                f"stopping: {self.nonfinite_run} consecutive non-finite steps (max_consecutive_nonfinite="
                f"{self.cfg.max_consecutive_nonfinite}); {where}; lower lr or check the data"
            )

    def _log_step(self, last: dict[str, Any], rate: float | None, wall0: float, start_step: int) -> None:
        ks, lams = swelu_metrics(self.raw_model)
        self._record(
            {
                "step": self.step,
                "tokens": self.tokens,
                "loss": last["loss"],
                "lr": last["lr"],
                "grad_norm": last["grad_norm"],
                "tokens_per_s": rate,
                "nonfinite_skipped": self.nonfinite_total,
                "k": ks,
                "lambda": lams,
            }
        )
        self._bar.set_postfix(loss=f"{last['loss']:.4f}", refresh=False)
        left = (time.perf_counter() - wall0) / (self.step - start_step) * (self.total_steps - self.step)
        self._say(progress.format_step(self.out.name, self.step, self.total_steps, last["loss"], rate, left))

    def _eval_and_log(self, whole_split: bool = False) -> None:
        result = self.evaluate(whole_split=whole_split)
        self._emit("eval", {"step": self.step, **result})
        self._record({"step": self.step, "tokens": self.tokens, **result})
        self._say(
            progress.format_eval(
                self.out.name, self.step, self.total_steps, result["val_loss"], result["val_bpb"]
            )
        )

    def _summary(
        self, last: dict[str, Any], interrupted: bool, wall: float, rate: float | None
    ) -> dict[str, Any]:
        cfg = self.cfg
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
            "world_size": self.info.world_size,
            "grad_accum": self.accum,
            "parameters": self.n_params,
            "train_loss": last.get("loss"),
            "val_loss": self.last_val.get("val_loss"),
            "val_ppl": self.last_val.get("val_ppl"),
            "val_bpb": self.last_val.get("val_bpb"),
            "tokens_per_s": rate,
            "k": ks,
            "lambda": lams,
            "nonfinite_skipped": self.nonfinite_total,
            "wall_time_s": wall,
            "interrupted": interrupted,
            "stop_reason": self._stop_signal,
            "device": str(self.device),
            "is_main": self.info.is_main,
            "baseline": getattr(self.raw_model, "baseline_info", None),
        }
        if self.info.is_main:
            self.run_dir.write_summary(summary)
        return summary
