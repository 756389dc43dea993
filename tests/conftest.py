"""The tests' shared fixtures (the environment every session runs in, a temporary project home included, is
set by the checkout's ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(params=["cpu-kernels", "torch"])
def kernels_or_torch(request, monkeypatch) -> str:
    """Run a test twice: with mswelu's compiled CPU kernels (what ``impl="auto"`` takes on a CPU) and with
    them turned off (the pure-PyTorch code they replace)."""
    monkeypatch.setenv("MSWELU_CPU_KERNELS", "1" if request.param == "cpu-kernels" else "0")
    return request.param


@pytest.fixture(scope="session")
def embedded_data():
    """The embedded default corpus, capped small, prepared once per test session (a dataset folder)."""
    from mswelu.data import default_dataset

    return default_dataset(max_tokens=60_000)


def _tiny_config(data: Path, out: Path, **overrides: object) -> dict:
    """The tiny training config the tests share: the ``tiny`` preset on ``data`` into ``out``, 6 steps of
    4 x 16 tokens, every step logged, evaluations and checkpoints every 3 steps, no progress bars;
    ``overrides`` on top."""
    cfg = dict(
        preset="tiny",
        data=str(data),
        out=str(out),
        max_steps=6,
        batch_size=4,
        seq_len=16,
        lr=3e-3,
        warmup=2,
        eval_every=3,
        eval_batches=1,
        log_every=1,
        ckpt_every=3,
        progress=False,
    )
    cfg.update(overrides)
    return cfg


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(data, out, **overrides)``: see :func:`_tiny_config`."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_run(embedded_data, tmp_path_factory):
    """A finished ``tiny`` run on the embedded data (GPT-2's tokenizer), trained once per session: its folder
    (``final/`` with the tokenizer, generation config and model card)."""
    from mswelu.train import train

    out = tmp_path_factory.mktemp("tiny-run") / "tiny"
    cfg = dict(
        preset="tiny",
        data=str(embedded_data),
        max_steps=12,
        batch_size=4,
        seq_len=32,
        lr=1e-2,
        warmup=2,
        eval_every=6,
        eval_batches=1,
        log_every=1,
        ckpt_every=6,
        progress=False,
        tensorboard=False,
        monitor_every=0,
        out=str(out),
    )
    summary = train(cfg)
    assert summary["interrupted"] is False
    return out


@pytest.fixture
def tiny_train_config(tiny_config, embedded_data) -> dict:
    """:func:`_tiny_config` on the embedded data for 8 steps at lr 1e-2, no checkpoints and no TensorBoard,
    without ``out`` (the test adds it)."""
    cfg = tiny_config(embedded_data, "-", max_steps=8, lr=1e-2, eval_every=4, ckpt_every=0, tensorboard=False)
    del cfg["out"]
    return cfg
