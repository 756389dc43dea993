"""Checkpoint files: atomic layout, verification, pruning, RNG round trips, refusal of non-finite weights."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mswelu.base.fs import atomic_write_json
from mswelu.training import checkpoint as ckpt
from mswelu.training.optim import build_optimizer


class _Tied(nn.Module):
    """Tied embedding / head, as in our models (safetensors refuses shared tensors unless saved through
    the model-level helper)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(13, 8)
        self.lin = nn.Linear(8, 8)
        self.head = nn.Linear(8, 13, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.lin(self.emb(x))))


def _trained(seed: int = 0) -> tuple[_Tied, object]:
    torch.manual_seed(seed)
    model = _Tied()
    opt = build_optimizer(model, "adamw", lr=1e-2)
    for _ in range(2):
        loss = model(torch.arange(13)).logsumexp(-1).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(tmp_path: Path, step: int, model: nn.Module, opt: object, keep: int | None = None) -> Path:
    state = {"tokens": step * 100, "rng": ckpt.rng_state(), "extra": np.arange(3)}
    return ckpt.save_checkpoint(tmp_path / "checkpoints", step, model, opt, state, {"lr": 1e-2}, keep=keep)


def test_roundtrip_restores_weights_optimizer_and_state(tmp_path: Path) -> None:
    model, opt = _trained()
    path = _save(tmp_path, 7, model, opt)
    assert path.name == "step_0000007"
    manifest = ckpt.verify_checkpoint(path)
    assert set(manifest["files"]) == set(ckpt.REQUIRED_FILES)
    fresh = _Tied()
    opt2 = build_optimizer(fresh, "adamw", lr=1e-2)
    state = ckpt.load_checkpoint(path, fresh, opt2)
    assert state["step"] == 7 and state["tokens"] == 700
    np.testing.assert_array_equal(state["extra"], np.arange(3))
    for (n, p), q in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert fresh.head.weight is fresh.emb.weight  # still tied after loading
    x = torch.arange(13)
    for m, o in ((model, opt), (fresh, opt2)):  # the same next step from both
        m(x).logsumexp(-1).mean().backward()
        o.step()
    torch.testing.assert_close(model.lin.weight, fresh.lin.weight, rtol=0, atol=0)


def test_rng_state_roundtrip_through_json() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    saved = ckpt.from_portable(json.loads(json.dumps(ckpt.to_portable(ckpt.rng_state()))))
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.set_rng_state(saved)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == want[0] and got[1] == want[1]
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=0)


def test_truncated_or_unfinished_checkpoints_are_skipped(tmp_path: Path) -> None:
    model, opt = _trained()
    good = _save(tmp_path, 2, model, opt)
    corrupt = _save(tmp_path, 4, model, opt)
    with open(corrupt / "model.safetensors", "r+b") as f:  # a write cut short
        f.truncate(10)
    flipped = _save(tmp_path, 5, model, opt)
    data = bytearray((flipped / "optimizer.pt").read_bytes())
    data[-20] ^= 0xFF  # same size, different bytes
    (flipped / "optimizer.pt").write_bytes(bytes(data))
    unfinished = tmp_path / "checkpoints" / "step_0000006"
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_bytes(b"partial")
    found, skipped = ckpt.latest_checkpoint(tmp_path / "checkpoints")
    assert found == good
    reasons = {p.name: why for p, why in skipped}
    assert "incomplete" in reasons["step_0000006"]
    assert "sha256" in reasons["step_0000005"]
    assert "bytes" in reasons["step_0000004"]
    with pytest.raises(ckpt.CheckpointError, match="bytes"):
        ckpt.load_checkpoint(corrupt, _Tied())
    ckpt.load_checkpoint(good, _Tied())  # the previous one still loads


