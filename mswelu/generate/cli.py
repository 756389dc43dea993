"""Text generation from a trained run: prompts on the command line, an interactive loop, or a decoding
benchmark.

    python -m mswelu.generate --run runs/main          # interactive: /temp /top_p /top_k /tokens /help /quit
    python -m mswelu.generate --run runs/main --prompt "ROMEO:" --prompt "To be" --tokens 80
    python -m mswelu.generate --run runs/main --bench  # recurrent vs recompute tokens/s
    python -m mswelu.generate --run runs/main --bench --bench-batch 4 --tokens 64 --repeats 9

Decoding is recurrent (one token per step through the model's state) unless --mode recompute (slower, the same
tokens).
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mswelu.base.errors import choice, plain_text, with_nearest
from mswelu.base.paths import cache_dir
from mswelu.generate.decoding import (
    DECODE_MODES,
    SamplingConfig,
    decode_benchmark,
    describe_benchmark,
    generate_text,
    load_model,
    max_context,
)

__all__ = ["HELP", "Session", "build_parser", "main", "repl", "run_command"]

HELP = """Commands:
  /temp X     temperature (0 = greedy)         /top_p X   nucleus sampling, 0 < X <= 1 (1 = off)
  /top_k N    keep the N most likely (0 = off)  /tokens N  new tokens per reply
  /seed N     reseed the sampler                /show      show the current settings
  /help       this help                         /quit      exit (also /exit, Ctrl-D)
Anything else is a prompt."""


# Every /command of the loop, /seed included, goes through run_command: one table (_ACTIONS).
@dataclass(frozen=True)
class Session:
    """The interactive loop's sampling settings and seed (None: random)."""

    cfg: SamplingConfig
    seed: int | None = None

    def describe(self) -> str:
        c = self.cfg
        return f"temperature={c.temperature} top_k={c.top_k} top_p={c.top_p} tokens={c.max_new_tokens}"


Outcome = tuple[Session, str, bool]  # (the session after the command, the message for the user, quit?)

# The settings a command sets: command -> (setting, its type); "seed" is the session's, the others cfg's.
_SETTINGS: dict[str, tuple[str, type]] = {
    "/temp": ("temperature", float),
    "/temperature": ("temperature", float),
    "/top_p": ("top_p", float),
    "/top_k": ("top_k", int),
    "/tokens": ("max_new_tokens", int),
    "/max_tokens": ("max_new_tokens", int),
    "/seed": ("seed", int),
}


def _set(session: Session, cmd: str, args: list[str]) -> Outcome:
    """``/<setting> VALUE``: the session with that setting changed, or unchanged with the reason."""
    name, kind = _SETTINGS[cmd]
    now = session.seed if name == "seed" else getattr(session.cfg, name)
    if len(args) != 1:
        return session, f"usage: {cmd} VALUE (now {now})", False
    try:
        value = kind(args[0])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        return session, f"not changed: {cmd} takes {what}, not {args[0]!r} (now {now})", False
    if name == "seed":
        return dataclasses.replace(session, seed=value), f"seed = {value}", False
    try:
        cfg = dataclasses.replace(session.cfg, **{name: value})
    except ValueError as exc:
        return session, f"not changed: {exc}", False
    return dataclasses.replace(session, cfg=cfg), f"{name} = {getattr(cfg, name)}", False


_ACTIONS: dict[str, Callable[[Session, str, list[str]], Outcome]] = {
    **{cmd: _set for cmd in _SETTINGS},
    **{cmd: lambda s, cmd, args: (s, "bye", True) for cmd in ("/quit", "/exit", "/q")},
    **{cmd: lambda s, cmd, args: (s, HELP, False) for cmd in ("/help", "/?")},
    "/show": lambda s, cmd, args: (s, s.describe() + f" seed={s.seed}", False),
}


