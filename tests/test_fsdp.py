"""FSDP2 on CPU (gloo, ``torchrun --nproc_per_node 2``): training equals one process on the same global batch
(Mamba-1 with AdamW; the hybrid with Muon and gradient accumulation), sharded (DCP) checkpoints resume
exactly, load on another number of processes both ways, and ``final/`` is an ordinary model folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_train import write_byte_dataset

from mswelu.train import train

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def byte_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_byte_dataset(tmp_path_factory.mktemp("bytes") / "data")


def _cfg(data: Path, out: Path, **kw: object) -> dict:
    cfg = dict(
        preset="tiny",
        data=str(data),
        out=str(out),
        max_steps=10,
        batch_size=4,
        seq_len=16,
        lr=3e-3,
        warmup=2,
        eval_every=5,
        eval_batches=2,
        log_every=1,
        ckpt_every=5,
        keep_checkpoints=0,
        dtype="fp32",
        progress=False,
        tensorboard=False,
    )
    cfg.update(kw)
    return cfg


def _torchrun(cfg: dict, tmp: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    path = tmp / f"{Path(cfg['out']).name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    cmd += ["-m", "mswelu.train", "--config", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _losses(run: Path) -> dict[int, dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {r["step"]: r for r in lines if "loss" in r}


def _assert_same(a: dict[int, dict], b: dict[int, dict], steps, rel: float, what: str) -> None:
    for step in steps:
        for key in ("loss", "grad_norm"):
            assert b[step][key] == pytest.approx(a[step][key], rel=rel), (what, key, step)
        if "k" in a[step]:
            assert b[step]["k"] == pytest.approx(a[step]["k"], rel=rel, abs=1e-7), (what, "k", step)


@pytest.mark.parametrize(
    "variant",
    [
        {"optimizer": "adamw"},
        {"optimizer": "muon", "micro_batch_size": 1, "model": {"layer_pattern": "MA"}, "ckpt_every": 1},
    ],
    ids=["mamba1-adamw", "hybrid-muon-accumulation"],
)
def test_fsdp_equals_one_process(tmp_path: Path, byte_dataset: Path, variant: dict) -> None:
    one = train(_cfg(byte_dataset, tmp_path / "one", **variant))
    proc = _torchrun(_cfg(byte_dataset, tmp_path / "two", parallel="fsdp", **variant), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    two = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert two["world_size"] == 2 and one["tokens"] == two["tokens"] == 10 * 4 * 16
    if "micro_batch_size" in variant:
        assert two["grad_accum"] == 2
    # Muon orthogonalises in bf16 (torch's Newton-Schulz): an fp32 summation-order difference (here 1 process
    # x 4 micro-batches vs 2 x 2) can flip a bf16 rounding, and Newton-Schulz amplifies it from step to step.
    # So Muon is held to 1e-4 on the losses (AdamW: 1e-5) and, after its first step, to 1e-4 on the weights;
    # orthogonalising each shard on its own instead of the whole matrix is off by ~1.4e-3 there (measured).
    muon = variant["optimizer"] == "muon"
    rel = 1e-4 if muon else 1e-5
    _assert_same(_losses(tmp_path / "one"), _losses(tmp_path / "two"), range(1, 11), rel, variant)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=rel)
    step, atol = ("step_0000001", 1e-4) if muon else ("step_0000010", 1e-5)
    wa = _weights(tmp_path / "one" / "checkpoints" / step)
    wb = _weights(tmp_path / "two" / "checkpoints" / step)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst < atol, f"largest weight difference at {step}: {worst:.2e}"
    ckpt = tmp_path / "two" / "checkpoints" / "step_0000005"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["format"] == "sharded"
    assert {"dcp/__0_0.distcp", "dcp/__1_0.distcp"} <= set(manifest["files"])


def _weights(checkpoint: Path) -> dict:
    """A checkpoint's weights by name, sharded (DCP) or full."""
    from mswelu.runs.model import _from_checkpoint

    return {k: v.detach() for k, v in _from_checkpoint(checkpoint, "cpu").state_dict().items()}


def _killed_after(run: Path, step: int, into: Path) -> Path:
    """A copy of ``run`` as a kill right after its step-``step`` checkpoint would have left it."""
    shutil.copytree(run, into)
    for later in (into / "checkpoints").glob("step_*"):
        if int(later.name.split("_")[1]) > step:
            shutil.rmtree(later)
    shutil.rmtree(into / "final", ignore_errors=True)
    (into / "summary.json").unlink(missing_ok=True)
    keep = [x for x in (into / "metrics.jsonl").read_text().splitlines() if json.loads(x)["step"] <= step]
    (into / "metrics.jsonl").write_text("\n".join(keep) + "\n")
    return into


def test_sharded_checkpoints_resume_exactly_and_across_world_sizes(tmp_path: Path, byte_dataset) -> None:
    # an uninterrupted FSDP run (2 processes) with a sharded checkpoint at step 5
    proc = _torchrun(_cfg(byte_dataset, tmp_path / "fsdp", parallel="fsdp"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    full_run = _losses(tmp_path / "fsdp")

    # killed after step 5, resumed under FSDP on 2 processes: the same numbers, exactly
    again = _killed_after(tmp_path / "fsdp", 5, tmp_path / "again")
    proc = _torchrun(_cfg(byte_dataset, again, parallel="fsdp", resume="auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_same(full_run, _losses(again), range(6, 11), 0.0, "fsdp resume")

    # the same sharded checkpoint resumed by one process (no FSDP): DCP reshards; equal within fp32 sums
    one = _killed_after(tmp_path / "fsdp", 5, tmp_path / "one")
    summary = train(_cfg(byte_dataset, one, resume="auto"))
    assert summary["steps"] == 10 and summary["world_size"] == 1
    _assert_same(full_run, _losses(one), range(6, 11), 1e-5, "2 -> 1")

    # and the other way: a one-process (full) checkpoint resumed under FSDP on 2 processes
    train(_cfg(byte_dataset, tmp_path / "single"))
    single = _losses(tmp_path / "single")
    grown = _killed_after(tmp_path / "single", 5, tmp_path / "grown")
    proc = _torchrun(_cfg(byte_dataset, grown, parallel="fsdp", resume="auto"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_same(single, _losses(grown), range(6, 11), 1e-5, "1 -> 2")

    # final/ of the FSDP run is an ordinary save_pretrained folder: it loads and generates
    import torch

    from mswelu.runs.model import load_model

    model, source = load_model(tmp_path / "fsdp")
    assert source.name == "final"
    ids = torch.randint(0, 257, (1, 5))
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)
    # the sharded checkpoint alone also gives the model (what a run without final/ falls back to)
    from mswelu.runs.model import _from_checkpoint

    model5 = _from_checkpoint(tmp_path / "fsdp" / "checkpoints" / "step_0000005", "cpu")
    assert torch.isfinite(model5(ids).logits).all()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"parallel": "fsdp"}, "one process"),
        ({"cpu_offload": True}, "needs parallel='fsdp'"),
        ({"fsdp_param_dtype": "bf16"}, "needs parallel='fsdp'"),
        ({"parallel": "zero3"}, "unknown parallel 'zero3'"),
    ],
)
def test_unsupported_combinations_stop_before_anything_is_written(
    tmp_path: Path, byte_dataset: Path, settings: dict, message: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        train(_cfg(byte_dataset, out, **settings))
    assert not out.exists()
