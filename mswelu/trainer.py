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
5. at the end: a final checkpoint, validation over the whole split, ``final/`` (with the tokenizer, the
   generation config and a model card: :mod:`mswelu.hub`), ``summary.json``.

Rank 0 also samples the devices on a background thread every ``monitor_every`` seconds
(:mod:`mswelu.devices`); the loop writes the samples with its next record, so only the training thread
writes ``metrics.jsonl`` and the trackers.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mswelu import checkpoint as ckpt
from mswelu import distributed as du
from mswelu import evaluation, hub, parallel, progress, resume, sharded_checkpoint
from mswelu.devices import DeviceSampler
from mswelu.metrics_log import MetricsLog
from mswelu.models import build_model, count_parameters, lm_loss, shape_values
from mswelu.ops.lm_loss import split_window
from mswelu.optim import build_optimizer, set_hyperparameters
from mswelu.preflight import RunPlan, plan_run
from mswelu.runs import RunLock, RunWriter
from mswelu.schedule import LRSchedule
from mswelu.stop import StopRequest
from mswelu.train_config import TrainConfig


class Trainer:
    """One training run; see the module docstring. ``callbacks``: ``cb(event, trainer, info)``."""

    def __init__(self, cfg: TrainConfig, callbacks: Sequence[Callable[..., Any]] = ()) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.stop = StopRequest()
        self.log: MetricsLog | None = None
        self.sampler: DeviceSampler | None = None

    # ------------------------------------------------------------------------------------ set-up
    def _setup(self, info: du.DistInfo, plan: RunPlan) -> None:
        from mswelu.data import TokenLoader

        cfg = self.cfg
        self.info, self.plan, self.out, self.device = info, plan, plan.out, info.device
        self.run_dir = RunWriter(plan.out)
        self.accum, self.micro = cfg.grad_accum(info.world_size), cfg.micro(info.world_size)
        self.total_steps, self.tokens_per_step = cfg.total_steps(), cfg.tokens_per_step()
        if self.device.type == "cpu":
            # The scan's backward produces subnormal floats (exp(delta * A) of long decays), which x86 CPUs
            # process many times slower; flushing them left a 12-step `small` run's loss bit-identical
            # (`python -m mswelu.bench model --keep-denormals` shows the effect).
            torch.set_flush_denormal(True)
        self.autocast_dtype = torch.bfloat16 if cfg.uses_bf16(self.device.type) else None
        if info.is_main:
            self.run_dir.prepare(clear=plan.clear)
        du.barrier(info)

        ckpt.seed_everything(cfg.seed)
        model = self._build_model().to(self.device)
        if cfg.activation_checkpointing:
            enable = (
                getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            )
            enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.raw_model = model
        self.n_params = count_parameters(self.raw_model)
        self._emit("model", {"model": self.raw_model})
        sharding = cfg.parallel == "fsdp" and info.enabled
        full_state = None  # a one-process (full) checkpoint resumed under FSDP: read before sharding
        if sharding and plan.resume_from is not None and ckpt.checkpoint_format(plan.resume_from) == "full":
            plain = build_optimizer(self.raw_model, cfg.optimizer, **cfg.optimizer_kwargs())
            full_state = sharded_checkpoint.full_to_sharded(plan.resume_from, self.raw_model, plain)
        if sharding:  # fully_shard changes the model in place: raw_model, eval_model and model are one object
            self.raw_model = parallel.wrap(model, info, "fsdp", cfg.fsdp_param_dtype, cfg.cpu_offload)
        self.optimizer = build_optimizer(self.raw_model, cfg.optimizer, **cfg.optimizer_kwargs())
        if full_state is not None:
            sharded_checkpoint.apply_full_optimizer_state(
                self.raw_model, self.optimizer.optimizers, full_state[0]
            )
        self.schedule = LRSchedule(
            self.optimizer, self.total_steps, cfg.warmup, cfg.schedule, cfg.min_lr_ratio, cfg.decay_fraction
        )
        self.eval_model = torch.compile(self.raw_model) if cfg.compile else self.raw_model
        self.model = self.eval_model if sharding else parallel.wrap(self.eval_model, info, "ddp")
        self.loaders = TokenLoader.for_micro_steps(
            plan.data, self.micro, cfg.seq_len, cfg.seed, info.rank, info.world_size, self.accum
        )
        self.evaluator = evaluation.Evaluator(
            plan.data, plan.meta, cfg.seq_len, self.micro, info, self._autocast
        )
        self.step = self.tokens = self.nonfinite_total = self.nonfinite_run = 0
        self.last_val: dict[str, Any] = {}
        self.last_train: dict[str, Any] = {}  # the last training record logged (kept in checkpoints)
        self.spent = {"train_time_s": 0.0, "wall_time_s": 0.0, "trained_tokens": 0}  # over every sitting
        if plan.resume_from is not None:
            self._restore(plan.resume_from, preloaded=None if full_state is None else full_state[1])
        # config.json, also stored in every checkpoint: every field, derived values and the model's config
        self.record = cfg.record(info.world_size, plan.data, self.out, plan.meta, self.raw_model, self.device)
        du.run_on_main(self._open_log, info)  # a tracker that cannot start stops every rank
        if info.is_main:
            self.run_dir.write_config(self.record)
            if cfg.monitor_interval() > 0:
                try:
                    self.sampler = DeviceSampler(cfg.monitor_interval()).start()
                except ImportError as exc:  # psutil is a dependency; a broken install loses the figures only
                    progress.log(f"no device figures: {exc} (pip install psutil)")

    def _open_log(self) -> None:
        resumed = self.step if self.plan.resume_from is not None else None
        learned = {p for slot in self.record.get("_shape_slots") or () for p in slot["learnable"]}
        trackers = self.cfg.resolved_trackers()
        self.log = MetricsLog(self.run_dir, resumed, trackers, shape_scalars=learned, config=self.record)
        if resumed is not None and self.last_train and self.log.dropped_torn_line:
            steps = self.log.logged_steps()
            if self.last_train["step"] not in steps:  # the torn line was the checkpoint's own step
                self.log.write(self.last_train)
                progress.log(f"the step-{self.last_train['step']} record restored from the checkpoint")

    # ------------------------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Checkpoint the current step (collective under DDP: every rank must call it)."""
        counters = {"step": self.step, "tokens": self.tokens, "nonfinite_total": self.nonfinite_total}
        counters.update(last_val=self.last_val, last_train=self.last_train, **self._spent_now())
        if self.log is not None:
            self.log.sync()
        keep = self.cfg.keep_checkpoints or None
        parts = (self.raw_model, self.optimizer, self.loaders, self.schedule)
        resume.save(self.run_dir.checkpoints, counters, *parts, self.record, keep, self.info)

    def _build_model(self) -> nn.Module:
        """The run's model, freshly initialised (seeded by the caller)."""
        cfg, plan = self.cfg, self.plan
        return build_model(cfg.preset, plan.model_vocab, cfg.seq_len, cfg.activation, **plan.model_overrides)

    def _restore(self, path: Path, preloaded: dict[str, Any] | None = None) -> None:
        counters = resume.restore(path, self.raw_model, self.optimizer, self.loaders, self.info, preloaded)
        self.step, self.tokens = counters["step"], counters["tokens"]
        self.nonfinite_total, self.last_val = counters["nonfinite_total"], counters["last_val"]
        self.last_train = counters["last_train"]
        self.spent = {k: counters[k] for k in ("train_time_s", "wall_time_s", "trained_tokens")}
        set_hyperparameters(self.optimizer, self.cfg.lr, self.cfg.weight_decay)
        if self.info.is_main:
            progress.log(f"resumed from {path} at step {self.step} ({self.tokens} tokens)")

    # ------------------------------------------------------------------------------------ steps
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def loss_on(self, model: nn.Module, window: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy (nats) of ``model`` on a ``(B, L+1)`` window."""
        x, y = split_window(window)
        with self._autocast():
            return lm_loss(model, x, y)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step (or a skipped one). Returns what it measured."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        for i, loader in enumerate(self.loaders):
            window = next(loader).to(self.device, non_blocking=True)
            last = i == self.accum - 1  # gradients are synchronised on the last micro-step only
            with parallel.grad_sync(self.model, last or not self.info.enabled):
                loss = self.loss_on(self.model, window) / self.accum
                loss.backward()
            loss_sum += loss.detach()
        loss_value = float(du.all_reduce_mean(loss_sum, self.info))
        parallel.sync_replicated_grads(self.raw_model, self.info)
        params = [p for p in self.raw_model.parameters() if p.grad is not None]
        max_norm = self.cfg.grad_clip if self.cfg.grad_clip > 0 else float("inf")
        if parallel.is_fsdp(self.raw_model):  # sharded and replicated gradients: one global norm
            grad_norm = parallel.clip_grad_norm(params, max_norm)
        else:
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

    def evaluate(self, whole_split: bool = False, per_document: bool = False) -> dict[str, Any]:
        """Validation on the whole split (``whole_split`` or ``eval_batches=0``), else on ``eval_batches x
        batch_size`` windows spread over it (see :mod:`mswelu.evaluation`); ``per_document`` adds the sums
        per document and window."""
        cfg = self.cfg
        sample = None if whole_split or not cfg.eval_batches else cfg.eval_batches * cfg.batch_size
        self.last_val = self.evaluator(self.eval_model, sample=sample, per_document=per_document)
        return self.last_val

    def request_stop(self, reason: str = "request") -> None:
        """Stop after the current step with a checkpoint (what SIGINT/SIGTERM do)."""
        self.stop.request(reason)

    def _emit(self, event: str, info: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb(event, self, info)

    def _record(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self._write_device_samples()
            self.log.write(record)
            self._emit("log", record)

    def _write_device_samples(self) -> None:
        """The device samples taken since the last record, at the current step (``"device"`` events)."""
        if self.log is None or self.sampler is None:
            return
        samples = self.sampler.drain()
        self.log.write_device(samples, self.step, self.tokens)
        for s in samples:
            self._emit("device", {"step": self.step, **s})

    def _close_log(self, summary: dict[str, Any] | None) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self._write_device_samples()
            self.sampler = None
        if self.log is not None:
            self.log.close(summary, failed=summary is None)
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
                    progress.log(
                        f"{plan.out.name} is already finished ({plan.finished['steps']} of "
                        f"{plan.finished['steps']} steps, final/ and summary.json written): nothing was "
                        "changed. To train further raise max_steps (the schedule then changes); to start "
                        "over pass overwrite"
                    )
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
        return self.step < self.total_steps and ((every and self.step % every == 0) or self.step in extra)

    def _loop(self) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        start_step, start_tokens, wall0 = self.step, self.tokens, time.perf_counter()
        train_time = 0.0
        fraction_steps = {max(1, round(f * self.total_steps)) for f in cfg.eval_fractions}
        last: dict[str, Any] = {}
        interrupted = False
        self.progress = progress.RunProgress(
            self.out.name, self.total_steps, self.step, info.is_main and cfg.progress
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
                else:
                    self.progress.advance(self.tokens_per_step, dt)
                    if self.step % cfg.log_every == 0 or self.step in (self.total_steps, start_step + 1):
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
        if self.sampler is not None:
            self.sampler.sample()  # every run, however short, records its devices at least once
        self._sitting = (train_time, time.perf_counter() - wall0, self.tokens - start_tokens)
        self.save()
        if not interrupted:
            self.stop.finishing = True
            self._eval_and_log(final=True)
            self._save_final()
            du.barrier(info)
        self._sitting = (train_time, time.perf_counter() - wall0, self.tokens - start_tokens)
        return self._summary(interrupted)

    def _spent_now(self) -> dict[str, float]:
        """Training time, wall time and tokens trained over every sitting of the run, this one included."""
        train, wall, tokens = getattr(self, "_sitting", (0.0, 0.0, 0))
        return {
            "train_time_s": self.spent["train_time_s"] + train,
            "wall_time_s": self.spent["wall_time_s"] + wall,
            "trained_tokens": self.spent["trained_tokens"] + tokens,
        }

    def _save_final(self) -> None:
        """``final/`` (``save_pretrained``) on rank 0; under FSDP the shards are gathered into a fresh
        unsharded copy first (collective), so ``final/`` is the same folder whatever the parallel mode."""
        model = self.raw_model
        if parallel.is_fsdp(model):
            state = parallel.full_state_dict(model)
            if not self.info.is_main:
                return
            with torch.device("meta"):
                model = self._build_model()
            model.load_state_dict(state, assign=True)
            model.tie_weights()
        if self.info.is_main:
            self.run_dir.save_final(model, extra=lambda folder: self._hub_files(folder, model))

    def _hub_files(self, folder: Path, model: nn.Module) -> None:
        """Tokenizer, generation config and model card for ``final/`` (:mod:`mswelu.hub`)."""
        from mswelu.data import tokenizer_name
        from mswelu.models import max_context

        figures = {**self.last_val, "steps": self.step, "tokens": self.tokens}
        figures.update(shape=shape_values(model), context=max_context(model) or self.cfg.seq_len)
        name = tokenizer_name(self.plan.data, self.plan.meta)
        hub.write_hub_files(folder, model, name, self.record, figures, self.plan.meta)

    def _skipped(self, last: dict[str, Any]) -> None:
        if self.info.is_main:
            progress.log(
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

    def _log_step(self, last: dict[str, Any], rate: float | None) -> None:
        record = {
            "step": self.step,
            "tokens": self.tokens,
            **{k: last[k] for k in ("loss", "lr", "grad_norm")},
        }
        # every activation shape parameter as a table {slot: value} under its name (k, lambda, beta, ...)
        record.update(
            tokens_per_s=rate, nonfinite_skipped=self.nonfinite_total, **shape_values(self.raw_model)
        )
        self.last_train = record
        self._record(record)
        self.progress.step(self.step, last["loss"], rate)

    def _eval_and_log(self, final: bool = False) -> None:
        """An evaluation, logged; the ``final`` one scores the whole split, per document too, and is marked
        so (a resumed run that finishes redoes it, and drops an earlier sitting's)."""
        result = self.evaluate(whole_split=final, per_document=final)
        if final and self.info.is_main:
            self.run_dir.write_documents(self.step, self.tokens, result)
        result = {k: v for k, v in result.items() if k not in ("documents", "windows")}
        self.last_val = result
        self._emit("eval", {"step": self.step, **result})
        self._record(
            {"step": self.step, "tokens": self.tokens, **result, **({"final": True} if final else {})}
        )
        scope, scored = result.get("val_scope"), result.get("val_tokens")
        self.progress.eval(self.step, result["val_loss"], result["val_bpb"], scope, scored)

    def _summary(self, interrupted: bool) -> dict[str, Any]:
        """``summary.json``: the run's identity (from the config record) and its final figures. Times and
        tokens/s cover every sitting of a resumed run (training time only for tokens/s)."""
        spent = self._spent_now()
        rate = spent["trained_tokens"] / spent["train_time_s"] if spent["train_time_s"] > 0 else None
        wall = spent["wall_time_s"]
        c = self.record
        summary = {"run_dir": str(self.out), "run_name": self.out.name}
        summary.update({k: c[k] for k in ("preset", "activation", "optimizer", "seed")})
        summary.update(
            {k: c[f"_{k}"] for k in ("total_steps", "tokens_per_step", "world_size", "grad_accum")}
        )
        summary.update(
            steps=self.step,
            tokens=self.tokens,
            parameters=self.n_params,
            train_loss=self.last_train.get("loss"),
        )
        summary.update({k: self.last_val.get(k) for k in ("val_loss", "val_ppl", "val_bpb")})
        summary.update(tokens_per_s=rate, nonfinite_skipped=self.nonfinite_total, wall_time_s=wall)
        summary.update(train_time_s=spent["train_time_s"])
        summary.update(
            interrupted=interrupted,
            stop_reason=self.stop.reason,
            device=str(self.device),
            autocast="bf16" if self.autocast_dtype is not None else None,  # what dtype="auto" chose
        )
        summary.update(is_main=self.info.is_main, baseline=c.get("_baseline"), **shape_values(self.raw_model))
        if self.info.is_main:
            self.run_dir.write_summary(summary)
        return summary
