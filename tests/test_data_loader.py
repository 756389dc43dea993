"""TokenLoader: window contents, determinism, rank sharding, exact resume, eval pass, vocab, shard checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mswelu.data import TokenLoader, iter_eval_batches


def make_dataset(folder: Path, n_train: int = 10_000, n_val: int = 2_000, vocab: int = 50257) -> Path:
    """Shards whose token at position i is i mod 50000, so a window's start can be read off its content."""
    folder.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if vocab <= 2**16 else "uint32"
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        ids = (np.arange(n) % 50_000).astype(dtype)
        ids.tofile(folder / f"{split}.bin")
        splits[split] = {"tokens": n, "documents": 1, "bytes": 3 * n, "max_token_id": int(ids.max())}
    meta = {
        "tokenizer": "gpt2",
        "vocab_size": vocab,
        "eos_id": vocab - 1,
        "dtype": dtype,
        "splits": splits,
        "fingerprint": "test",
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "ds")


def take(loader: TokenLoader, n: int) -> list[torch.Tensor]:
    return [next(loader) for _ in range(n)]


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_windows_are_contiguous_slices(ds: Path, mode: str) -> None:
    loader = TokenLoader(ds, "train", batch_size=4, seq_len=64, seed=1, mode=mode)
    for batch in take(loader, 5):
        assert batch.shape == (4, 65) and batch.dtype == torch.int64
        starts = batch[:, 0]
        assert torch.equal(batch, starts[:, None] + torch.arange(65))  # i mod 50000 == i here
        assert int(starts.max()) + 65 <= 10_000


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_deterministic_for_a_seed(ds: Path, mode: str) -> None:
    a = take(TokenLoader(ds, batch_size=4, seq_len=32, seed=7, mode=mode), 6)
    b = take(TokenLoader(ds, batch_size=4, seq_len=32, seed=7, mode=mode), 6)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    if mode == "random":
        c = take(TokenLoader(ds, batch_size=4, seq_len=32, seed=8, mode=mode), 6)
        assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_random_ranks_split_one_global_stream(ds: Path) -> None:
    """Ranks take disjoint rows of the batch a single process with world_size x batch would draw."""
    whole = take(TokenLoader(ds, batch_size=6, seq_len=16, seed=3), 4)
    parts = [
        take(TokenLoader(ds, batch_size=2, seq_len=16, seed=3, rank=r, world_size=3), 4) for r in range(3)
    ]
    for step in range(4):
        assert torch.equal(torch.cat([p[step] for p in parts]), whole[step])


def test_sequential_ranks_are_disjoint_and_cover(ds: Path) -> None:
    seq, b, steps = 50, 3, 4
    starts = []
    for r in range(2):
        loader = TokenLoader(ds, batch_size=b, seq_len=seq, rank=r, world_size=2, mode="sequential")
        starts.append({int(x) for batch in take(loader, steps) for x in batch[:, 0]})
    assert starts[0].isdisjoint(starts[1])
    assert sorted(starts[0] | starts[1]) == [i * seq for i in range(2 * b * steps)]


def test_sequential_wraps_into_next_epoch(tmp_path: Path) -> None:
    ds = make_dataset(tmp_path / "small", n_train=101, n_val=101)
    loader = TokenLoader(ds, batch_size=3, seq_len=25, mode="sequential")  # 4 windows
    first = [int(x) for x in next(loader)[:, 0]]
    second = [int(x) for x in next(loader)[:, 0]]
    assert first == [0, 25, 50] and second == [75, 0, 25]
    assert loader.step == 2


@pytest.mark.parametrize("mode", ["random", "sequential"])
def test_resume_continues_exactly(ds: Path, mode: str) -> None:
    ref = TokenLoader(ds, batch_size=4, seq_len=32, seed=5, rank=1, world_size=2, mode=mode)
    take(ref, 7)
    state = json.loads(json.dumps(ref.state_dict()))  # survives a JSON checkpoint
    expected = take(ref, 5)
    resumed = TokenLoader(ds, batch_size=4, seq_len=32, seed=5, rank=1, world_size=2, mode=mode)
    resumed.load_state_dict(state)
    assert resumed.step == 7
    assert all(torch.equal(x, y) for x, y in zip(take(resumed, 5), expected, strict=True))
    other = TokenLoader(ds, batch_size=4, seq_len=32, seed=6, rank=1, world_size=2, mode=mode)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="step"):
        resumed.load_state_dict({"step": -1})


