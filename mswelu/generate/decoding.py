"""Sampling and decoding: filters on logits, a decode loop with recurrent state (O(1) per token) or full
recomputation (the reference: the same tokens), batches of prompts, the decode-speed comparison, and loading a
run's model with its tokenizer.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import mswelu.data
from mswelu.base.errors import check_choice
from mswelu.base.hf_compat import cache_kwarg, output_cache
from mswelu.models.build import max_context
from mswelu.runs import folder as runs
from mswelu.runs import model as run_model

__all__ = [
    "DECODE_MODES",
    "SamplingConfig",
    "decode",
    "decode_benchmark",
    "decode_speed",
    "describe_benchmark",
    "generate_text",
    "load_model",
    "max_context",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]

#: how :func:`decode` continues a sequence (see the module docstring)
DECODE_MODES = ("recurrent", "recompute")


@dataclass
class SamplingConfig:
    """How to pick the next token. ``temperature=0`` is greedy; ``top_k=0`` and ``top_p=1`` disable them."""

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    max_new_tokens: int = 100

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if isinstance(self.top_k, bool) or int(self.top_k) != self.top_k or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if (
            isinstance(self.max_new_tokens, bool)
            or int(self.max_new_tokens) != self.max_new_tokens
            or self.max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens}")
        self.top_k, self.max_new_tokens = int(self.top_k), int(self.max_new_tokens)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Logits below the k-th largest to -inf (ties kept); ``k <= 0`` or ``k >= vocab``: unchanged."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the fewest likeliest tokens summing to ``p`` (at least one)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    before = torch.cumsum(probs, dim=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = before >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(
    logits: torch.Tensor, cfg: SamplingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V): temperature, then top-k, then top-p."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (batch, vocab), got shape {tuple(logits.shape)}")
    logits = logits.float()
    if cfg.temperature == 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits / cfg.temperature, cfg.top_k), cfg.top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _forward(model: Any, ids: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
    """Last-position logits and the updated cache (under whatever name the installed transformers uses)."""
    kwargs = {} if cache is None else {cache_kwarg(model): cache}
    out = model(input_ids=ids, use_cache=True, **kwargs)
    return out.logits[:, -1, :], output_cache(out)


@torch.inference_mode()
def decode(
    model: Any,
    input_ids: torch.Tensor,
    cfg: SamplingConfig,
    mode: str = "recurrent",
    generator: torch.Generator | None = None,
    eos_token_id: int | None = None,
) -> torch.Tensor:
    """Continue ``input_ids`` (B, L); a row past ``eos_token_id`` keeps emitting it."""
    check_choice("decode mode", mode, DECODE_MODES)
    if input_ids.dim() != 2 or input_ids.size(1) == 0:
        raise ValueError(f"input_ids must be (batch, length>=1), got shape {tuple(input_ids.shape)}")
    limit = max_context(model)
    total = input_ids.size(1) + cfg.max_new_tokens
    if limit is not None and total > limit:
        raise ValueError(
            f"prompt ({input_ids.size(1)} tokens) + {cfg.max_new_tokens} new tokens exceeds "
            f"the model's context of {limit}"
        )
    device = next(model.parameters()).device
    ids = input_ids.to(device)
    was_training = model.training
    model.eval()
    done = torch.zeros(ids.size(0), dtype=torch.bool, device=device)
    try:
        cache = None
        logits = None
        for step in range(cfg.max_new_tokens):
            if mode == "recompute":
                logits = model(input_ids=ids, use_cache=False).logits[:, -1, :]
            elif step == 0:
                logits, cache = _forward(model, ids, None)
            else:
                logits, cache = _forward(model, ids[:, -1:], cache)
            nxt = sample_next(logits, cfg, generator)
            if eos_token_id is not None:
                nxt = torch.where(done, torch.full_like(nxt, eos_token_id), nxt)
                done |= nxt == eos_token_id
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            if eos_token_id is not None and bool(done.all()):
                break
    finally:
        model.train(was_training)
    return ids


def generate_text(
    model: Any,
    tokenizer: Any,
    prompts: str | Sequence[str],
    cfg: SamplingConfig | None = None,
    seed: int | None = 0,
    mode: str = "recurrent",
    stop_at_eos: bool = True,
    stats: dict[str, Any] | None = None,
) -> list[str]:
    """Continuations of prompts, those of equal token length as one batch (no padding)."""
    cfg = cfg or SamplingConfig()
    single = isinstance(prompts, str)
    prompts = [prompts] if single else list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    eos = getattr(tokenizer, "eos_id", None)
    encoded = []
    for p in prompts:
        ids = tokenizer.encode(p) if p else []
        encoded.append(ids or ([eos] if eos is not None else []))
        if not encoded[-1]:
            raise ValueError("empty prompt and the tokenizer has no end-of-text token to start from")
    generator = torch.Generator(device=next(model.parameters()).device)
    if seed is not None:
        generator.manual_seed(int(seed))
    else:
        generator.seed()
    out: list[str] = [""] * len(prompts)
    generated = 0
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(encoded):
        by_len.setdefault(len(ids), []).append(i)
    for length, rows in sorted(by_len.items()):
        batch = torch.tensor([encoded[i] for i in rows], dtype=torch.long)
        result = decode(
            model, batch, cfg, mode=mode, generator=generator, eos_token_id=eos if stop_at_eos else None
        )
        for r, i in enumerate(rows):
            new = result[r, length:].tolist()
            if stop_at_eos and eos is not None and eos in new:
                new = new[: new.index(eos)]
            out[i] = tokenizer.decode(new)
            generated += len(new)
    if stats is not None:
        stats["new_tokens"] = generated
    return out


def decode_speed(
    model: Any,
    prompt_ids: torch.Tensor,
    new_tokens: int = 64,
    modes: Sequence[str] = DECODE_MODES,
    repeats: int = 5,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """Greedy decoding in each mode: tokens/s from the median of ``repeats`` timed runs after ``warmup``
    untimed ones, alternating modes so a machine's load affects them alike, and whether every mode produced
    the same tokens."""
    for mode in modes:
        check_choice("decode mode", mode, DECODE_MODES)
    repeats, warmup = max(1, int(repeats)), max(0, int(warmup))
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens)
    outputs: dict[str, torch.Tensor] = {}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(warmup):
        for mode in modes:
            outputs[mode] = decode(model, prompt_ids, cfg, mode=mode)
    for _ in range(repeats):
        for mode in modes:
            t0 = time.perf_counter()
            outputs[mode] = decode(model, prompt_ids, cfg, mode=mode)
            times[mode].append(time.perf_counter() - t0)
    n = prompt_ids.size(0) * new_tokens
    first = outputs[modes[0]]
    rows = []
    for mode in modes:
        median = statistics.median(times[mode])
        rows.append(
            {
                "mode": mode,
                "batch": prompt_ids.size(0),
                "prompt_len": prompt_ids.size(1),
                "new_tokens": new_tokens,
                "warmup": warmup,
                "repeats": repeats,
                "seconds": median,
                "seconds_min": min(times[mode]),
                "seconds_max": max(times[mode]),
                "tokens_per_s": n / median if median > 0 else math.inf,
                "same_tokens": bool(torch.equal(outputs[mode], first)),
            }
        )
    return rows


def decode_benchmark(
    model: Any,
    tokenizer: Any,
    new_tokens: int,
    batch_size: int = 1,
    prompt: str = "The ",
    prompt_tokens: int = 8,
    repeats: int = 5,
    warmup: int = 1,
) -> list[dict[str, Any]]:
    """:func:`decode_speed` on repeated prompts: what ``generate --bench`` and notebook 06 time."""
    prompt_ids = torch.tensor([tokenizer.encode(prompt)[:1] * prompt_tokens] * batch_size, dtype=torch.long)
    limit = max_context(model)
    n = min(new_tokens, limit - prompt_ids.size(1)) if limit else new_tokens
    return decode_speed(model, prompt_ids, new_tokens=n, repeats=repeats, warmup=warmup)


def describe_benchmark(rows: Sequence[Mapping[str, Any]]) -> str:
    """What :func:`decode_speed` measured, in words (a speed means little without it)."""
    if not rows:
        return "no decoding measured"
    r = rows[0]
    warm = f"{r['warmup']} warm-up run{'s' if r['warmup'] != 1 else ''} per mode"
    return (
        f"greedy decoding of {r['new_tokens']} new tokens after a prompt of {r['prompt_len']} tokens, "
        f"batch {r['batch']} ({r['batch'] * r['new_tokens']} tokens per run); {warm}, "
        f"median of {r['repeats']} timed run{'s' if r['repeats'] != 1 else ''} per mode"
    )


def load_model(run: str | os.PathLike[str] | None = None, device: str = "cpu") -> tuple[Any, Any, Path]:
    """(model, tokenizer, model_dir) of a run, a run name or a saved model; ``None``: the newest run."""
    path = runs.resolve_run(run, require_model=True)
    model, model_dir = run_model.load_model(path, device=device)
    return model, mswelu.data.get_tokenizer(run_model.tokenizer_name(model_dir)), model_dir
