"""The training loop behind :func:`mswelu.train.train` (one process, or one rank under torchrun).

:meth:`Trainer.run`, in order:

1. the plan (:func:`mswelu.runs.preflight.plan_run`), before anything is written; rank 0 checks, every rank
   raises the same ``ValueError``;
2. model (seeded), optimizer, schedule, loaders; restore the checkpoint (weights, optimizer, the
   :class:`~mswelu.runs.resume.TrainState`, every RNG, every rank's loader position);
3. loop: ``grad_accum`` micro-batches (DDP gradient sync on the last only), loss averaged over the global
   batch, gradient norm measured and clipped, lr set from the step, optimizer step. A non-finite loss or
   gradient skips the update (counted; ``max_consecutive_nonfinite`` in a row stops the run). Tokens are
   counted per optimizer step over all ranks: ``batch_size x seq_len``;
4. metrics (rank 0), validation, checkpoints; SIGINT/SIGTERM finish the current step, checkpoint and return
   (``interrupted=True``);
5. at the end: a final checkpoint, validation over the whole split, ``final/`` (with the tokenizer, the
   generation config and a model card: :mod:`mswelu.runs.hub`), ``summary.json``.

Rank 0 also samples the devices on a background thread every ``monitor_every`` seconds
(:mod:`mswelu.base.devices`); the loop writes the samples with its next record, so only the training thread
writes ``metrics.jsonl`` and the trackers.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mswelu.base import distributed as du
from mswelu.base import progress
from mswelu.base.stop import StopRequest
from mswelu.data import TokenLoader
from mswelu.models.build import build_model, count_parameters, lm_loss, shape_values
from mswelu.ops.lm_loss import split_window
from mswelu.runs import hub, resume
from mswelu.runs.metrics_log import MetricsLog, run_summary
from mswelu.runs.preflight import RunPlan, plan_run
from mswelu.runs.resume import TrainState
from mswelu.runs.writer import RunLock, RunWriter
from mswelu.training import checkpoint as ckpt
from mswelu.training import evaluation, parallel, sharded_checkpoint
from mswelu.training.config import TrainConfig
from mswelu.training.optim import build_optimizer, set_hyperparameters
from mswelu.training.schedule import LRSchedule


@dataclass(frozen=True)
class RunSetup:
    """What :meth:`Trainer.run` builds once per sitting; none of it changes while the loop runs (the
    progress lives in :class:`~mswelu.runs.resume.TrainState`)."""

    info: du.DistInfo
    plan: RunPlan
    run_dir: RunWriter
    models: parallel.ModelHandles  # which handle is used where: see there
    optimizer: Any
    schedule: LRSchedule
    loaders: list[TokenLoader]
    evaluator: evaluation.Evaluator
    autocast_dtype: torch.dtype | None
    record: dict[str, Any]  # config.json (every field, derived values, the model's config)
    n_params: int


def build_run_model(cfg: TrainConfig, plan: RunPlan) -> nn.Module:
    """The run's model, freshly initialised (seeded by the caller)."""
    return build_model(cfg.preset, plan.model_vocab, cfg.seq_len, cfg.activation, **plan.model_overrides)


