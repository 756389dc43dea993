"""The corpus tokenizer (``--tokenizer bpe:N``): trained on the training split only, saved in the dataset
folder and named in meta.json, exact round trips and byte counts, and loaded by every consumer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mswelu.data import dataset_tokenizer, load_meta, prepare, tokenizer_name, verify_dataset
from mswelu.data.__main__ import main as cli
from mswelu.data.tokenizer import JSONTokenizer, bpe_vocab_size, get_tokenizer

ROUND_TRIP = [
    "ROMEO:\nO, she doth teach the torches to burn bright!",
    "naïve café résumé Ünïcödé Straße — 日本語 한국어 Ελληνικά",
    "emoji 😀🎉👩‍👩‍👧 zero\u200bwidth",
    "  leading and trailing spaces  \t\ttabs\r\n windows\n\n\n",
    "<|endoftext|> inside a document is plain text",
    "",
]


def _corpus(folder: Path, n: int = 12) -> list[str]:
    """``n`` documents, each with its own word spelled from letters no other document uses, repeated
    often enough that a BPE trained on the document learns it as one token."""
    folder.mkdir(parents=True, exist_ok=True)
    words = [chr(ord("A") + i) * 2 + chr(ord("a") + i) * 6 for i in range(n)]
    for i, word in enumerate(words):
        text = "The play begins. " + " ".join([word] * 200) + " Exeunt.\n"
        (folder / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return words


@pytest.fixture(scope="module")
def bpe_data(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("bpe")
    words = _corpus(root / "src")
    out = root / "data"
    prepare(str(root / "src"), out=out, tokenizer="bpe:512", val_fraction=0.25, progress=False)
    return out, words


def _split_texts(out: Path, split: str) -> list[str]:
    meta = load_meta(out)
    tok = dataset_tokenizer(out, meta)
    ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"]).astype(np.int64)
    ends = np.flatnonzero(ids == meta["eos_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(ids[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


def test_saved_in_the_dataset_and_named_in_meta(bpe_data) -> None:
    out, _ = bpe_data
    meta = load_meta(out)
    assert meta["tokenizer"] == "tokenizer.json" and (out / "tokenizer.json").is_file()
    assert meta["trained_tokenizer"]["spec"] == "bpe:512" and meta["eos_id"] == 0
    assert meta["vocab_size"] <= 512 and meta["dtype"] == "uint16"
    assert tokenizer_name(out, meta) == str(out / "tokenizer.json")
    tok = dataset_tokenizer(out)
    assert isinstance(tok, JSONTokenizer) and tok.vocab_size == meta["vocab_size"] and tok.eos_id == 0


def test_validation_documents_never_shape_the_tokenizer(bpe_data) -> None:
    """Every document's own word becomes one token when (and only when) the document is in train."""
    out, words = bpe_data
    tok = dataset_tokenizer(out)
    val = _split_texts(out, "val")
    assert len(val) == 3
    for word in words:
        in_val = any(word in text for text in val)
        pieces = tok.encode(" " + word)
        assert (len(pieces) >= len(word)) if in_val else (len(pieces) == 1), (word, in_val, pieces)


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip_and_byte_counts_are_exact(bpe_data, text: str) -> None:
    out, _ = bpe_data
    tok = dataset_tokenizer(out)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert int(tok.token_byte_lengths()[ids].sum()) == len(text.encode("utf-8")) == tok.byte_length(ids)
    assert tok.eos_id not in ids


def test_the_shards_decode_to_the_source_and_bytes_match_meta(bpe_data) -> None:
    out, _ = bpe_data
    meta = load_meta(out)
    tok = dataset_tokenizer(out)
    sources = sorted(p.read_text(encoding="utf-8") for p in (out.parent / "src").glob("*.txt"))
    texts = _split_texts(out, "train") + _split_texts(out, "val")
    assert sorted(texts) == sources
    lengths = tok.token_byte_lengths()
    for split, counts in meta["splits"].items():
        ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"]).astype(np.int64)
        assert int(lengths[ids].sum()) == counts["bytes"]