def test_keep_last_k_and_stale_temporaries(tmp_path: Path) -> None:
    model, opt = _trained()
    stale = tmp_path / "checkpoints" / ".tmp-step_0000001-999999999"  # a writer that died
    stale.mkdir(parents=True)
    for step in (1, 2, 3, 4):
        _save(tmp_path, step, model, opt, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_0000003", "step_0000004"]


def test_resaving_a_step_replaces_it(tmp_path: Path) -> None:
    model, opt = _trained()
    _save(tmp_path, 3, model, opt)
    with torch.no_grad():
        model.lin.weight.add_(1.0)
    path = _save(tmp_path, 3, model, opt)
    fresh = _Tied()
    ckpt.load_checkpoint(path, fresh)
    torch.testing.assert_close(fresh.lin.weight, model.lin.weight)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_0000003"]


def test_refuses_non_finite_weights(tmp_path: Path) -> None:
    model, opt = _trained()
    with torch.no_grad():
        model.lin.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        _save(tmp_path, 1, model, opt)
    assert not any((tmp_path / "checkpoints").glob("step_*"))


def test_atomic_write_text_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "summary.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert os.listdir(target.parent) == ["summary.json"]


def test_unwrap_finds_the_bare_model() -> None:
    model = _Tied()
    compiled_like = nn.Module()
    compiled_like._orig_mod = model
    assert ckpt.unwrap(compiled_like) is model


def test_too_little_disk_space_is_refused_before_writing(tmp_path: Path, monkeypatch) -> None:
    import shutil
    from collections import namedtuple

    model, opt = _trained()
    good = _save(tmp_path, 1, model, opt)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(ckpt.DiskFullError, match=r"not enough disk space .* MiB free"):
        _save(tmp_path, 2, model, opt)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc] unexpected pos 7"),
    ],
    ids=["ENOSPC", "torch-unexpected-pos"],
)
def test_a_disk_that_fills_up_mid_save_leaves_no_debris(tmp_path: Path, monkeypatch, failure) -> None:
    model, opt = _trained()
    good = _save(tmp_path, 1, model, opt)

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(ckpt.DiskFullError, match="disk filled up .* partial checkpoint was removed"):
        _save(tmp_path, 2, model, opt)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]
    ckpt.verify_checkpoint(good)
    monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(ValueError("other")))
    with pytest.raises(ValueError, match="other"):  # not a disk problem: raised as it is, still no debris
        _save(tmp_path, 3, model, opt)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [good.name]


def test_leftovers_of_dead_writers_only_are_cleaned(tmp_path):
    """``.tmp-step_*`` / ``.old-step_*`` of a dead writer go (an old copy whose step is missing is put
    back); a live writer's folders and names that are not ours stay."""
    import subprocess
    import sys

    from mswelu.training.checkpoint import clean_leftovers

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ck = tmp_path / "checkpoints"
        for name in (
            f".tmp-step_0000004-{done.pid}",
            f".old-step_0000002-{done.pid}",  # step_0000002 exists: removed
            f".old-step_0000003-{done.pid}",  # step_0000003 missing: put back
            f".tmp-step_0000006-{live.pid}",  # its writer lives: kept
            f".tmp-mine-{done.pid}",  # not a name we write: kept
            "step_0000002",
        ):
            (ck / name).mkdir(parents=True)
        (ck / f".old-step_0000003-{done.pid}" / "manifest.json").write_text("{}")
        notes = clean_leftovers(ck)
        assert sorted(p.name for p in ck.iterdir()) == sorted(
            ["step_0000002", "step_0000003", f".tmp-step_0000006-{live.pid}", f".tmp-mine-{done.pid}"]
        )
        assert len(notes) == 3 and any("put step_0000003 back" in n for n in notes)
    finally:
        live.kill()
        live.wait()


def test_the_train_state_is_saved_and_restored_as_one() -> None:
    """What a checkpoint's trainer_state.json carries of the run's progress comes back as one TrainState: the
    counters and records as they were, this sitting's time and tokens added to the earlier sittings', the
    skipped-in-a-row count cleared (a checkpoint follows a good step)."""
    from mswelu.runs.resume import TrainState

    fresh = TrainState()
    assert (fresh.step, fresh.tokens, fresh.last_val, fresh.spent()["trained_tokens"]) == (0, 0, {}, 0)
    state = TrainState(step=7, tokens=896, nonfinite_total=2, nonfinite_run=1, last_val={"val_loss": 3.5})
    state.last_train = {"step": 7, "loss": 3.9}
    state.earlier.update(train_time_s=10.0, wall_time_s=12.0, trained_tokens=512)
    state.sitting.update(train_time_s=1.5, wall_time_s=2.0, trained_tokens=384)
    saved = json.loads(json.dumps(state.saved()))  # as the checkpoint's JSON holds it
    back = TrainState.from_saved(saved)
    assert (back.step, back.tokens, back.nonfinite_total, back.nonfinite_run) == (7, 896, 2, 0)
    assert back.last_val == state.last_val and back.last_train == state.last_train
    assert back.earlier == {"train_time_s": 11.5, "wall_time_s": 14.0, "trained_tokens": 896}
    assert back.spent() == state.spent() and back.sitting["trained_tokens"] == 0