def run_command(session: Session, line: str) -> Outcome:
    """Apply one ``/command`` line: (new session, message, quit?); bad values leave the session unchanged."""
    parts = line.strip().split()
    if not parts or not parts[0].startswith("/"):
        raise ValueError(f"not a command: {line!r}")
    cmd, args = parts[0].lower(), parts[1:]
    if cmd not in _ACTIONS:
        return session, f"unknown command {with_nearest([cmd], _ACTIONS)}; /help lists them", False
    return _ACTIONS[cmd](session, cmd, args)


def _enable_line_editing() -> None:
    """Line editing and a history (``~/.cache/mswelu/generate_history``) for ``input()`` on a terminal."""
    if not sys.stdin.isatty():
        return
    try:
        import readline  # not on every platform
    except ImportError:
        return
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
    if input_fn is None:
        _enable_line_editing()
    read = input_fn or builtins.input
    session = Session(cfg or SamplingConfig(), seed)
    limit = max_context(model)
    print_fn("mswelu interactive generation. " + session.describe() + "\n/help for commands.")
    while True:
        try:
            line = read(">>> ")
        except (EOFError, KeyboardInterrupt):
            print_fn("")
            break
        if not line.strip():
            continue
        if line.strip().startswith("/"):
            session, message, stop = run_command(session, line)
            print_fn(message)
            if stop:
                break
            continue
        run_cfg = session.cfg
        if limit is not None:
            room = limit - len(tokenizer.encode(line))
            if room < 1:
                print_fn(f"prompt too long for the model's context of {limit} tokens")
                continue
            if room < run_cfg.max_new_tokens:
                run_cfg = dataclasses.replace(run_cfg, max_new_tokens=room)
                print_fn(f"(generating {room} tokens: the model's context is {limit})")
        t0 = time.perf_counter()
        stats: dict[str, Any] = {}
        text = generate_text(model, tokenizer, line, run_cfg, seed=session.seed, stats=stats)[0]
        dt = time.perf_counter() - t0
        if session.seed is not None:  # a new continuation for the same prompt next time, still reproducible
            session = dataclasses.replace(session, seed=session.seed + 1)
        print_fn(line + text)
        n = stats["new_tokens"]
        print_fn(f"[{n} tokens, {n / dt:.1f} tok/s, {dt:.2f} s]" if dt > 0 else f"[{n} tokens]")
    return session.cfg


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m mswelu.generate``."""
    p = argparse.ArgumentParser(
        prog="python -m mswelu.generate",
        description=plain_text(__doc__),
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
    p.add_argument(
        "--mode",
        type=choice("decode mode", DECODE_MODES),
        default="recurrent",
        metavar="{" + ",".join(DECODE_MODES) + "}",
    )
    p.add_argument(
        "--bench",
        action="store_true",
        help="compare recurrent vs recompute decoding speed (greedy, --tokens new tokens after an 8-token "
        "prompt; one warm-up run per mode, then the median of --repeats timed runs)",
    )
    p.add_argument("--bench-batch", type=int, default=1, help="rows decoded together by --bench (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per mode for --bench (default 5)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mswelu.generate``: prompts from the options, a decode benchmark, or the loop."""
    args = build_parser().parse_args(argv)
    try:
        cfg = SamplingConfig(args.temperature, args.top_k, args.top_p, args.tokens)
        model, tokenizer, model_dir = load_model(args.run, device=args.device)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.bench:
        if args.bench_batch < 1 or args.repeats < 1:
            print("error: --bench-batch and --repeats must be at least 1", file=sys.stderr)
            return 2
        rows = decode_benchmark(
            model, tokenizer, args.tokens, batch_size=args.bench_batch, repeats=args.repeats
        )
        if args.json:
            print(
                json.dumps({"model": str(model_dir), "measured": describe_benchmark(rows), "results": rows})
            )
        else:
            print(f"model: {model_dir}\n{describe_benchmark(rows)} ({args.device})")
            for r in rows:
                spread = f"{r['seconds_min']:.3f}-{r['seconds_max']:.3f} s"
                same = "yes" if r["same_tokens"] else "NO"
                print(
                    f"{r['mode']:>10}: {r['tokens_per_s']:8.1f} tokens/s  (median {r['seconds']:.3f} s, "
                    f"range {spread})  same tokens: {same}"
                )
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
