"""Real multi-process data parallelism on CPU: ``torchrun --nproc_per_node 2`` (gloo) against one process
with the same global batch, and the "independent" launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file

from mswelu.train import train

ROOT = Path(__file__).resolve().parents[1]


def _byte_dataset(folder: Path, n_tokens: int = 40_000) -> Path:
    """Prepared-dataset layout whose tokens are the bytes of a stdlib source file (vocabulary 257)."""
    import argparse

    text = Path(argparse.__file__).read_bytes() * 2
    tokens = np.frombuffer(text[:n_tokens], dtype=np.uint8).astype(np.uint16)
    n_val = len(tokens) // 10
    splits = {"train": tokens[:-n_val], "val": tokens[-n_val:]}
    folder.mkdir(parents=True)
    for name, arr in splits.items():
        arr.tofile(folder / f"{name}.bin")
    meta = {
        "tokenizer": "bytes",
        "vocab_size": 257,
        "eos_id": 256,
        "dtype": "uint16",
        "fingerprint": "ddp-test",
        "splits": {
            n: {"tokens": len(a), "documents": 1, "bytes": len(a), "max_token_id": int(a.max())}
            for n, a in splits.items()
        },
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


# This module's runs: three steps, one evaluation of two batches at the end, no checkpoints.
_SHORT = dict(max_steps=3, warmup=1, eval_batches=2, ckpt_every=0)


def _lines(run: Path) -> list[dict]:
    """The training and evaluation records (device samples come with wall time, not with the steps)."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in lines if "device" not in r]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tiny_config, tmp_path: Path) -> None:
    data = _byte_dataset(tmp_path / "data")
    one = train(tiny_config(data, tmp_path / "one", **_SHORT))
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(tiny_config(data, tmp_path / "two", **_SHORT)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mswelu.train",
        "--config",
        str(config),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["tokens"] == one["tokens"] == 3 * 4 * 16  # tokens per step counted over both ranks
    a, b = _lines(tmp_path / "one"), _lines(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("loss", "grad_norm", "val_loss"):
            if key in ra:
                assert rb[key] == pytest.approx(ra[key], rel=1e-5), (key, ra["step"])
        if "k" in ra:
            assert rb["k"] == pytest.approx(ra["k"], rel=1e-5)
    wa = load_file(tmp_path / "one" / "final" / "model.safetensors")
    wb = load_file(tmp_path / "two" / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name].numpy(), wb[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    # only rank 0 wrote the run folder
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )


# ----------------------------------------------------------------------------------------- launcher
def test_expand_variants_names_and_merges(tmp_path: Path) -> None:
    from mswelu.launch import expand_variants

    base = {"preset": "tiny", "run_name": "study", "model": {"d_model": 32}, "max_steps": 5}
    cfgs = expand_variants(
        base,
        [{"activation": "swelu"}, {"activation": "silu", "model": {"expand": 1}}],
        seeds=[0, 1],
        out_root=tmp_path,
    )
    assert [c.run_name for c in cfgs] == [
        "study-activation-swelu-s0",
        "study-activation-swelu-s1",
        "study-activation-silu-expand-1-s0",
        "study-activation-silu-expand-1-s1",
    ]
    assert [c.seed for c in cfgs] == [0, 1, 0, 1]
    assert cfgs[2].model == {"d_model": 32, "expand": 1} and cfgs[0].model == {"d_model": 32}
    assert all(Path(c.out).parent == tmp_path for c in cfgs)
    with pytest.raises(ValueError, match="unknown optimizer"):
        expand_variants(base, [{"optimizer": "sgd"}])
    one = expand_variants({"preset": "tiny", "out": str(tmp_path / "here"), "run_name": "named"})
    assert [(c.run_name, c.out) for c in one] == [("named", str(tmp_path / "here"))]


@pytest.mark.slow
def test_independent_runs_side_by_side_and_failures_are_loud(tiny_config, tmp_path: Path) -> None:
    from mswelu.launch import launch

    data = _byte_dataset(tmp_path / "data")
    base = {**tiny_config(data, tmp_path / "runs" / "indep", **_SHORT), "max_steps": 2, "eval_every": 0}
    results = launch("independent", base=base, seeds=[0, 1], n_gpus=0, poll_s=0.5, progress=False)
    assert [r["run_name"] for r in results] == ["indep-s0", "indep-s1"]
    assert all(r["returncode"] == 0 and r["steps"] == 2 for r in results)
    assert [r["seed"] for r in results] == [0, 1]
    assert results[0]["train_loss"] != results[1]["train_loss"]  # different seeds, different runs
    assert (tmp_path / "runs" / ".launch" / "indep-s0.log").is_file()

    bad = {**base, "run_name": "broken", "out": None}
    with pytest.raises(RuntimeError, match=r"(?s)broken-d_model--1.*exited with code 2.*d_model"):
        launch(
            "independent",
            base=bad,
            variants=[{"max_steps": 50}, {"model": {"d_model": -1}}],
            n_gpus=0,
            out_root=tmp_path / "runs2",
            poll_s=0.5,
            progress=False,
        )


def test_auto_mode_without_gpus_runs_in_process(tiny_config, tmp_path: Path) -> None:
    from mswelu.launch import launch

    data = _byte_dataset(tmp_path / "data")
    base = {**tiny_config(data, tmp_path / "runs" / "auto", **_SHORT), "max_steps": 1, "eval_every": 0}
    results = launch("auto", base=base, seeds=[3, 4], n_gpus=0, progress=False)
    assert [(r["run_name"], r["seed"], r["steps"]) for r in results] == [("auto-s3", 3, 1), ("auto-s4", 4, 1)]
    with pytest.raises(ValueError, match="unknown launch mode"):
        launch("mpi", base=base)