def build_setup(
    cfg: TrainConfig, info: du.DistInfo, plan: RunPlan, emit: Callable[..., None], autocast: Callable[[], Any]
) -> tuple[RunSetup, TrainState]:
    """A sitting's :class:`RunSetup`, built in the order a seeded run's numbers depend on (seed, model,
    optimizer, schedule, loaders), and its :class:`~mswelu.runs.resume.TrainState`: fresh, or restored
    with the weights, optimizer, RNGs and loader positions from ``plan.resume_from``."""
    run_dir, state = RunWriter(plan.out), TrainState()
    accum, micro = cfg.grad_accum(info.world_size), cfg.micro(info.world_size)
    if info.device.type == "cpu":
        # The scan's backward produces subnormal floats (exp(delta * A) of long decays), which x86 CPUs
        # process many times slower; flushing them left a 12-step `small` run's loss bit-identical
        # (`python -m mswelu.bench model --keep-denormals` shows the effect).
        torch.set_flush_denormal(True)
    dtype = torch.bfloat16 if cfg.uses_bf16(info.device.type) else None  # autocast
    if info.is_main:
        run_dir.prepare(clear=plan.clear)
    du.barrier(info)

    ckpt.seed_everything(cfg.seed)
    built = build_run_model(cfg, plan).to(info.device)
    if cfg.activation_checkpointing:  # recompute each block in the backward
        built.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = count_parameters(built)
    emit("model", {"model": built})
    sharding = cfg.parallel == "fsdp" and info.enabled
    full_state = None  # a one-process (full) checkpoint resumed under FSDP: read before sharding
    if sharding and plan.resume_from is not None and ckpt.checkpoint_format(plan.resume_from) == "full":
        plain = build_optimizer(built, cfg.optimizer, **cfg.optimizer_kwargs())
        full_state = sharded_checkpoint.full_to_sharded(plan.resume_from, built, plain)
    models = parallel.handles(built, info, cfg.parallel, cfg.compile, cfg.fsdp_param_dtype, cfg.cpu_offload)
    optimizer = build_optimizer(models.built, cfg.optimizer, **cfg.optimizer_kwargs())
    if full_state is not None:
        sharded_checkpoint.apply_full_optimizer_state(models.built, optimizer.optimizers, full_state[0])
    schedule = LRSchedule(
        optimizer, cfg.total_steps(), cfg.warmup, cfg.schedule, cfg.min_lr_ratio, cfg.decay_fraction
    )
    loaders = TokenLoader.for_micro_steps(
        plan.data, micro, cfg.seq_len, cfg.seed, info.rank, info.world_size, accum
    )
    evaluator = evaluation.Evaluator(plan.data, plan.meta, cfg.seq_len, micro, info, autocast)
    if plan.resume_from is not None:
        preloaded = None if full_state is None else full_state[1]
        state = resume.restore(plan.resume_from, models.built, optimizer, loaders, info, preloaded)
        set_hyperparameters(optimizer, cfg.lr, cfg.weight_decay)
        if info.is_main:
            progress.log(f"resumed from {plan.resume_from} at step {state.step} ({state.tokens} tokens)")
    record = cfg.record(info.world_size, plan.data, plan.out, plan.meta, models.built, info.device)
    setup = RunSetup(
        info, plan, run_dir, models, optimizer, schedule, loaders, evaluator, dtype, record, n_params
    )
    return setup, state