def test_training_is_deterministic_and_reused(bpe_data, tmp_path: Path) -> None:
    out, _ = bpe_data
    again = tmp_path / "again"
    prepare(str(out.parent / "src"), out=again, tokenizer="bpe:512", val_fraction=0.25, progress=False)
    assert (again / "tokenizer.json").read_bytes() == (out / "tokenizer.json").read_bytes()
    assert (again / "train.bin").read_bytes() == (out / "train.bin").read_bytes()
    stamp = (again / "tokenizer.json").stat().st_mtime_ns
    prepare(str(out.parent / "src"), out=again, tokenizer="bpe:512", val_fraction=0.25, progress=False)
    assert (again / "tokenizer.json").stat().st_mtime_ns == stamp  # same settings: the folder is reused


def test_a_changed_tokenizer_file_is_found(bpe_data, tmp_path: Path) -> None:
    out, _ = bpe_data
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        if not f.name.startswith("."):
            (copy / f.name).write_bytes(f.read_bytes())
    verify_dataset(copy)
    spec = json.loads((copy / "tokenizer.json").read_text())
    spec["model"]["merges"] = spec["model"]["merges"][:-1]
    (copy / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="the dataset's own tokenizer, is changed or corrupted"):
        verify_dataset(copy)
    (copy / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="is missing"):
        verify_dataset(copy)


@pytest.mark.parametrize("spec", ["bpe:", "bpe:abc", "bpe:256", "bpe:70000", "bpe:-5"])
def test_malformed_specs_are_refused(tmp_path: Path, spec: str) -> None:
    with pytest.raises(ValueError, match="bpe:N"):
        bpe_vocab_size(spec)
    _corpus(tmp_path / "src", 4)
    with pytest.raises(ValueError, match="bpe:N"):
        prepare(str(tmp_path / "src"), out=tmp_path / "out", tokenizer=spec, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_spec_is_not_a_tokenizer_by_itself() -> None:
    with pytest.raises(ValueError, match="trained when a dataset is prepared"):
        get_tokenizer("bpe:4096")


def test_cli_prepares_a_corpus_bpe(tmp_path: Path, capsys) -> None:
    _corpus(tmp_path / "src", 6)
    args = ["prepare", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    assert cli([*args, "--tokenizer", "bpe:300", "--val-fraction", "0.2", "--no-progress"]) == 0
    assert "tokenizer tokenizer.json (vocab 300, eos 0, uint16)" in capsys.readouterr().out
    assert cli([*args, "--tokenizer", "bpe:12", "--no-progress"]) == 2
    assert "bpe:N" in capsys.readouterr().err


def test_a_run_on_corpus_bpe_data_generates_with_it(bpe_data, tmp_path: Path) -> None:
    """Trainer, evaluation (exact bytes: no calibration) and generate all take the dataset's tokenizer."""
    from mswelu.generate import SamplingConfig, generate_text, load_model
    from mswelu.runs import model as run_model
    from mswelu.train import train
    from mswelu.training.evaluation import byte_table

    out, words = bpe_data
    meta = load_meta(out)
    _, calibration = byte_table(out, meta, announce=False)
    assert calibration == 1.0
    run = tmp_path / "run"
    summary = train(
        {
            "preset": "tiny",
            "data": str(out),
            "out": str(run),
            "max_steps": 4,
            "batch_size": 2,
            "seq_len": 16,
            "warmup": 1,
            "eval_every": 0,
            "eval_batches": 1,
            "ckpt_every": 0,
            "progress": False,
            "tensorboard": False,
        }
    )
    assert np.isfinite(summary["val_bpb"])
    assert run_model.tokenizer_name(run) == str(out / "tokenizer.json")
    model, tok, _ = load_model(run)
    assert tok.vocab_size == meta["vocab_size"] and model.config.eos_token_id == 0
    prompt = words[0]
    (text,) = generate_text(model, tok, [prompt], SamplingConfig(max_new_tokens=5), seed=0)
    assert isinstance(text, str) and tok.decode(tok.encode(text)) == text
