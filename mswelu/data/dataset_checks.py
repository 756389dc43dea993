"""A prepared dataset as training reads it: ``meta.json`` checked, and every shard checked against it (size,
sha256, token range), so a truncated, corrupted or foreign file is one clear error. :mod:`mswelu.data.shards`
writes what this reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["TOKENIZER_FILE", "VERIFIED_FILE", "check_shards", "load_meta", "token_dtype", "verify_dataset"]

TOKENIZER_FILE = "tokenizer.json"  # a corpus BPE lives in its dataset folder under this name


def token_dtype(vocab_size: int) -> str:
    return "uint16" if vocab_size <= 2**16 else "uint32"


def load_meta(path: str | Path) -> dict:
    """``meta.json`` of a prepared folder (ValueError when incomplete); a ``task:`` source's meta is made."""
    from mswelu.data.tasks.source import TaskSource, is_task_source

    if is_task_source(path):
        return TaskSource(str(path)).meta()
    folder = Path(path).expanduser()
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise ValueError(
            f"{folder} is not a prepared dataset (no meta.json); run `python -m mswelu.data prepare`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{meta_path} is not valid JSON ({exc}); {_REBUILD}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} does not hold a JSON object; {_REBUILD}")
    for key in ("tokenizer", "vocab_size", "eos_id", "dtype", "splits"):
        if key not in meta:
            raise ValueError(f"{meta_path} lacks the key {key!r}; {_REBUILD}")
    if meta["dtype"] != token_dtype(int(meta["vocab_size"])):
        raise ValueError(
            f"{meta_path} says dtype {meta['dtype']!r}, but a vocabulary of {meta['vocab_size']} is stored "
            f"as {token_dtype(int(meta['vocab_size']))!r}; {_REBUILD}"
        )
    return meta


_REBUILD = "prepare the dataset again (python -m mswelu.data prepare ... --force, or notebook 01)"
VERIFIED_FILE = ".verified.json"


def verify_dataset(path: str | Path, meta: dict | None = None) -> dict:
    """The dataset's meta after checking each shard's size, sha256 and token range against it (a
    ValueError says which file and how to rebuild); shards unchanged since ``.verified.json`` are not read
    again."""
    folder = Path(path).expanduser()
    meta = check_shards(folder, meta)
    try:
        seen = json.loads((folder / VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        seen = {}
    stamps = {}
    for split, counts in meta["splits"].items():
        shard = folder / f"{split}.bin"
        st = shard.stat()
        stamp = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": counts.get("sha256")}
        stamps[split] = stamp
        if seen.get(split) == stamp:
            continue
        if counts.get("sha256") and _sha256(shard) != counts["sha256"]:
            raise ValueError(
                f"{shard} does not match the sha256 in meta.json: it was changed or corrupted; {_REBUILD}"
            )
        tokens = np.memmap(shard, dtype=meta["dtype"], mode="r") if counts["tokens"] else np.zeros(0)
        top = int(tokens.max()) if tokens.size else -1
        limit = min(int(counts.get("max_token_id", meta["vocab_size"] - 1)), int(meta["vocab_size"]) - 1)
        if top > limit:
            what = "the vocabulary" if top >= meta["vocab_size"] else "the largest id meta.json records"
            raise ValueError(
                f"{shard} holds token id {top}, above {what} ({limit}): the file is corrupted or from "
                f"another dataset; {_REBUILD}"
            )
    trained = meta.get("trained_tokenizer")
    if trained:
        tok_file = folder / TOKENIZER_FILE
        if not tok_file.is_file() or _sha256(tok_file) != trained.get("sha256"):
            what = "missing" if not tok_file.is_file() else "changed or corrupted"
            raise ValueError(f"{tok_file}, the dataset's own tokenizer, is {what}; {_REBUILD}")
    try:
        from mswelu.base.fs import atomic_write_text  # concurrent runs on one dataset each write it whole

        atomic_write_text(folder / VERIFIED_FILE, json.dumps(stamps))
    except OSError:
        pass  # a read-only dataset is verified again next time
    return meta


def _sha256(path: Path) -> str:
    from mswelu.base.fs import sha256_file

    return sha256_file(path)


def check_shards(path: str | Path, meta: dict | None = None) -> dict:
    """Raise ValueError when a shard's size does not match meta.json (truncated or foreign file)."""
    folder = Path(path).expanduser()
    meta = meta if meta is not None else load_meta(folder)
    itemsize = np.dtype(meta["dtype"]).itemsize
    for split, counts in meta["splits"].items():
        shard = folder / f"{split}.bin"
        expected = counts["tokens"] * itemsize
        actual = shard.stat().st_size if shard.is_file() else -1
        if actual != expected:
            raise ValueError(
                f"{shard} is {'missing' if actual < 0 else f'{actual} bytes'} but meta.json says "
                f"{counts['tokens']} {meta['dtype']} tokens ({expected} bytes): the shard is truncated or "
                "stale; prepare the dataset again"
            )
    return meta
