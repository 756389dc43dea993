"""Training on a synthetic task through the real ``train()``: the loss on the answers only, the accuracy at
every evaluation (metrics.jsonl and trackers), exact resume, the run's record, and a model that can solve a
task solving its easiest level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mswelu.data.tasks import IGNORE, TaskSource
from mswelu.models.build import build_model, lm_loss
from mswelu.ops.lm_loss import split_window
from mswelu.train import train
from mswelu.training.trackers import scalars

INDUCTION = "task:induction_heads?level=easy&test=256"


def records(run: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in lines if "loss" in r], [r for r in lines if "val_loss" in r]


def task_config(out: Path, data: str = INDUCTION, **overrides) -> dict:
    """A 2-layer GPT-2-style model (the ``gpt2`` baseline family at the ``tiny`` width) on ``data``."""
    cfg = dict(
        preset="gpt2:tiny",
        model={"n_layer": 2},
        data=data,
        seq_len=TaskSource(data).seq_len,
        out=str(out),
        batch_size=16,
        max_steps=6,
        lr=3e-3,
        warmup=2,
        eval_every=3,
        eval_batches=0,
        log_every=1,
        ckpt_every=3,
        progress=False,
        trackers=[],
    )
    cfg.update(overrides)
    return cfg


@pytest.mark.parametrize("preset", ["tiny", "gpt2:tiny"])
def test_the_loss_is_the_answers_cross_entropy(preset):
    source = TaskSource("task:mqar?level=easy")
    model = build_model(preset, source.vocab_size, source.seq_len, "silu" if preset == "tiny" else None)
    x, y = split_window(source.train_batch(0, 0, range(4)))
    scored = y != IGNORE
    logits = model(input_ids=x).logits
    expected = F.cross_entropy(logits[scored].float(), y[scored])
    torch.testing.assert_close(lm_loss(model, x, y), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(
        expected, F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
    )


def test_a_task_run_logs_its_accuracy_and_resumes_exactly(tmp_path: Path):
    def stop_at(event, trainer, info):
        if event == "step" and info["step"] == 3:
            trainer.request_stop("test")

    full = train(task_config(tmp_path / "full"))
    part = train(task_config(tmp_path / "split"), callbacks=[stop_at])
    assert part["interrupted"] and part["steps"] == 3
    rest = train(task_config(tmp_path / "split", resume="auto"))
    assert rest["steps"] == full["steps"] == 6
    (a, va), (b, vb) = records(tmp_path / "full"), records(tmp_path / "split")
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit for bit
    assert [(r["step"], r["val_accuracy"]) for r in va] == [(r["step"], r["val_accuracy"]) for r in vb]
    assert [r["step"] for r in va][-2:] == [3, 6] and va[-1]["final"]
    for r in va:  # the whole test set, answers only: 256 examples, one answer each
        assert r["val_tokens"] == 256 and r["val_bpb"] is None and 0 <= r["val_accuracy"] <= 1
        assert scalars(r)["val/val_accuracy"] == r["val_accuracy"]
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["data"] == INDUCTION and config["_data_fingerprint"] == TaskSource(INDUCTION).fingerprint
    assert "data/tasks/induction_heads.py" in config["_training_code"]["files"]
    final = tmp_path / "full" / "final"
    assert (final / "model.safetensors").is_file() and not (final / "tokenizer.json").exists()  # ids only
    # another task setting does not resume this run
    other = "task:induction_heads?level=easy&seq_len=32"
    with pytest.raises(ValueError, match="fingerprint"):
        train(task_config(tmp_path / "split", data=other, resume="auto", max_steps=9))


def test_a_wrong_sequence_length_is_one_clear_line(tmp_path: Path):
    with pytest.raises(ValueError, match="makes examples of 16 input tokens; set seq_len=16"):
        train(task_config(tmp_path / "run", seq_len=32))


def test_a_two_layer_attention_model_learns_easy_induction_heads(tmp_path: Path):
    summary = train(
        task_config(tmp_path / "run", batch_size=128, max_steps=200, warmup=10, eval_every=100, ckpt_every=0)
    )
    _, evals = records(Path(summary["run_dir"]))
    assert evals[0]["val_accuracy"] < 0.6  # far from solved early on (chance is 1/8)
    assert evals[-1]["val_accuracy"] >= 0.95
