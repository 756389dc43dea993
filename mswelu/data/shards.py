"""Turn a text source into token shards: ``train.bin``, ``val.bin`` and ``meta.json``.

Layout: each split is a flat array of token ids (``uint16`` when the vocabulary fits, else
``uint32``); every document is followed by the tokenizer's end-of-text id. ``meta.json`` records the
tokenizer, the dtype and per-split counts of tokens (EOS included), documents and UTF-8 bytes of the
source text (for bits per byte), plus a fingerprint of the settings.

Validation is chosen by document and seeded, never by position, so no document sits in both splits
(:mod:`mswelu.data.splits`: the rule, and the folds ``folds``/``fold``).

``max_tokens`` caps the total: validation gets ``ceil(max_tokens * val_fraction)`` tokens and train
the rest; the document crossing a split's cap is cut (and still ends with EOS).

The folder is built under a hidden temporary name and renamed into place only when complete, so an
interrupted run never leaves a folder that looks prepared; re-running with identical settings (and
unchanged local files) reuses the folder, changed settings rebuild it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from mswelu.base.fs import leftovers, sha256_file
from mswelu.base.paths import cache_dir, data_dir
from mswelu.base.progress import log
from mswelu.data.dataset_checks import (
    TOKENIZER_FILE,
    VERIFIED_FILE,
    check_shards,
    token_dtype,
    verify_dataset,
)
from mswelu.data.sources import Document, Source, ensure_reachable, iter_documents, resolve_source
from mswelu.data.splits import check_folds, fold_record, validation_rule
from mswelu.data.tokenizer import (
    BPE_TRAIN_CHARS,
    Tokenizer,
    bpe_vocab_size,
    get_tokenizer,
    train_bpe,
)

FORMAT_VERSION = 1
SPLITS = ("train", "val")
_BATCH_CHARS = 1 << 20  # tokenize ~1 MB of text per encode_batch call


def _split_rule(
    source: Source,
    val_fraction: float,
    seed: int,
    text_field: str,
    txt_sample_by: str,
    folds: int | None = None,
    fold: int | None = None,
) -> Callable[[Document], bool]:
    """Whether a document belongs to validation (:mod:`mswelu.data.splits`' rule), worked out when the first
    document asks (a finite source's rule reads every document)."""
    rule: Callable[[str], bool] | None = None

    def in_val(doc: Document) -> bool:
        nonlocal rule
        if rule is None:
            keys = lambda: (d.key for d in iter_documents(source, text_field, txt_sample_by))  # noqa: E731
            rule = validation_rule(keys, source.finite, val_fraction, seed, source.description, folds, fold)
        return rule(doc.key)

    return in_val


def _train_texts(
    source: Source, in_val: Callable[[Document], bool], text_field: str, txt_sample_by: str
) -> Iterator[str]:
    """Texts of the training split only (validation never shapes the tokenizer), up to
    ``BPE_TRAIN_CHARS`` characters."""
    chars = 0
    for doc in iter_documents(source, text_field, txt_sample_by):
        if in_val(doc):
            continue
        yield doc.text
        chars += len(doc.text)
        if chars >= BPE_TRAIN_CHARS:
            return


def _batches(docs: Iterator[tuple[str, Document]]) -> Iterator[list[tuple[str, Document]]]:
    batch: list[tuple[str, Document]] = []
    chars = 0
    for item in docs:
        batch.append(item)
        chars += len(item[1].text)
        if chars >= _BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _write_shards(
    tmp: Path, source: Source, tok: Tokenizer, in_val: Callable[[Document], bool], settings: dict, show: bool
) -> dict:
    """``train.bin`` and ``val.bin`` into ``tmp``, each within its share of ``max_tokens``; the counts."""
    from tqdm.auto import tqdm

    val_fraction, max_tokens = settings["val_fraction"], settings["max_tokens"]
    text_field, txt_sample_by = settings["text_field"], settings["txt_sample_by"]
    dtype = np.dtype(token_dtype(tok.vocab_size))
    budget = {"train": math.inf, "val": math.inf}
    if max_tokens is not None:
        budget["val"] = math.ceil(max_tokens * val_fraction) if val_fraction > 0 else 0
        budget["train"] = max_tokens - budget["val"]
    counts = {
        s: {"tokens": 0, "documents": 0, "bytes": 0, "truncated_documents": 0, "max_token_id": -1}
        for s in SPLITS
    }
    files = {s: open(tmp / f"{s}.bin", "wb") for s in SPLITS}  # noqa: SIM115 - closed below

    def full(split: str) -> bool:
        return counts[split]["tokens"] + 2 > budget[split]  # a document needs >= 1 token + EOS

    def routed() -> Iterator[tuple[str, Document]]:
        for doc in iter_documents(source, text_field, txt_sample_by):
            split = "val" if in_val(doc) else "train"
            if not full(split):
                yield split, doc
            elif all(full(s) for s in SPLITS):
                return

    bar = tqdm(
        total=max_tokens, unit="tok", unit_scale=True, desc=f"tokenizing {source.name}", disable=not show
    )
    try:
        for batch in _batches(routed()):
            for (split, doc), ids in zip(batch, tok.encode_batch([d.text for _, d in batch]), strict=True):
                c = counts[split]
                room = budget[split] - c["tokens"]
                if room < 2:
                    continue
                nbytes = len(doc.text.encode("utf-8"))
                if len(ids) + 1 > room:
                    ids = ids[: int(room) - 1]
                    nbytes = tok.byte_length(ids)
                    c["truncated_documents"] += 1
                arr = np.asarray([*ids, tok.eos_id], dtype=np.int64)
                if arr.min() < 0 or arr.max() >= tok.vocab_size:
                    raise ValueError(f"tokenizer {tok.name} produced ids outside [0, {tok.vocab_size})")
                files[split].write(arr.astype(dtype).tobytes())
                c["tokens"] += len(arr)
                c["documents"] += 1
                c["bytes"] += nbytes
                c["max_token_id"] = max(c["max_token_id"], int(arr.max()))
                bar.update(len(arr))
    finally:
        bar.close()
        for f in files.values():
            f.close()
    train, val = counts["train"]["documents"], counts["val"]["documents"]
    if train == 0 and val == 0:
        raise ValueError(f"empty corpus: {source.description} holds no non-blank documents")
    if train == 0:
        raise ValueError(f"no training documents from {source.description} (val_fraction={val_fraction})")
    if val_fraction > 0 and val == 0:
        raise ValueError(f"no document of {source.description} fell into validation; raise val_fraction")
    return counts


def _validate(val_fraction: float, max_tokens: int | None, seed: int) -> None:
    number = isinstance(val_fraction, int | float) and not isinstance(val_fraction, bool)
    if not number or not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}: training evaluates on it")
    if max_tokens is not None and (not isinstance(max_tokens, (int, np.integer)) or max_tokens < 4):
        raise ValueError(f"max_tokens must be None or an integer >= 4, got {max_tokens!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def _leftover_pattern(out: Path) -> re.Pattern[str]:
    """``.NAME.tmp-<pid>-<hex>`` (a build in progress) and ``.NAME.old-<pid>-<hex>`` (the dataset a build
    was swapping out), as :func:`_build` names them."""
    return re.compile(rf"\.{re.escape(out.name)}\.(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]{{8}}")


def _clean_stale(out: Path) -> None:
    """Clean up after a ``prepare`` that was killed (its process is gone): remove its partial build; put
    back the dataset it had moved aside where the new one never arrived, else remove that old copy. Says
    what it did in one line."""
    done = []
    for p, m in leftovers(out.parent, _leftover_pattern(out)):
        if m["kind"] == "old" and not out.exists() and (p / "meta.json").is_file():
            os.rename(p, out)
            done.append(f"put {out.name} back from {p.name}")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}")
    if done:
        log(f"{out.parent}: cleaned up after a prepare that was killed ({'; '.join(done)})", "mswelu.data")


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an advisory lock for ``out`` (a file under ``cache_dir()/locks``, so the data folder stays
    clean); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    locks = cache_dir() / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{hashlib.sha1(str(out).encode()).hexdigest()}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _reusable(out: Path, fingerprint: str) -> dict | None:
    """The meta of an intact dataset of these settings in ``out``, or None (a damaged one says so)."""
    try:
        meta = check_shards(out)
    except (ValueError, OSError):
        return None
    if meta.get("fingerprint") != fingerprint:
        return None
    try:
        return verify_dataset(out, meta)
    except ValueError as exc:
        log(f"{exc}: rebuilding it", source="mswelu.data")
        return None


def output_dir(source: str | Source = "default", out: str | Path | None = None) -> Path:
    """Where :func:`prepare` writes ``source`` (a ``--source`` string or a resolved ``Source``): ``out``,
    or ``data_dir()/<source-name>``."""
    if out is not None:
        return Path(out).expanduser().resolve()
    return data_dir() / (source if isinstance(source, Source) else resolve_source(source)).name


def prepare(
    source: str = "default",
    out: str | Path | None = None,
    tokenizer: str = "gpt2",
    val_fraction: float = 0.05,
    max_tokens: int | None = None,
    seed: int = 0,
    text_field: str = "text",
    progress: bool = True,
    txt_sample_by: str = "document",
    force: bool = False,
    folds: int | None = None,
    fold: int | None = None,
) -> dict:
    """Tokenize ``source`` into ``out`` (default ``data_dir()/<source-name>``) and return its meta.

    ``folds``/``fold``: fold ``fold`` of ``folds`` disjoint validation folds, 0 the scheme's tuning split
    (:mod:`mswelu.data.splits`); None, the plain split. Reuses an existing folder prepared with the same
    settings unless ``force``.
    """
    _validate(val_fraction, max_tokens, seed)
    check_folds(folds, fold)
    src = resolve_source(source)
    ensure_reachable(src)
    bpe_size = bpe_vocab_size(tokenizer)
    tok = None if bpe_size else get_tokenizer(tokenizer)  # a corpus BPE is trained in _build
    out = output_dir(src, out)
    settings = {
        "version": FORMAT_VERSION,
        "source": src.fingerprint(),
        "tokenizer": tok.name if tok else tokenizer,
        "vocab_size": tok.vocab_size if tok else bpe_size,
        "val_fraction": float(val_fraction),
        "max_tokens": None if max_tokens is None else int(max_tokens),
        "seed": int(seed),
        "text_field": text_field,
        "txt_sample_by": txt_sample_by,
    }
    if folds is not None:  # only then: the plain split's fingerprint stays what it always was
        settings.update(folds=int(folds), fold=int(fold))  # type: ignore[arg-type]
    if bpe_size:
        import tokenizers  # its trainer's version decides the merges

        settings["tokenizers_version"] = tokenizers.__version__
    fingerprint = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if leftovers(out.parent, _leftover_pattern(out)):  # a killed build's shards, or the dataset it moved
        with _exclusive(out):
            _clean_stale(out)
    meta = None if force else _reusable(out, fingerprint)
    if meta is not None:
        return meta
    out.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):  # concurrent callers (e.g. every DDP rank) wait, then reuse the first build
        meta = None if force else _reusable(out, fingerprint)
        if meta is not None:
            return meta
        return _build(out, src, tok, settings, fingerprint, source, progress)


