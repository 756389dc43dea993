"""prepare(): sources, split by document, counts, reuse/rebuild, atomic output, clear errors."""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mswelu.data import check_shards, document_lengths, get_tokenizer, load_meta, prepare, resolve_source
from mswelu.data.__main__ import main as cli
from mswelu.data.sources import shakespeare_works
from mswelu.data.splits import doc_hash

WORDS = (
    "the king queen sword crown night day love death rose honour fool storm sea 'tis thou art "
    "42 1,000 naïve café — 😀 \n\n"
).split(" ")


def make_docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Document {i}. " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 120))) for i in range(n)
    ]


def write_corpus(folder: Path, docs: list[str], kind: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "txt":
        for i, d in enumerate(docs):
            (folder / f"doc{i:04d}.txt").write_text(d, encoding="utf-8")
        return folder
    if kind == "jsonl":
        path = folder / "docs.jsonl"
        path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)), "utf-8")
        return path
    path = folder / "docs.parquet"
    pq.write_table(pa.table({"text": docs, "id": list(range(len(docs)))}), path)
    return path


def split_docs(out: Path, split: str) -> list[str]:
    """Decode a shard back into its documents (EOS-separated)."""
    meta = load_meta(out)
    tok = get_tokenizer(meta["tokenizer"])
    ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"]).astype(np.int64)
    ends = np.flatnonzero(ids == meta["eos_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(ids[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


def assert_counts_match(out: Path) -> dict:
    meta = check_shards(out)
    for split, c in meta["splits"].items():
        ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"])
        assert len(ids) == c["tokens"]
        assert int((ids == meta["eos_id"]).sum()) == c["documents"]
        assert len(document_lengths(out, split)) == c["documents"]
        if c["tokens"]:
            assert ids[-1] == meta["eos_id"] and int(ids.max()) == c["max_token_id"]
    return meta


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_local_files_split_by_document(tmp_path: Path, kind: str) -> None:
    docs = make_docs(60)
    src = write_corpus(tmp_path / "corpus", docs, kind)
    out = tmp_path / "out"
    meta = prepare(str(src), out=out, val_fraction=0.1, seed=3, progress=False)
    assert_counts_match(out)
    train, val = split_docs(out, "train"), split_docs(out, "val")
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == sorted(docs)
    assert len(val) == 6 == meta["splits"]["val"]["documents"]
    expected_val = sorted(docs, key=lambda d: doc_hash(d, 3))[:6]  # the 6 smallest seeded hashes
    assert sorted(val) == sorted(expected_val)
    for split, texts in (("train", train), ("val", val)):
        assert meta["splits"][split]["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert meta["dtype"] == "uint16" and meta["tokenizer"] == "gpt2" and meta["eos_id"] == 50256
    assert meta["seed"] == 3 and meta["val_fraction"] == 0.1 and meta["max_tokens"] is None


def test_three_formats_give_identical_shards(tmp_path: Path) -> None:
    docs = make_docs(25, seed=1)
    shards = []
    for kind in ("txt", "jsonl", "parquet"):
        out = tmp_path / f"out-{kind}"
        prepare(str(write_corpus(tmp_path / kind, docs, kind)), out=out, val_fraction=0.2, progress=False)
        shards.append(((out / "train.bin").read_bytes(), (out / "val.bin").read_bytes()))
    assert shards[0] == shards[1] == shards[2]


def test_glob_and_duplicates_share_a_split(tmp_path: Path) -> None:
    docs = make_docs(30, seed=2)
    docs += docs[:10]  # exact duplicates must not straddle the split
    write_corpus(tmp_path / "c", docs, "txt")
    out = tmp_path / "out"
    prepare(str(tmp_path / "c" / "doc*.txt"), out=out, val_fraction=0.2, progress=False)
    train, val = split_docs(out, "train"), split_docs(out, "val")
    assert set(train).isdisjoint(val) and len(train) + len(val) == 40


def test_max_tokens_caps_each_split(tmp_path: Path) -> None:
    src = write_corpus(tmp_path / "c", make_docs(80), "jsonl")
    out = tmp_path / "out"
    meta = prepare(str(src), out=out, val_fraction=0.1, max_tokens=1000, progress=False)
    assert_counts_match(out)
    assert meta["splits"]["val"]["tokens"] == 100 and meta["splits"]["train"]["tokens"] == 900
    assert meta["max_tokens"] == 1000


def test_uint32_for_large_vocab(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)} | {"[UNK]": 70_000, "<|endoftext|>": 70_001}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(tmp_path / "tokenizer.json"))
    docs = [" ".join(f"w{(i * 7919 + j * 104729) % 70_000}" for j in range(20)) for i in range(10)]
    out = tmp_path / "out"
    meta = prepare(
        str(write_corpus(tmp_path / "c", docs, "jsonl")),
        out=out,
        tokenizer=str(tmp_path / "tokenizer.json"),
        val_fraction=0.2,
        progress=False,
    )
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_002 and meta["eos_id"] == 70_001
    assert_counts_match(out)
    assert sorted(split_docs(out, "train") + split_docs(out, "val")) == sorted(docs)


def test_reuse_and_rebuild(tmp_path: Path) -> None:
    src = write_corpus(tmp_path / "c", make_docs(20), "jsonl")
    out = tmp_path / "out"
    first = prepare(str(src), out=out, progress=False)
    mtime = (out / "train.bin").stat().st_mtime_ns
    time.sleep(0.01)
    again = prepare(str(src), out=out, progress=False)
    assert again == first and (out / "train.bin").stat().st_mtime_ns == mtime  # reused, not rewritten
    other = prepare(str(src), out=out, seed=1, progress=False)  # changed setting -> rebuilt
    assert other["fingerprint"] != first["fingerprint"] and load_meta(out)["seed"] == 1
    src.write_text(
        src.read_text(encoding="utf-8") + json.dumps({"text": "one more document"}) + "\n", "utf-8"
    )
    grown = prepare(str(src), out=out, seed=1, progress=False)  # changed input file -> rebuilt
    assert grown["splits"]["train"]["documents"] + grown["splits"]["val"]["documents"] == 21
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_interrupted_run_leaves_nothing_that_looks_complete(tmp_path: Path, monkeypatch) -> None:
    src = write_corpus(tmp_path / "c", make_docs(20), "jsonl")
    out = tmp_path / "out"
    old = prepare(str(src), out=out, progress=False)

    def boom(self, texts):
        raise KeyboardInterrupt

    monkeypatch.setattr("mswelu.data.tokenizer.GPT2Tokenizer.encode_batch", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare(str(src), out=out, seed=5, progress=False)
    assert load_meta(out) == old  # the previous complete build is untouched
    with pytest.raises(KeyboardInterrupt):
        prepare(str(src), out=tmp_path / "fresh", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "out"]


def test_bad_input_errors(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="not found"):
        prepare(str(tmp_path / "missing.jsonl"), out=out, progress=False)
    with pytest.raises(ValueError, match="unknown source"):
        prepare("not a source!", out=out, progress=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("  \n\n", encoding="utf-8")
    (tmp_path / "empty" / "b.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty corpus"):
        prepare(str(tmp_path / "empty"), out=out, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "table.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no .txt"):
        prepare(str(tmp_path / "other"), out=out, progress=False)
    src = write_corpus(tmp_path / "j", make_docs(10), "jsonl")
    with pytest.raises(ValueError, match="no field 'body'"):
        prepare(str(src), out=out, text_field="body", progress=False)
    with pytest.raises(ValueError, match="too few"):
        prepare(str(write_corpus(tmp_path / "one", ["a single document"], "jsonl")), out=out, progress=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ValueError, match="unknown tokenizer|Hugging Face Hub"):
        prepare(str(src), out=out, tokenizer="no-such-owner/no-such-tokenizer", progress=False)
    for bad in (
        {"val_fraction": 1.0},
        {"val_fraction": 0},
        {"val_fraction": -0.1},
        {"max_tokens": 0},
        {"seed": "x"},
    ):
        with pytest.raises(ValueError):
            prepare(str(src), out=out, progress=False, **bad)
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "a.txt").write_bytes("caf\u00e9 au lait\n\nune autre".encode("latin-1"))
    with pytest.raises(ValueError, match=r"a.txt is not UTF-8 text \(byte 0xe9 at offset 3\); convert it"):
        prepare(str(tmp_path / "latin1"), out=out, progress=False)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.md").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not a mswelu dataset"):
        prepare(str(src), out=tmp_path / "foreign", progress=False)
    assert (tmp_path / "foreign" / "notes.md").read_text(encoding="utf-8") == "mine"
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_hub_unreachable_fails_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for spec in ("fineweb", "slimpajama", "cosmopedia", "hf:someone/some-data:config"):
        start = time.time()
        with pytest.raises(ValueError, match="cannot reach the Hugging Face Hub"):
            prepare(spec, out=tmp_path / "out", max_tokens=1000, progress=False)
        assert time.time() - start < 30
    assert not (tmp_path / "out").exists()
    src = resolve_source("fineweb")
    assert (src.hf_path, src.hf_config, src.finite) == ("HuggingFaceFW/fineweb", "sample-10BT", False)


def test_stream_split_rule(tmp_path: Path) -> None:
    """Streams (length unknown) send a document to validation when its seeded hash is below val_fraction."""
    from dataclasses import replace

    from mswelu.data.shards import _split_rule, _write_shards

    docs = make_docs(200, seed=9)
    stream = replace(resolve_source(str(write_corpus(tmp_path / "c", docs, "jsonl"))), finite=False)
    (tmp_path / "out").mkdir()
    in_val = _split_rule(stream, 0.25, 7, "text", "document")
    settings = {"val_fraction": 0.25, "max_tokens": None, "text_field": "text", "txt_sample_by": "document"}
    counts = _write_shards(tmp_path / "out", stream, get_tokenizer(), in_val, settings, False)
    (tmp_path / "out" / "meta.json").write_text(
        json.dumps(
            {"tokenizer": "gpt2", "vocab_size": 50257, "eos_id": 50256, "dtype": "uint16", "splits": counts}
        )
    )
    val = split_docs(tmp_path / "out", "val")
    assert sorted(val) == sorted(d for d in docs if doc_hash(d, 7) < 0.25)
    assert 25 < len(val) < 75  # about a quarter
    assert sorted(val) != sorted(d for d in docs if doc_hash(d, 8) < 0.25)  # the seed matters


def test_cli_prepare_and_info(tmp_path: Path, capsys) -> None:
    src = write_corpus(tmp_path / "c", make_docs(30), "parquet")
    out = tmp_path / "out"
    rc = cli(
        [
            "prepare",
            "--source",
            str(src),
            "--out",
            str(out),
            "--val-fraction",
            "0.1",
            "--max-tokens",
            "2000",
            "--seed",
            "2",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and "bytes/token" in printed and f"dataset   {out}" in printed  # says where it wrote
    assert cli(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["max_tokens"] == 2000
    with open(out / "train.bin", "r+b") as f:
        f.truncate(os.path.getsize(out / "train.bin") - 2)
    assert cli(["info", str(out)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert cli(["prepare", "--source", str(tmp_path / "nope"), "--out", str(out)]) == 2


@pytest.fixture(scope="module")
def shakespeare_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shk") / "default"
    prepare("default", out=out, val_fraction=0.05, seed=0, progress=False)
    return out


def test_default_corpus_one_edition_per_work() -> None:
    works = shakespeare_works()
    names = [n for n, _ in works]
    assert len(names) == 42 == len(set(names))
    assert not any(n.endswith("_f") for n in names)
    assert {"hamlet", "macbeth", "sonnets", "tempest"} <= set(names)
    for _, text in works:
        assert "project gutenberg" not in text.lower() and len(text) > 1000


def test_default_corpus_split_by_work(shakespeare_out: Path) -> None:
    meta = assert_counts_match(shakespeare_out)
    works = dict(shakespeare_works())
    val_names = sorted(works, key=lambda n: doc_hash(n, 0))[:2]  # round(0.05 * 42) = 2 works
    val, train = split_docs(shakespeare_out, "val"), split_docs(shakespeare_out, "train")
    assert sorted(val) == sorted(works[n] for n in val_names)
    assert sorted(train) == sorted(t for n, t in works.items() if n not in val_names)
    assert meta["splits"]["train"]["tokens"] > 1_000_000 and meta["source"] == "default"
    assert 3.0 < meta["splits"]["train"]["bytes"] / meta["splits"]["train"]["tokens"] < 4.0


def test_loader_reads_prepared_text(shakespeare_out: Path) -> None:
    from mswelu.data import TokenLoader

    loader = TokenLoader(shakespeare_out, "val", batch_size=2, seq_len=64, seed=0)
    loader.check_vocab(50257)
    tok = get_tokenizer()
    corpus = "".join(dict(shakespeare_works()).values())
    for row in next(loader).tolist():
        pieces = tok.decode(row).split("<|endoftext|>")  # a window may straddle two documents
        assert all(piece[3:-3] in corpus for piece in pieces)  # cut ends may hold partial characters


def test_txt_paragraphs_as_documents(tmp_path: Path) -> None:
    paragraphs = make_docs(20, seed=4)
    paragraphs = [p.replace("\n\n", " ").strip() for p in paragraphs]
    (tmp_path / "book.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="too few"):  # one file = one document by default
        prepare(str(tmp_path / "book.txt"), out=out, progress=False)
    meta = prepare(
        str(tmp_path / "book.txt"), out=out, txt_sample_by="paragraph", val_fraction=0.1, progress=False
    )
    docs = [d.strip() for d in split_docs(out, "train") + split_docs(out, "val")]
    assert sorted(docs) == sorted(paragraphs) and meta["splits"]["val"]["documents"] == 2


def test_concurrent_prepare_builds_once(tmp_path: Path, monkeypatch) -> None:
    """Callers racing on one folder (e.g. every DDP rank) all get the same complete dataset, built once."""
    from concurrent.futures import ThreadPoolExecutor

    from mswelu.data import shards

    builds = []
    real = shards._write_shards

    def counting(*args, **kwargs):
        builds.append(1)
        time.sleep(0.2)  # widen the race
        return real(*args, **kwargs)

    monkeypatch.setattr(shards, "_write_shards", counting)
    src = str(write_corpus(tmp_path / "c", make_docs(40), "jsonl"))
    with ThreadPoolExecutor(3) as pool:
        metas = list(pool.map(lambda _: prepare(src, out=tmp_path / "out", progress=False), range(3)))
    assert len(builds) == 1 and metas[0] == metas[1] == metas[2]
    assert_counts_match(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "out"]


def test_hub_dataset_is_streamed_with_env_token(tmp_path: Path, monkeypatch) -> None:
    """The Hub path end to end, with the Hub replaced by a local file served through the same
    ``datasets.load_dataset(..., streaming=True)`` call; HF_TOKEN comes from the environment."""
    import datasets

    from mswelu.data import sources

    docs = make_docs(300, seed=5)
    local = write_corpus(tmp_path / "c", docs, "jsonl")
    calls = []
    real = datasets.load_dataset

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return real("json", data_files=str(local), split=kwargs["split"], streaming=kwargs["streaming"])

    monkeypatch.setattr(sources, "check_hub", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_from_env")
    out = tmp_path / "out"
    meta = prepare("fineweb", out=out, val_fraction=0.1, seed=4, max_tokens=5000, progress=False)
    assert calls == [
        (
            "HuggingFaceFW/fineweb",
            "sample-10BT",
            {"split": "train", "streaming": True, "token": "hf_test_token_from_env"},
        )
    ]
    assert meta["splits"]["train"]["tokens"] == 4500 and meta["splits"]["val"]["tokens"] == 500
    val = split_docs(out, "val")
    full_val = [d for d in docs if doc_hash(d, 4) < 0.1]  # the stream rule; the last one may be cut
    assert val[:-1] == full_val[: len(val) - 1] and full_val[len(val) - 1].startswith(val[-1])
    assert set(split_docs(out, "train")).isdisjoint(full_val)
    assert "hf_test_token" not in (out / "meta.json").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- integrity
def _prepared(tmp_path: Path) -> tuple[Path, Path]:
    src = write_corpus(tmp_path / "c", make_docs(20), "jsonl")
    out = tmp_path / "out"
    prepare(str(src), out=out, progress=False)
    return src, out


def _poke(shard: Path, value: int) -> None:
    """Overwrite the first token of a uint16 shard (same size: only a checksum or range check sees it)."""
    data = bytearray(shard.read_bytes())
    data[0:2] = int(value).to_bytes(2, "little")
    shard.write_bytes(bytes(data))


def test_meta_records_checksums_and_verify_finds_a_changed_shard(tmp_path: Path) -> None:
    from mswelu.data import verify_dataset

    src, out = _prepared(tmp_path)
    meta = load_meta(out)
    assert all(len(c["sha256"]) == 64 for c in meta["splits"].values())
    assert verify_dataset(out) == meta
    _poke(out / "train.bin", 7)
    with pytest.raises(ValueError, match=r"train.bin does not match the sha256 .* prepare the dataset again"):
        verify_dataset(out)
    # prepare notices it and rebuilds instead of reusing the damaged file
    rebuilt = prepare(str(src), out=out, progress=False)
    assert rebuilt["splits"]["train"]["sha256"] == meta["splits"]["train"]["sha256"]
    assert verify_dataset(out)["fingerprint"] == meta["fingerprint"]


def test_token_ids_above_the_vocabulary_are_found_without_a_checksum(tmp_path: Path) -> None:
    from mswelu.data import verify_dataset

    _, out = _prepared(tmp_path)
    meta = load_meta(out)
    for c in meta["splits"].values():
        del c["sha256"]  # a dataset from before checksums
    (out / "meta.json").write_text(json.dumps(meta))
    _poke(out / "val.bin", 60000)
    with pytest.raises(ValueError, match=r"val.bin holds token id 60000, above the vocabulary \(50256\)"):
        verify_dataset(out)


@pytest.mark.parametrize(
    ("text", "match"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "does not hold a JSON object")],
)
def test_broken_meta_json_says_so(tmp_path: Path, text: str, match: str) -> None:
    _, out = _prepared(tmp_path)
    (out / "meta.json").write_text(text)
    with pytest.raises(ValueError, match=f"{match}.*prepare the dataset again"):
        load_meta(out)


def test_an_edited_dtype_is_refused(tmp_path: Path) -> None:
    _, out = _prepared(tmp_path)
    meta = load_meta(out)
    meta["dtype"] = "float16"
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match="says dtype 'float16', but a vocabulary of 50257 is stored as 'uint16'"
    ):
        load_meta(out)


def test_prepare_never_replaces_shards_it_did_not_write(tmp_path: Path) -> None:
    src = write_corpus(tmp_path / "c", make_docs(20), "jsonl")
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.bin").write_bytes(b"somebody else's tokens")
    with pytest.raises(ValueError, match=r"holds files that are not a mswelu dataset \(\['train.bin'\]\)"):
        prepare(str(src), out=out, progress=False)
    assert (out / "train.bin").read_bytes() == b"somebody else's tokens"


@pytest.mark.parametrize("errno_", [13, 28], ids=["read-only", "disk-full"])
def test_cli_write_failures_are_one_clear_line_and_leave_nothing(
    tmp_path: Path, capsys, monkeypatch, errno_
) -> None:
    """(Run as root here, so the failing write is simulated where the shards are written.)"""
    from mswelu.data import shards
    from mswelu.data.__main__ import main as cli

    src = write_corpus(tmp_path / "c", make_docs(20), "jsonl")

    def failing(folder, *args, **kwargs):
        cls = PermissionError if errno_ == 13 else OSError
        raise cls(errno_, os.strerror(errno_), str(folder / "train.bin"))

    monkeypatch.setattr(shards, "_write_shards", failing)
    assert cli(["prepare", "--source", str(src), "--out", str(tmp_path / "ds"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert ("permission denied" if errno_ == 13 else "the disk is full") in err
    assert (
        not (tmp_path / "ds").exists()
        and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    )


def test_explain_os_error_names_path_and_remedy() -> None:
    import errno

    from mswelu.base.fs import DiskFullError, explain_os_error

    full = OSError(errno.ENOSPC, "No space left on device", "/data/x/train.bin")
    assert (
        explain_os_error(full)
        == "the disk is full (writing /data/x/train.bin); free some space and run again"
    )
    ro = PermissionError(errno.EACCES, "Permission denied", "/ro/meta.json")
    assert explain_os_error(ro).startswith("cannot write /ro/meta.json: permission denied")
    assert explain_os_error(DiskFullError("kept the old ones")) == "kept the old ones"
