"""Data pipeline: tokenizers, sources (default corpus, code corpus, local files, Hub streams), splits and
folds, token shards (``prepare``), prepared datasets and their checks, and the :class:`TokenLoader` that reads
them back as seeded, rank-sharded, resumable batches. CLI: ``python -m mswelu.data {prepare,info}``.
"""

from mswelu.data.dataset_checks import check_shards, load_meta, verify_dataset
from mswelu.data.datasets import (
    dataset_dir,
    dataset_from_settings,
    dataset_tokenizer,
    default_dataset,
    prepared_dataset,
    tokenizer_name,
)
from mswelu.data.documents import document_lengths, split_documents
from mswelu.data.loader import TokenLoader, iter_eval_batches
from mswelu.data.shards import prepare
from mswelu.data.sources import HF_PRESETS, resolve_source
from mswelu.data.tokenizer import get_tokenizer

__all__ = [
    "HF_PRESETS",
    "TokenLoader",
    "check_shards",
    "dataset_dir",
    "dataset_from_settings",
    "dataset_tokenizer",
    "default_dataset",
    "document_lengths",
    "get_tokenizer",
    "iter_eval_batches",
    "load_meta",
    "prepare",
    "prepared_dataset",
    "resolve_source",
    "split_documents",
    "summary_rows",
    "tokenizer_name",
    "verify_dataset",
]


def summary_rows(meta: dict) -> list[dict]:
    """One row per split: documents, tokens, UTF-8 bytes and bytes per token (for tables and reports)."""
    rows = []
    for split, c in meta["splits"].items():
        rows.append(
            {
                "split": split,
                "documents": c["documents"],
                "tokens": c["tokens"],
                "bytes": c["bytes"],
                "bytes_per_token": round(c["bytes"] / c["tokens"], 3) if c["tokens"] else float("nan"),
            }
        )
    return rows
