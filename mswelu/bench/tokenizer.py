"""Tokenizer and loader speed.

Goal (issue 3): our GPT-2 tokenization runs at >= 0.8x the speed of plain ``tiktoken`` encoding the
same text in one process. The reference is a separate ``tiktoken.Encoding`` built from the same
ranks (``tiktoken.get_encoding("gpt2")`` would need the internet), timed both batched (threads =
cores, as ``prepare`` uses it) and one document at a time. Also reported: the HF ``tokenizers`` BPE
on the same text, the end-to-end ``prepare`` rate (read, hash, split, tokenize, write shards) and
the time to load one training batch from the memmapped shards.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from mswelu.bench import bench_parser, best_times

GOAL = 0.8


def _texts(path: str | None) -> list[str]:
    if path is None:
        from mswelu.data.sources import shakespeare_works

        return [text for _, text in shakespeare_works()]
    p = Path(path)
    files = sorted(p.rglob("*.txt")) if p.is_dir() else [p]
    texts = [f.read_text(encoding="utf-8") for f in files]
    if not any(t.strip() for t in texts):
        raise ValueError(f"no text in {path}")
    return texts


def _reference_encoding():
    """An independent tiktoken Encoding with GPT-2's ranks (not the cached object our tokenizer uses)."""
    import tiktoken

    from mswelu.data.tokenizer import GPT2_EOS, GPT2_EOS_ID, GPT2_PATTERN, gpt2_encoding

    ranks = dict(gpt2_encoding()._mergeable_ranks)
    return tiktoken.Encoding(
        "gpt2-reference", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={GPT2_EOS: GPT2_EOS_ID}
    )


def run(repeats: int = 3, text_path: str | None = None, batch_size: int = 8, seq_len: int = 1024) -> dict:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    from mswelu.data import TokenLoader, get_tokenizer, prepare
    from mswelu.data.tokenizer import gpt2_vocab_files

    texts = _texts(text_path)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    ours = get_tokenizer("gpt2")  # the tokenizer prepare() uses
    ref = _reference_encoding()
    threads = ours.num_threads
    n_tokens = sum(len(x) for x in ours.encode_batch(texts))
    assert n_tokens == sum(len(x) for x in ref.encode_ordinary_batch(texts, num_threads=threads))

    enc, bpe = gpt2_vocab_files()
    hf = Tokenizer(models.BPE.from_file(str(enc), str(bpe)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()

    timed = best_times(
        {
            "tiktoken_batch": lambda: ref.encode_ordinary_batch(texts, num_threads=threads),
            "ours_batch": lambda: ours.encode_batch(texts),
            "tiktoken_single": lambda: [ref.encode_ordinary(t) for t in texts],
            "ours_single": lambda: [ours.encode(t) for t in texts],
        },
        repeats,
        warmup=False,
    )
    timings = {name: t["seconds"] for name, t in timed.items()}
    # the HF BPE is ~10x slower: time it once on a slice of the text
    subset = texts[: max(1, len(texts) // 8)]
    sub_tokens = sum(len(x) for x in ours.encode_batch(subset))
    hf_seconds = best_times({"hf": lambda: hf.encode_batch(subset)}, 1, warmup=False)["hf"]["seconds"]
    results: dict = {
        "text": text_path or "default corpus (Shakespeare, 42 works)",
        "documents": len(texts),
        "bytes": n_bytes,
        "tokens": n_tokens,
        "threads": threads,
        "cpu_count": os.cpu_count(),
    }
    for name, sec in timings.items():
        results[name] = {"seconds": round(sec, 4), "tokens_per_s": round(n_tokens / sec)}
    results["hf_tokenizers_batch"] = {
        "seconds": round(hf_seconds, 4),
        "tokens_per_s": round(sub_tokens / hf_seconds),
        "tokens": sub_tokens,
    }

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        t0 = time.perf_counter()
        meta = prepare("default" if text_path is None else text_path, out=out, progress=False, force=True)
        sec = time.perf_counter() - t0
        written = sum(s["tokens"] for s in meta["splits"].values())
        results["prepare"] = {"seconds": round(sec, 3), "tokens_per_s": round(written / sec)}
        for mode in ("random", "sequential"):
            loader = TokenLoader(out, "train", batch_size=batch_size, seq_len=seq_len, seed=0, mode=mode)
            next(loader)  # page in
            n = 200
            t0 = time.perf_counter()
            for _ in range(n):
                next(loader)
            results[f"batch_load_{mode}"] = {
                "batch_size": batch_size,
                "seq_len": seq_len,
                "microseconds": round((time.perf_counter() - t0) / n * 1e6, 1),
            }

    ratios = {
        "ours_vs_tiktoken_batch": round(timings["tiktoken_batch"] / timings["ours_batch"], 3),
        "ours_vs_tiktoken_single": round(timings["tiktoken_single"] / timings["ours_single"], 3),
        "hf_tokenizers_vs_tiktoken_batch": round(
            results["hf_tokenizers_batch"]["tokens_per_s"] / results["tiktoken_batch"]["tokens_per_s"], 3
        ),
        "prepare_vs_tiktoken_batch": round(
            results["prepare"]["tokens_per_s"] / results["tiktoken_batch"]["tokens_per_s"], 3
        ),
        "goal": GOAL,
    }
    ratios["met"] = min(ratios["ours_vs_tiktoken_batch"], ratios["ours_vs_tiktoken_single"]) >= GOAL
    return {"benchmark": "tokenizer", "results": results, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser("tokenizer", __doc__, full=True, repeats=3, batch_size=8, seq_len=1024)
    parser.add_argument("--text", default=None, help="a .txt file or folder (default: the default corpus)")
    args = parser.parse_args(argv)
    out = run(args.repeats, args.text, args.batch_size, args.seq_len)
    if args.json:
        print(json.dumps(out))
        return 0
    r = out["results"]
    print(
        f"text: {r['text']}: {r['documents']} documents, {r['bytes']:,} bytes, {r['tokens']:,} tokens; "
        f"{r['threads']} threads"
    )
    for name in (
        "tiktoken_batch",
        "ours_batch",
        "tiktoken_single",
        "ours_single",
        "hf_tokenizers_batch",
        "prepare",
    ):
        print(f"  {name:<20} {r[name]['seconds']:>8.3f} s  {r[name]['tokens_per_s']:>12,} tokens/s")
    for mode in ("random", "sequential"):
        b = r[f"batch_load_{mode}"]
        print(f"  batch load ({mode}, {b['batch_size']}x{b['seq_len'] + 1}): {b['microseconds']:.1f} us")
    for name, value in out["ratios"].items():
        print(f"  {name}: {value}")
    return 0


if __name__ == "__main__":
    from mswelu.base.cli import run_command

    raise SystemExit(run_command(main))
