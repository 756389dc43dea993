"""Shared test set-up: every test session writes data, runs and reports into a temporary project home,
so running the tests never touches a user's ``data/``, ``runs/`` or ``reports/``."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

if "MSWELU_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="mswelu-test-home-")
    os.environ["MSWELU_HOME"] = _home  # inherited by notebook kernels that nbval / papermill start

# dtype="auto" takes bf16 on CPUs with native bf16 (mswelu.train_config.cpu_has_native_bf16): pin the tests
# (and the notebook kernels they start) to fp32 so that their numbers do not depend on the CPU model;
# tests of the bf16 path ask for it by name.
os.environ.setdefault("MSWELU_CPU_BF16", "0")

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


@pytest.fixture
def tiny_train_config(embedded_data) -> dict:
    """A ``TrainConfig`` dict that trains the ``tiny`` preset for a few steps on the embedded data in a
    second (add ``out``)."""
    return dict(
        preset="tiny",
        data=str(embedded_data),
        max_steps=8,
        batch_size=4,
        seq_len=16,
        lr=1e-2,
        warmup=2,
        eval_every=4,
        eval_batches=1,
        log_every=1,
        ckpt_every=0,
        progress=False,
        tensorboard=False,
    )


def write_byte_dataset(folder, n_tokens: int = 60_000, val_fraction: float = 0.1):
    """A prepared dataset (the data package's format) whose tokens are the UTF-8 bytes of stdlib sources
    (vocabulary 257): no tokenizer, no corpus download, the same bytes on every machine."""
    import argparse
    import json
    import textwrap
    from pathlib import Path

    import numpy as np

    folder = Path(folder)
    text = (Path(argparse.__file__).read_bytes() + Path(textwrap.__file__).read_bytes()) * 2
    tokens = np.frombuffer(text[:n_tokens], dtype=np.uint8).astype(np.uint16)
    n_val = int(len(tokens) * val_fraction)
    splits = {"train": tokens[:-n_val], "val": tokens[-n_val:]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in splits.items():
        arr.tofile(folder / f"{name}.bin")
    meta = {
        "version": 1,
        "tokenizer": "bytes",
        "vocab_size": 257,
        "eos_id": 256,
        "dtype": "uint16",
        "splits": {
            n: {"tokens": len(a), "documents": 1, "bytes": len(a), "max_token_id": int(a.max())}
            for n, a in splits.items()
        },
        "source": "test-bytes",
        "seed": 0,
        "val_fraction": val_fraction,
        "max_tokens": n_tokens,
        "fingerprint": "test-bytes-v1",
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="session")
def byte_dataset(tmp_path_factory):
    """:func:`write_byte_dataset`, once per test session."""
    return write_byte_dataset(tmp_path_factory.mktemp("bytes") / "data")