def _build(
    out: Path, src: Source, tok: Tokenizer | None, settings: dict, fingerprint: str, source: str, show: bool
) -> dict:
    """Write the shards (and, for ``tok=None``, the corpus BPE first) into a temporary sibling folder,
    then swap it into place."""
    if out.exists():
        # shards without a meta.json are somebody else's files, not a dataset of ours to replace
        ours = (
            {"meta.json", "train.bin", "val.bin", TOKENIZER_FILE, VERIFIED_FILE}
            if (out / "meta.json").is_file()
            else {VERIFIED_FILE}
        )
        strangers = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if strangers:
            raise ValueError(
                f"output {out} holds files that are not a mswelu dataset ({strangers[:3]}); "
                "choose an empty or new folder"
            )
    val_fraction, seed = settings["val_fraction"], settings["seed"]
    text_field, txt_sample_by = settings["text_field"], settings["txt_sample_by"]
    _clean_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        t0 = time.time()
        in_val = _split_rule(
            src, val_fraction, seed, text_field, txt_sample_by, settings.get("folds"), settings.get("fold")
        )
        trained = None
        if tok is None:
            texts = _train_texts(src, in_val, text_field, txt_sample_by)
            tok = train_bpe(texts, int(settings["vocab_size"]), tmp / TOKENIZER_FILE)
            trained = {
                "kind": "byte-level BPE (Hugging Face tokenizers, GPT-2 split pattern)",
                "spec": settings["tokenizer"],
                "trained_on": f"the train split only, at most {BPE_TRAIN_CHARS:,} characters",
                "seconds": round(time.time() - t0, 3),
                "sha256": sha256_file(tmp / TOKENIZER_FILE),
            }
        counts = _write_shards(tmp, src, tok, in_val, settings, show)
        meta = {
            "version": FORMAT_VERSION,
            "tokenizer": TOKENIZER_FILE if trained else tok.name,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "dtype": token_dtype(tok.vocab_size),
            "splits": counts,
            "source": source,
            "source_description": src.description,
            "seed": int(seed),
            "val_fraction": float(val_fraction),
            "max_tokens": settings["max_tokens"],
            "text_field": text_field,
            "txt_sample_by": txt_sample_by,
            "split_rule": "by document: seeded blake2b hash of the document key (work name or text)",
            "document_separator": "eos_id appended after every document",
            "fingerprint": fingerprint,
            "settings": settings,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "prepare_seconds": round(time.time() - t0, 3),
        }
        if trained:
            meta["trained_tokenizer"] = trained
        fold = fold_record(settings.get("folds"), settings.get("fold"))
        if fold:
            meta["fold"] = fold
        for split, c in counts.items():
            c["sha256"] = sha256_file(tmp / f"{split}.bin")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if out.exists():
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            if _reusable(out, fingerprint) is None:  # else another process renamed an identical build first
                raise
        shutil.rmtree(old, ignore_errors=True)
        return meta
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
