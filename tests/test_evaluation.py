"""The final evaluation's sums per document and per window (what the text bootstrap resamples), recomputed
independently: per-token losses from the model's logits, documents split at the end-of-text token, bytes
from the tokenizer's byte lengths. They add up to the reported loss and bits per byte, which match the
fused-loss evaluation."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mswelu.base import distributed as du
from mswelu.data import load_meta, prepare
from mswelu.models.build import build_model
from mswelu.training.evaluation import byte_table, document_index, evaluate


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 short documents of varied length, so that the val split holds several."""
    rng = random.Random(0)
    words = "the king said a word to his friend and then they went home at night in the rain".split()
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 80))) + "." for _ in range(60)]
    folder = tmp_path_factory.mktemp("corpus")
    path = folder / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), "utf-8")
    out = folder / "data"
    prepare(str(path), out=out, val_fraction=0.3, progress=False)
    return out


def test_sums_per_document_and_window_match_an_independent_recomputation(corpus):
    meta = load_meta(corpus)
    model = build_model("tiny", meta["vocab_size"], 16, eos_token_id=meta["eos_id"]).eval()
    table = byte_table(corpus, meta, announce=False)
    info = du.DistInfo()
    seq = 16
    fused = evaluate(model, corpus, seq, table, info, batch_size=3)
    docs = document_index(corpus, meta)
    per = evaluate(model, corpus, seq, table, info, batch_size=3, documents=docs)
    assert per["val_loss"] == pytest.approx(fused["val_loss"], rel=1e-5)
    assert (
        per["val_bpb"] == pytest.approx(fused["val_bpb"], rel=1e-5)
        and per["val_tokens"] == fused["val_tokens"]
    )

    ids = np.fromfile(corpus / "val.bin", dtype=meta["dtype"]).astype(np.int64)
    ends = np.flatnonzero(ids == meta["eos_id"])
    n_docs = len(ends) + (ids[-1] != meta["eos_id"])
    assert len(per["documents"]["loss"]) == n_docs >= 5
    lengths, calibration = table
    loss_doc, tok_doc, byte_doc = np.zeros(n_docs), np.zeros(n_docs, dtype=int), np.zeros(n_docs)
    windows = (len(ids) - 1) // seq
    with torch.no_grad():
        for j in range(windows):
            w = torch.from_numpy(ids[j * seq : (j + 1) * seq + 1])[None]
            losses = F.cross_entropy(model(input_ids=w[:, :-1]).logits[0], w[0, 1:], reduction="none")
            assert per["windows"]["loss"][j] == pytest.approx(float(losses.sum()), rel=1e-5)
            for t in range(seq):
                pos = j * seq + 1 + t
                d = int(np.searchsorted(ends, pos))  # the document this target continues (its EOS included)
                loss_doc[d] += float(losses[t])
                tok_doc[d] += 1
                byte_doc[d] += float(lengths[ids[pos]]) * calibration
    np.testing.assert_allclose(per["documents"]["loss"], loss_doc, rtol=1e-5)
    assert per["documents"]["tokens"] == tok_doc.tolist() and sum(tok_doc) == per["val_tokens"]
    np.testing.assert_allclose(per["documents"]["bytes"], byte_doc, rtol=1e-9)
    assert sum(per["documents"]["loss"]) / math.log(2) / sum(per["documents"]["bytes"]) == pytest.approx(
        per["val_bpb"], rel=1e-9
    )
    assert docs.dtype == np.int64 and docs[0] == 0 and docs[-1] == n_docs - 1


def test_a_run_writes_its_final_evaluation_per_document(tiny_train_config, tmp_path):
    from mswelu.runs.folder import load_run
    from mswelu.train import train

    summary = train({**tiny_train_config, "max_steps": 4, "out": str(tmp_path / "run")})
    run = load_run(tmp_path / "run")
    doc = run.documents
    assert doc["val_scope"] == "whole split" and doc["step"] == 4 and doc["val_loss"] == summary["val_loss"]
    assert sum(doc["documents"]["tokens"]) == sum(doc["windows"]["tokens"]) == doc["val_tokens"]
    assert sum(doc["windows"]["loss"]) / doc["val_tokens"] == pytest.approx(summary["val_loss"], rel=1e-9)
    # the metrics log and the checkpoints keep the figures only
    final = [r for r in run.records if r.get("val_scope") == "whole split"][-1]
    assert "documents" not in final and final["val_loss"] == summary["val_loss"]
