"""Text generation on top of a trained model: sampling filters, a decode loop with recurrent state or full
recomputation, batches of prompts, a decode-speed comparison, and an interactive CLI.

    python -m mswelu.generate --run runs/main          # interactive: /temp /top_p /top_k /tokens /help /quit
    python -m mswelu.generate --run runs/main --prompt "ROMEO:" --prompt "To be" --tokens 80
    python -m mswelu.generate --run runs/main --bench  # recurrent vs recompute tokens/s

The filters are pure functions on logits; :func:`decode` applies them at every step. ``mode="recurrent"``
feeds one token per step through the model's cache (O(1) per token for Mamba: conv + SSM state; KV cache
for attention), ``mode="recompute"`` re-runs the whole sequence every step (the reference: same tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mswelu.hf_compat import cache_kwarg, output_cache
from mswelu.models import max_context

__all__ = [
    "SamplingConfig",
    "apply_command",
    "decode",
    "decode_speed",
    "generate_text",
    "load_model",
    "main",
    "max_context",
    "repl",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]

HELP = """Commands:
  /temp X     temperature (0 = greedy)         /top_p X   nucleus sampling, 0 < X <= 1 (1 = off)
  /top_k N    keep the N most likely (0 = off)  /tokens N  new tokens per reply
  /seed N     reseed the sampler                /show      show the current settings
  /help       this help                         /quit      exit (also /exit, Ctrl-D)
