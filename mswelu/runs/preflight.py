"""Every check a run needs before it writes anything: data, vocabulary against the model, model config, run
folder and resume checkpoint. A non-empty run folder is continued only with ``resume``, replaced only with
``overwrite=True`` (and only if it looks like a run), else refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mswelu.base.progress import log
from mswelu.models.build import check_overrides, parse_model_name
from mswelu.models.configuration import PRESETS, MsweluConfig
from mswelu.runs.folder import CHECKPOINTS, FINAL, SUMMARY, is_empty, looks_like_run, read_json
from mswelu.runs.resume import check_compatible, find_resume
from mswelu.training.config import TrainConfig

__all__ = ["RunPlan", "plan_run"]


@dataclass
class RunPlan:
    """What :func:`plan_run` found: where to write, what to read, what to resume."""

    data: Path | str  # a prepared dataset folder, or a task source (``task:...``)
    meta: dict[str, Any]
    out: Path
    model_vocab: int
    model_overrides: dict[str, Any] = field(default_factory=dict)  # the model config beyond the preset
    resume_from: Path | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # newer checkpoints that are unusable
    clear: bool = False  # overwrite: remove the folder's old contents first
    changed: list[str] = field(default_factory=list)  # settings changed on resume that alter the numbers
    finished: dict[str, Any] | None = None  # the summary of a finished run asked to resume: nothing to do

    def finished_notice(self) -> str:
        """What a rerun of a finished run says (it changes nothing)."""
        steps = self.finished["steps"]
        return (
            f"{self.out.name} is already finished ({steps} of {steps} steps, final/ and summary.json "
            "written): nothing was changed. To train further raise max_steps (the schedule then changes); "
            "to start over pass overwrite"
        )


def plan_run(cfg: TrainConfig, world_size: int) -> RunPlan:
    """The plan for ``cfg``, or a ValueError saying what is wrong; writes nothing. Run on one rank only."""
    from mswelu.data import TokenLoader, default_dataset, verify_dataset
    from mswelu.data.tasks import TaskSource, is_task_source

    if is_task_source(cfg.data):
        task = TaskSource(cfg.data)
        if cfg.seq_len != task.seq_len:
            raise ValueError(
                f"data {cfg.data!r} makes examples of {task.seq_len} input tokens; set seq_len={task.seq_len}"
            )
        vocab = int(cfg.model.get("vocab_size", task.vocab_size))
        return _plan_output(cfg, world_size, cfg.data, task.meta(), vocab)
    if cfg.data is None:
        data = Path(default_dataset())
    else:
        data = Path(cfg.data).expanduser()
        if not data.is_dir():
            raise ValueError(
                f"data folder {data} does not exist; prepare it with `python -m mswelu.data prepare`"
            )
    meta = verify_dataset(data)  # sizes, checksums, token range
    probe = TokenLoader(
        data,
        "train",
        batch_size=cfg.micro(world_size),
        seq_len=cfg.seq_len,
        seed=cfg.seed,
        rank=0,
        world_size=world_size,
    )
    TokenLoader(data, "val", batch_size=1, seq_len=cfg.seq_len, mode="sequential")
    model_vocab = int(cfg.model.get("vocab_size", meta["vocab_size"]))
    probe.check_vocab(model_vocab)
    return _plan_output(cfg, world_size, data, meta, model_vocab, probe.check_vocab)


def _plan_output(
    cfg: TrainConfig,
    world_size: int,
    data: Path | str,
    meta: dict[str, Any],
    model_vocab: int,
    check_vocab: Callable[[int], None] | None = None,
) -> RunPlan:
    """The model config's checks, the run folder's policy and the checkpoint to resume, for ``data``."""
    if model_vocab < int(meta["vocab_size"]):
        raise ValueError(
            f"the data use {meta['vocab_size']} token ids, which do not fit a model with "
            f"vocab_size={model_vocab}"
        )
    base, ref = parse_model_name(cfg.preset)
    check_overrides(cfg.preset, cfg.model)
    overrides = {k: v for k, v in cfg.model.items() if k != "vocab_size"}
    eos = int(meta["eos_id"])  # the data's end-of-text id (a Transformer's start token too, as GPT-2's)
    overrides = {"eos_token_id": eos, **({} if ref is None else {"bos_token_id": eos}), **overrides}
    if ref is None:  # build the model config now: bad overrides fail before any work
        mcfg = MsweluConfig.for_run(base, model_vocab, cfg.seq_len, cfg.activation, **overrides)
        if check_vocab is not None:
            check_vocab(mcfg.vocab_size)
        table = {**PRESETS[base], **overrides}.get("max_position_embeddings", 1024)
        if mcfg.pos_embedding == "learned" and table < cfg.seq_len:
            log(
                f"preset {base!r} has {table} learned positions; this run's model gets {cfg.seq_len} to fit "
                f"seq_len={cfg.seq_len}"
            )
    elif cfg.activation is not None:
        raise ValueError(f"activation={cfg.activation!r} applies to mswelu presets only, not {cfg.preset!r}")

    out = cfg.out_dir()
    if out.exists() and not out.is_dir():
        raise ValueError(f"run folder {out} exists and is not a folder")
    plan = RunPlan(data=data, meta=meta, out=out, model_vocab=model_vocab, model_overrides=overrides)
    if cfg.resume and cfg.overwrite:
        raise ValueError(
            "resume and overwrite contradict each other: resume continues the run in the folder, overwrite "
            "replaces it; pass one of them"
        )
    if cfg.resume:
        plan.resume_from, plan.skipped = find_resume(cfg.resume, out)
        for path, why in plan.skipped:
            log(f"ignoring checkpoint {path}: {why}")
        if plan.resume_from is not None:
            plan.changed = check_compatible(plan.resume_from, cfg.to_dict(), world_size, meta)
            if plan.changed:
                log(f"resuming with changed {plan.changed}: the run will differ from an uninterrupted one")
            plan.finished = _finished(plan.resume_from, cfg, out)
    nonempty = not is_empty(out)
    if nonempty and plan.resume_from is None:
        if cfg.resume == "auto" and not plan.skipped and not (out / CHECKPOINTS).exists():
            pass  # "auto" with nothing to resume from: start fresh in place (said below)
        elif cfg.overwrite:
            if not looks_like_run(out):
                raise ValueError(f"overwrite=True but {out} does not look like a run folder; not deleting it")
            plan.clear = True
        elif cfg.resume == "auto":
            reasons = "; ".join(f"{p.name}: {why}" for p, why in plan.skipped) or "no checkpoints"
            raise ValueError(f"resume='auto' but {out} holds no usable checkpoint ({reasons})")
        else:
            raise ValueError(
                f"run folder {out} exists and is not empty: pass resume='auto' (--resume auto) to "
                "continue it, overwrite=True (--overwrite) to start over, or another out / run_name"
            )
    if cfg.resume == "auto" and plan.resume_from is None:
        log(f"resume='auto': {out} holds no checkpoint yet; starting fresh there")
    return plan


def _finished(checkpoint: Path, cfg: TrainConfig, out: Path) -> dict[str, Any] | None:
    """The summary of the run in ``out`` when ``checkpoint`` is its last step; ValueError past it."""
    step = int(read_json(checkpoint / "trainer_state.json")["step"])
    total = cfg.total_steps()
    if step > total:
        raise ValueError(
            f"cannot resume from {checkpoint}: it is at step {step}, past this run's last step {total} "
            "(max_steps / max_tokens): raise the budget, or resume from an earlier checkpoint"
        )
    summary = read_json(out / SUMMARY)
    done = summary is not None and summary.get("interrupted") is False and summary.get("steps") == step
    return summary if step == total and done and (out / FINAL).is_dir() else None
