"""The offline GPT-2 tokenizer gives GPT-2's ids (checked against an independent BPE implementation)."""

from __future__ import annotations

import json
import time

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from mswelu.data import get_tokenizer
from mswelu.data.tokenizer import GPT2_EOS_ID, gpt2_vocab_files

TEXTS = [
    "Hello world",
    "To be, or not to be: that is the question.",
    "  leading spaces, trailing spaces   ",
    "whitespace   runs\t\ttabs\n\n\nnewlines \n \r\n windows",
    "I'm sure you'll see they've said we'd can't won't it's O'Neil's 'TWAS",
    "3.14159 2024-11-23 1,000,000 0x1F 12345678901234567890 ½ ²",
    "naïve café résumé Ünïcödé ÀÉÎ Straße",
    "日本語のテキスト 中文文本 한국어 Ελληνικά русский عربى עברית",
    "emoji 😀🎉👩‍👩‍👧 🤖 flags 🇫🇷 zero\u200bwidth",
    "code: def f(x):\n    return x**2  # square\n",
    "<|endoftext|> is plain text inside a document",
    "",
    " ",
    "\n",
    "a" * 300,
]


@pytest.fixture(scope="module")
def reference() -> Tokenizer:
    """HF ``tokenizers`` byte-level BPE built from the same GPT-2 files: an independent implementation."""
    enc, bpe = gpt2_vocab_files()
    tok = Tokenizer(models.BPE.from_file(str(enc), str(bpe)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


@pytest.mark.parametrize("text", TEXTS)
def test_gpt2_ids_match_reference(reference: Tokenizer, text: str) -> None:
    tok = get_tokenizer("gpt2")
    ids = tok.encode(text)
    assert ids == reference.encode(text).ids
    assert tok.decode(ids) == text
    assert tok.byte_length(ids) == len(text.encode("utf-8"))


def test_gpt2_known_ids_and_specials() -> None:
    tok = get_tokenizer()
    # published GPT-2 ids
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.encode(" the") == [262]
    assert (tok.name, tok.vocab_size, tok.eos_id) == ("gpt2", 50257, GPT2_EOS_ID)
    assert tok.decode([GPT2_EOS_ID]) == "<|endoftext|>"
    # the EOS string inside a document is ordinary text, never the separator id
    assert GPT2_EOS_ID not in tok.encode("a <|endoftext|> b")


def test_encode_batch_equals_encode() -> None:
    tok = get_tokenizer()
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]


def test_tokenizer_json_path(tmp_path, reference: Tokenizer) -> None:
    reference.add_special_tokens(["<|endoftext|>"])
    path = tmp_path / "tokenizer.json"
    reference.save(str(path))
    tok = get_tokenizer(str(path))
    assert tok.eos_id == GPT2_EOS_ID and tok.vocab_size == 50257
    gpt2 = get_tokenizer("gpt2")
    for text in TEXTS:
        assert tok.encode(text) == gpt2.encode(text)
    assert tok.encode_batch(TEXTS[:4]) == gpt2.encode_batch(TEXTS[:4])


def test_unknown_tokenizer_fails_fast(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused
    start = time.time()
    with pytest.raises(ValueError, match="Hugging Face Hub"):
        get_tokenizer("no-such-owner/no-such-tokenizer")
    assert time.time() - start < 60
    with pytest.raises(ValueError, match="not found"):
        get_tokenizer(str(tmp_path / "missing" / "tokenizer.json"))
    bad = tmp_path / "vocab.txt"
    bad.write_text(json.dumps({}))
    with pytest.raises(ValueError, match="unsupported tokenizer file"):
        get_tokenizer(str(bad))
    with pytest.raises(ValueError, match="non-empty"):
        get_tokenizer("")


def test_transformers_tokenizer_folder(tmp_path) -> None:
    """A transformers tokenizer (here GPT-2's, saved to a folder) loads by path through AutoTokenizer."""
    from transformers import GPT2TokenizerFast

    enc, bpe = gpt2_vocab_files()
    GPT2TokenizerFast(vocab=str(enc), merges=str(bpe)).save_pretrained(tmp_path / "tok")
    tok = get_tokenizer(str(tmp_path / "tok"))
    gpt2 = get_tokenizer("gpt2")
    assert tok.eos_id == GPT2_EOS_ID and tok.vocab_size == 50257
    assert tok.encode_batch(TEXTS) == gpt2.encode_batch(TEXTS)
    assert tok.decode(tok.encode(TEXTS[6])) == TEXTS[6]