Anything else is a prompt."""


# --------------------------------------------------------------------------- sampling
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
    """Set every logit below the k-th largest (per row) to -inf; ties at the k-th value are kept.
    ``k <= 0`` or ``k >= vocab`` returns the logits unchanged."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability sums to at least ``p``
    (always at least one token); the rest become -inf. ``p >= 1`` returns the logits unchanged."""
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


# --------------------------------------------------------------------------- decoding
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
    """Continue ``input_ids`` (B, L) by ``cfg.max_new_tokens`` tokens; returns (B, L + new).

    ``recurrent`` keeps the model's state between steps; ``recompute`` runs the full sequence each step.
    With ``eos_token_id`` a row that emitted it keeps emitting it, and decoding stops once all rows have.
    """
    if mode not in ("recurrent", "recompute"):
        raise ValueError(f"mode must be 'recurrent' or 'recompute', got {mode!r}")
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
    """Continuations (without the prompt) of one or several prompts. Prompts of equal token length are
    decoded together as one batch (the model takes no padding), so a batch of prompts costs one decode
    per distinct length. A ``stats`` dict receives ``new_tokens``: the tokens generated over all prompts
    (an end-of-text token and what follows it not counted)."""
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
    modes: Sequence[str] = ("recurrent", "recompute"),
    repeats: int = 1,
) -> list[dict[str, Any]]:
    """Greedy decoding of ``new_tokens`` in each mode: tokens/s (best of ``repeats``, generated tokens over
    all rows) and whether every mode produced the same tokens (they must: same model, greedy)."""
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=new_tokens)
    rows, outputs = [], {}
    for mode in modes:
        best = math.inf
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            out = decode(model, prompt_ids, cfg, mode=mode)
            best = min(best, time.perf_counter() - t0)
        outputs[mode] = out
        n = prompt_ids.size(0) * new_tokens
        rows.append(
            {
                "mode": mode,
                "batch": prompt_ids.size(0),
                "prompt_len": prompt_ids.size(1),
                "new_tokens": new_tokens,
                "seconds": best,
                "tokens_per_s": n / best,
            }
        )
    first = next(iter(outputs.values()))
    for row in rows:
        row["same_tokens"] = bool(torch.equal(outputs[row["mode"]], first))
    return rows


# --------------------------------------------------------------------------- loading
def load_model(run: str | os.PathLike[str] | None = None, device: str = "cpu") -> tuple[Any, Any, Path]:
    """(model, tokenizer, model_dir) of a run folder (its ``final/``, or the newest checkpoint of an
    interrupted run), a run name under ``runs/``, or a saved model folder. ``run=None`` takes the newest
    run with a model."""
    from mswelu import runs
    from mswelu.data import get_tokenizer

    path = runs.resolve_run(run, require_model=True)
    model, model_dir = runs.load_model(path, device=device)
    return model, get_tokenizer(runs.tokenizer_name(model_dir)), model_dir


# --------------------------------------------------------------------------- interactive
def apply_command(cfg: SamplingConfig, line: str) -> tuple[SamplingConfig, str, bool]:
    """Apply one ``/command`` to a copy of ``cfg``: (new config, message for the user, quit?).
    Bad values leave the config unchanged and explain why."""
    parts = line.strip().split()
    if not parts or not parts[0].startswith("/"):
        raise ValueError(f"not a command: {line!r}")
    cmd, args = parts[0].lower(), parts[1:]
    if cmd in ("/quit", "/exit", "/q"):
        return cfg, "bye", True
    if cmd in ("/help", "/?"):
        return cfg, HELP, False
    if cmd == "/show":
        return cfg, _describe(cfg), False
    fields = {
        "/temp": ("temperature", float),
        "/temperature": ("temperature", float),
        "/top_p": ("top_p", float),
        "/top_k": ("top_k", int),
        "/tokens": ("max_new_tokens", int),
        "/max_tokens": ("max_new_tokens", int),
    }
    if cmd not in fields:
        return cfg, f"unknown command {cmd}; /help lists them", False
    name, kind = fields[cmd]
    if len(args) != 1:
        return cfg, f"usage: {cmd} VALUE (now {getattr(cfg, name)})", False
    try:
        value = kind(args[0])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        return cfg, f"not changed: {cmd} takes {what}, not {args[0]!r} (now {getattr(cfg, name)})", False
    try:
        new = dataclasses.replace(cfg, **{name: value})
    except ValueError as exc:
        return cfg, f"not changed: {exc}", False
    return new, f"{name} = {getattr(new, name)}", False


def _describe(cfg: SamplingConfig) -> str:
    return f"temperature={cfg.temperature} top_k={cfg.top_k} top_p={cfg.top_p} tokens={cfg.max_new_tokens}"


def _enable_line_editing() -> None:
    """Arrow keys, editing and a history kept across sessions (``~/.cache/mswelu/generate_history``) for
    ``input()`` on a terminal; nothing where readline is missing (Windows) or stdin is not a terminal."""
    if not sys.stdin.isatty():
        return
    try:
        import atexit
        import readline
    except ImportError:
        return
    from mswelu.paths import cache_dir

    history = cache_dir() / "generate_history"
    try:
        history.parent.mkdir(parents=True, exist_ok=True)
        if history.is_file():
            readline.read_history_file(history)
    except OSError:
        return
    readline.set_history_length(1000)
    atexit.register(lambda: _save_history(readline, history))


def _save_history(readline: Any, path: Path) -> None:
    try:
        readline.write_history_file(path)
    except OSError:
        pass


def repl(
    model: Any,
    tokenizer: Any,
    cfg: SamplingConfig | None = None,
    seed: int | None = None,
    input_fn: Callable[[str], str] | None = None,
    print_fn: Callable[..., None] = print,
) -> SamplingConfig:
    """Read prompts and commands until /quit or end of input; returns the final settings."""
    import builtins

    if input_fn is None:
        _enable_line_editing()
    input_fn = input_fn or builtins.input
    cfg = cfg or SamplingConfig()
    limit = max_context(model)
    generator_seed = seed
    print_fn("mswelu interactive generation. " + _describe(cfg) + "\n/help for commands.")
    while True:
        try:
            line = input_fn(">>> ")
        except (EOFError, KeyboardInterrupt):
            print_fn("")
            break
        if not line.strip():
            continue
        if line.strip().startswith("/"):
            if line.strip().split()[0] == "/seed":
                try:
                    generator_seed = int(line.split()[1])
                    print_fn(f"seed = {generator_seed}")
                except (IndexError, ValueError):
                    print_fn("usage: /seed N")
                continue
            cfg, msg, stop = apply_command(cfg, line)
            print_fn(msg)
            if stop:
                break
            continue
        run_cfg = cfg
        if limit is not None:
            room = limit - len(tokenizer.encode(line))
            if room < 1:
                print_fn(f"prompt too long for the model's context of {limit} tokens")
                continue
            if room < cfg.max_new_tokens:
                run_cfg = dataclasses.replace(cfg, max_new_tokens=room)
                print_fn(f"(generating {room} tokens: the model's context is {limit})")
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}
        text = generate_text(model, tokenizer, line, run_cfg, seed=generator_seed, stats=stats)[0]
        dt = time.perf_counter() - t0
        if generator_seed is not None:
            generator_seed += 1  # a new continuation for the same prompt next time, still reproducible
        print_fn(line + text)
        n = stats["new_tokens"]
        print_fn(f"[{n} tokens, {n / dt:.1f} tok/s, {dt:.2f} s]" if dt > 0 else f"[{n} tokens]")
    return cfg


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mswelu.generate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", default=None, help="run folder or saved model folder (default: newest run)")
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="prompt to continue (repeat for a batch); without it: interactive",
    )
    p.add_argument("--temperature", "--temp", type=float, default=0.8)
    p.add_argument("--top-k", "--top_k", type=int, default=50)
    p.add_argument("--top-p", "--top_p", type=float, default=0.95)
    p.add_argument("--tokens", "--max-new-tokens", type=int, default=100, dest="tokens")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: random)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--mode", choices=("recurrent", "recompute"), default="recurrent")
    p.add_argument("--bench", action="store_true", help="compare recurrent vs recompute decoding speed")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = SamplingConfig(args.temperature, args.top_k, args.top_p, args.tokens)
        model, tokenizer, model_dir = load_model(args.run, device=args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.bench:
        prompt = torch.tensor([tokenizer.encode("The ")[:1] * 8], dtype=torch.long)
        limit = max_context(model)
        n = min(args.tokens, (limit - prompt.size(1)) if limit else args.tokens)
        rows = decode_speed(model, prompt, new_tokens=n)
        if args.json:
            print(json.dumps({"model": str(model_dir), "results": rows}))
        else:
            for r in rows:
                print(f"{r['mode']:>10}: {r['tokens_per_s']:8.1f} tokens/s  same tokens: {r['same_tokens']}")
        return 0
    if args.prompt:
        try:
            texts = generate_text(model, tokenizer, args.prompt, cfg, seed=args.seed, mode=args.mode)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if args.json:
            pairs = zip(args.prompt, texts, strict=True)
            print(json.dumps([{"prompt": p, "completion": t} for p, t in pairs]))
        else:
            for p, t in zip(args.prompt, texts, strict=True):
                print(f"--- {p!r}\n{p}{t}\n")
        return 0
    print(f"model: {model_dir}")
    repl(model, tokenizer, cfg, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
