"""Prepared datasets by what they hold: their folders under ``data/``, prepared on first use."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from mswelu.base.paths import data_dir
from mswelu.data.dataset_checks import TOKENIZER_FILE, load_meta
from mswelu.data.shards import prepare
from mswelu.data.sources import resolve_source
from mswelu.data.splits import check_folds
from mswelu.data.tokenizer import Tokenizer, bpe_vocab_size, get_tokenizer

DATA_SETTINGS = ("source", "tokenizer", "max_tokens", "folds", "fold")


def tokenizer_name(path: str | Path, meta: dict | None = None) -> str:
    """The name ``get_tokenizer`` loads for a prepared dataset (a corpus BPE: the file in its folder)."""
    meta = meta if meta is not None else load_meta(path)
    name = str(meta.get("tokenizer") or "gpt2")
    return str(Path(path).expanduser() / name) if name == TOKENIZER_FILE else name


def dataset_tokenizer(path: str | Path, meta: dict | None = None) -> Tokenizer:
    """The tokenizer a prepared dataset was tokenized with (GPT-2, a named one, or its own corpus BPE)."""
    return get_tokenizer(tokenizer_name(path, meta))


def dataset_dir(
    source: str = "default",
    max_tokens: int | None = None,
    tokenizer: str = "gpt2",
    folds: int | None = None,
    fold: int | None = None,
) -> Path:
    """``data_dir()/<source>[-<tokenizer>][-fold<j>of<K>][-<max_tokens>]``."""
    check_folds(folds, fold)
    name = resolve_source(source).name
    bpe = bpe_vocab_size(tokenizer)
    if bpe:
        name += f"-bpe{bpe}"
    elif tokenizer != "gpt2":
        name += f"-tok{hashlib.sha1(tokenizer.encode()).hexdigest()[:8]}"
    if folds is not None:
        name += f"-fold{fold}of{folds}"
    return data_dir() / (name if max_tokens is None else f"{name}-{int(max_tokens)}")


def prepared_dataset(
    source: str = "default",
    max_tokens: int | None = None,
    tokenizer: str = "gpt2",
    folds: int | None = None,
    fold: int | None = None,
    progress: bool = False,
) -> Path:
    """Prepare (or reuse) ``source`` as these settings say; returns its folder (:func:`dataset_dir`)."""
    out = dataset_dir(source, max_tokens, tokenizer, folds, fold)
    prepare(
        source, out=out, tokenizer=tokenizer, max_tokens=max_tokens, progress=progress, folds=folds, fold=fold
    )
    return out


def dataset_from_settings(settings: dict[str, Any], tokenizer: str = "gpt2") -> Path:
    """A study's data settings (any of :data:`DATA_SETTINGS`) prepared or reused."""
    unknown = sorted(set(settings) - set(DATA_SETTINGS))
    if unknown:
        raise ValueError(f"unknown data settings {unknown}: use {', '.join(DATA_SETTINGS)}")
    return prepared_dataset(
        str(settings.get("source", "default")),
        settings.get("max_tokens"),
        str(settings.get("tokenizer", tokenizer)),
        settings.get("folds"),
        settings.get("fold"),
    )


def default_dataset(max_tokens: int | None = None, progress: bool = False, tokenizer: str = "gpt2") -> Path:
    """Prepare (or reuse) the embedded default corpus with ``tokenizer``; returns its folder."""
    return prepared_dataset("default", max_tokens, tokenizer, progress=progress)