def test_dataloader_workers_keep_the_order(ds: Path) -> None:
    loader = TokenLoader(ds, batch_size=2, seq_len=16, seed=2)
    loader.load_state_dict({"step": 3})
    dl = torch.utils.data.DataLoader(loader, batch_size=None, num_workers=2)
    got = []
    for batch in dl:
        got.append(batch)
        if len(got) == 6:
            break
    assert all(torch.equal(g, loader.batch_at(3 + i)) for i, g in enumerate(got))


def test_eval_batches_cover_val_in_order(ds: Path) -> None:
    seq, b = 100, 4
    batches = list(iter_eval_batches(ds, batch_size=b, seq_len=seq))
    windows = torch.cat(batches)
    n_windows = (2000 - 1) // seq
    assert len(windows) == n_windows and len(batches) == math.ceil(n_windows / b)
    assert torch.equal(windows[:, 0], torch.arange(n_windows) * seq)
    assert torch.equal(windows, windows[:, :1] + torch.arange(seq + 1))
    again = list(iter_eval_batches(ds, batch_size=b, seq_len=seq))
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))
    # ranks split the same global set of batches
    per_rank = [list(iter_eval_batches(ds, b, seq, rank=r, world_size=2)) for r in range(2)]
    assert sorted(int(x) for p in per_rank for batch in p for x in batch[:, 0]) == windows[:, 0].tolist()
    capped = list(TokenLoader(ds, "val", batch_size=b, seq_len=seq).iter_eval_batches(max_batches=2))
    assert len(capped) == 2 and torch.equal(torch.cat(capped), windows[: 2 * b])
    # a sample of windows spreads from the first to the last window, on every rank count alike
    loader = TokenLoader(ds, "val", batch_size=b, seq_len=seq)
    assert loader.eval_windows(sample=5).tolist() == [0, 4, 9, 14, 18]  # of 19 windows
    sampled = torch.cat(list(loader.iter_eval_batches(sample=5)))
    assert sampled[:, 0].tolist() == [0, 400, 900, 1400, 1800]
    split = [TokenLoader(ds, "val", batch_size=2, seq_len=seq, rank=r, world_size=2) for r in range(2)]
    starts = sorted(int(x) for ld in split for batch in ld.iter_eval_batches(sample=5) for x in batch[:, 0])
    assert starts == sampled[:, 0].tolist()
    assert loader.eval_windows(sample=100).tolist() == list(range(19))  # more than there are: all


def test_check_vocab(ds: Path, tmp_path: Path) -> None:
    loader = TokenLoader(ds, batch_size=2, seq_len=16)
    loader.check_vocab(50257)
    loader.check_vocab(50304)  # padded embedding tables are fine
    with pytest.raises(ValueError, match="does not fit"):
        loader.check_vocab(1000)
    big = TokenLoader(make_dataset(tmp_path / "big", vocab=70_000), batch_size=2, seq_len=16)
    assert big.meta["dtype"] == "uint32"
    with pytest.raises(ValueError, match="vocab_size=50257"):
        big.check_vocab(50257)


def test_bad_shards_and_arguments(ds: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a prepared dataset"):
        TokenLoader(tmp_path / "nothing", batch_size=2, seq_len=16)
    with pytest.raises(ValueError, match="unknown split"):
        TokenLoader(ds, "test", batch_size=2, seq_len=16)
    with pytest.raises(ValueError, match="mode"):
        TokenLoader(ds, batch_size=2, seq_len=16, mode="shuffled")
    with pytest.raises(ValueError, match="rank"):
        TokenLoader(ds, batch_size=2, seq_len=16, rank=2, world_size=2)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        TokenLoader(ds, "val", batch_size=2, seq_len=5000)
    with pytest.raises(ValueError, match="batch_size"):
        TokenLoader(ds, batch_size=0, seq_len=16)
    with open(ds / "val.bin", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="truncated"):
        TokenLoader(ds, "train", batch_size=2, seq_len=16)