class Trainer:
    """One training run; see the module docstring. ``callbacks``: ``cb(event, trainer, info)``.

    ``state`` (:class:`~mswelu.runs.resume.TrainState`) is where the run stands, saved and restored as one
    with each checkpoint; ``setup`` (:class:`RunSetup`) what a sitting builds; ``log`` is rank 0's metrics log
    (with its device sampler) while the run is open. Which model handle is used where is one rule,
    :class:`~mswelu.training.parallel.ModelHandles`: ``training`` for the training step, ``compiled`` for
    evaluation, ``built`` for everything else (optimizer, clipping, checkpoints, ``final/``, shape values)."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callable[..., Any]] = ()) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.stop = StopRequest()
        self.state = TrainState()
        self.setup: RunSetup | None = None
        self.log: MetricsLog | None = None
        self.progress: progress.RunProgress | None = None

    # ------------------------------------------------------------------------------------ set-up
    def _setup(self, info: du.DistInfo, plan: RunPlan) -> None:
        self.setup, self.state = build_setup(self.cfg, info, plan, self._emit, self._autocast)
        du.run_on_main(self._open_log, info)  # a tracker that cannot start stops every rank
        if info.is_main:
            self.setup.run_dir.write_config(self.setup.record)
            if self.cfg.monitor_interval() > 0:
                emit = self._emit
                self.log.sample_devices(self.cfg.monitor_interval(), lambda sample: emit("device", sample))

    def _open_log(self) -> None:
        s = self.setup
        resumed = self.state.step if s.plan.resume_from is not None else None
        trackers = self.cfg.resolved_trackers()
        self.log = MetricsLog.for_run(s.run_dir, s.record, trackers, resumed, self.state.last_train)

    # ------------------------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Checkpoint the current step (collective under DDP: every rank must call it)."""
        s = self.setup
        if self.log is not None:
            self.log.sync()
        keep = self.cfg.keep_checkpoints or None
        parts = (s.models.built, s.optimizer, s.loaders, s.schedule)
        resume.save(s.run_dir.checkpoints, self.state, *parts, s.record, keep, s.info)

    # ------------------------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.setup is None or self.setup.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.setup.info.device.type, dtype=self.setup.autocast_dtype)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (or a skipped one). Returns what it measured."""
        s, state = self.setup, self.state
        model, accum, info = s.models.training, len(s.loaders), s.info
        model.train()
        loss_sum = torch.zeros((), device=info.device)
        for i, loader in enumerate(s.loaders):
            x, y = split_window(next(loader).to(info.device, non_blocking=True))
            last = i == accum - 1  # gradients are synchronised on the last micro-step only
            with parallel.grad_sync(model, last or not info.enabled):
                with self._autocast():
                    loss = lm_loss(model, x, y)
                loss = loss / accum
                loss.backward()
            loss_sum += loss.detach()
        loss_value = float(du.all_reduce_mean(loss_sum, info))
        parallel.sync_replicated_grads(s.models.built, info)
        grad_norm = parallel.clip_gradients(
            s.models.built, self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf
        )
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm)
        lrs = {}
        if finite:
            s.schedule.apply(state.step)
            lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(s.optimizer.param_groups)}
            s.optimizer.step()
            state.step += 1
            state.tokens += self.cfg.tokens_per_step()
            state.nonfinite_run = 0
        else:
            state.nonfinite_total += 1
            state.nonfinite_run += 1
        s.optimizer.zero_grad(set_to_none=True)
        return {"loss": loss_value, "grad_norm": grad_norm, "lr": lrs, "finite": finite}

    def request_stop(self, reason: str = "request") -> None:
        """Stop after the current step with a checkpoint (what SIGINT/SIGTERM do)."""
        self.stop.request(reason)

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event, self, info)

    def _record(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(record)
            self._emit("log", record)

    def _close_log(self, summary: dict[str, Any] | None) -> None:
        if self.log is not None:
            self.log.close(summary, failed=summary is None, at=(self.state.step, self.state.tokens))
            self.log = None

    # ------------------------------------------------------------------------------------ main loop
    def run(self) -> dict[str, Any]:
        # types and choices first (the output folder and the device depend on them), for the number of
        # processes torchrun started (the process group is joined only below)
        self.cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
        started_pg = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        info = du.setup(self.cfg.device)
        lock = RunLock(self.cfg.out_dir())
        try:
            self.cfg.validate(info.world_size)
            du.run_on_main(lambda: lock.acquire() and None, info)  # one writer per run folder
            plan = du.run_on_main(lambda: plan_run(self.cfg, info.world_size), info)
            if plan.finished is not None:
                if info.is_main:
                    progress.log(plan.finished_notice())
                return plan.finished
            try:
                self._setup(info, plan)
            except BaseException:
                self._close_log(None)
                raise
            with self.stop:
                summary = None
                try:
                    summary = self._loop()
                    return summary
                finally:
                    self._close_log(summary)
        finally:
            lock.release()
            if started_pg and info.enabled:
                du.cleanup()

    def _due(self, every: int, extra: set[int] = frozenset()) -> bool:
        step = self.state.step
        return step < self.cfg.total_steps() and ((every and step % every == 0) or step in extra)

    def _loop(self) -> dict[str, Any]:
        cfg, info, state = self.cfg, self.setup.info, self.state
        total = cfg.total_steps()
        start_step, start_tokens, wall0 = state.step, state.tokens, time.perf_counter()
        fraction_steps = {max(1, round(f * total)) for f in cfg.eval_fractions}
        interrupted = False
        self.progress = progress.RunProgress(
            self.setup.plan.out.name, total, state.step, info.is_main and cfg.progress
        )

        def measure_sitting() -> None:
            state.sitting.update(
                wall_time_s=time.perf_counter() - wall0, trained_tokens=state.tokens - start_tokens
            )

        try:
            while state.step < total:
                t0 = time.perf_counter()
                last = self.train_step()
                if info.device.type == "cuda":
                    torch.cuda.synchronize(info.device)
                dt = time.perf_counter() - t0
                state.sitting["train_time_s"] += dt
                measure_sitting()
                self._emit("step", {"step": state.step, **last})
                if not last["finite"]:
                    self._skipped(last)
                else:
                    self.progress.advance(cfg.tokens_per_step(), dt)
                    if state.step % cfg.log_every == 0 or state.step in (total, start_step + 1):
                        self._log_step(last, self.progress.interval_rate())
                    if self._due(cfg.eval_every, fraction_steps):
                        self._eval_and_log()
                if du.any_true(self.stop.reason is not None, info):  # on every path, skipped steps too
                    interrupted = True
                    break
                if last["finite"] and self._due(cfg.ckpt_every):
                    self.save()
        finally:
            self.progress.close()
        if self.log is not None and self.log.sampler is not None:
            self.log.sampler.sample()  # every run, however short, records its devices at least once
        measure_sitting()
        self.save()
        if not interrupted:
            self.stop.finishing = True
            self._eval_and_log(final=True)
            self._save_final()
            du.barrier(info)
        measure_sitting()
        return self._summary(interrupted)

    def _save_final(self) -> None:
        """``final/`` (``save_pretrained``) on rank 0; under FSDP the shards are gathered into a fresh
        unsharded copy first (collective), so ``final/`` is the same folder whatever the parallel mode."""
        s, state = self.setup, self.state
        model = parallel.unsharded(s.models.built, lambda: build_run_model(self.cfg, s.plan), s.info.is_main)
        if s.info.is_main:
            figures = {**state.last_val, "steps": state.step, "tokens": state.tokens}
            args = (s.plan.data, s.plan.meta, s.record, figures, self.cfg.seq_len)
            s.run_dir.save_final(model, extra=lambda folder: hub.write_final_files(folder, model, *args))

    def _skipped(self, last: dict[str, Any]) -> None:
        state = self.state
        if self.setup.info.is_main:
            progress.log(
                f"non-finite loss {last['loss']} or gradient norm {last['grad_norm']} at step "
                f"{state.step + 1}: update skipped ({state.nonfinite_run} in a row, "
                f"{state.nonfinite_total} in total)"
            )
        if state.nonfinite_run >= self.cfg.max_consecutive_nonfinite:
            found, _ = ckpt.latest_checkpoint(self.setup.run_dir.checkpoints, check_hash=False)
            where = f"the last good checkpoint is {found}" if found else "no checkpoint was written yet"
            raise FloatingPointError(
                f"stopping: {state.nonfinite_run} consecutive non-finite steps (max_consecutive_nonfinite="
                f"{self.cfg.max_consecutive_nonfinite}); {where}; lower lr or check the data"
            )

    def _log_step(self, last: dict[str, Any], rate: float | None) -> None:
        state = self.state
        record = {
            "step": state.step,
            "tokens": state.tokens,
            **{k: last[k] for k in ("loss", "lr", "grad_norm")},
        }
        record.update(tokens_per_s=rate, nonfinite_skipped=state.nonfinite_total)
        # every activation shape parameter as a table {slot: value} under its name (k, lambda, beta, ...)
        record.update(shape_values(self.setup.models.built))
        state.last_train = record
        self._record(record)
        self.progress.step(state.step, last["loss"], rate)

    def _eval_and_log(self, final: bool = False) -> None:
        """An evaluation, logged: on ``eval_batches x batch_size`` windows spread over the validation split
        (:mod:`mswelu.training.evaluation`), or all of it (``eval_batches=0``); the ``final`` one scores the
        whole split, per document too, and is marked so (a resumed run that finishes redoes it, and drops
        an earlier sitting's)."""
        cfg, state = self.cfg, self.state
        sample = None if final or not cfg.eval_batches else cfg.eval_batches * cfg.batch_size
        result = self.setup.evaluator(self.setup.models.compiled, sample, final)
        if final and self.setup.info.is_main and "documents" in result:  # (a task's evaluation has none)
            self.setup.run_dir.write_documents(state.step, state.tokens, result)
        result = {k: v for k, v in result.items() if k not in ("documents", "windows")}
        state.last_val = result
        self._emit("eval", {"step": state.step, **result})
        self._record(
            {"step": state.step, "tokens": state.tokens, **result, **({"final": True} if final else {})}
        )
        scope, scored = result.get("val_scope"), result.get("val_tokens")
        self.progress.eval(state.step, result["val_loss"], result["val_bpb"], scope, scored)

    def _summary(self, interrupted: bool) -> dict[str, Any]:
        """``summary.json`` (:func:`mswelu.runs.metrics_log.run_summary`); rank 0 writes it."""
        s, state = self.setup, self.state
        figures = {"run_dir": str(s.plan.out), "run_name": s.plan.out.name, "steps": state.step}
        figures.update(tokens=state.tokens, parameters=s.n_params, train_loss=state.last_train.get("loss"))
        figures.update(nonfinite_skipped=state.nonfinite_total, interrupted=interrupted)
        figures.update(stop_reason=self.stop.reason, device=str(s.info.device))
        figures.update(autocast="bf16" if s.autocast_dtype is not None else None)  # what dtype="auto" chose
        figures.update(is_main=s.info.is_main, shape=shape_values(s.models.built))
        summary = run_summary(s.record, figures, state.spent(), state.last_val)
        if s.info.is_main:
            s.run_dir.write_summary(summary)
        return summary
