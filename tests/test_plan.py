"""The planner: its parameter, gradient and optimizer bytes equal real tensors (one process, and rank 0 of a
2-process FSDP run), its activation estimate (the blocks' own declarations) is within a factor of two of the
memory a CPU training step measurably keeps, and it plans the seeds' large shapes on 6 x 24 GB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mswelu import plan as P
from mswelu.models.build import activation_bytes, build_model, measure_activation_bytes
from mswelu.models.configuration import MsweluConfig
from mswelu.modules.mixers import mixer_spec
from mswelu.training.optim import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def test_memory_sizes() -> None:
    assert P.parse_memory("24GB") == P.parse_memory("24GiB") == P.parse_memory(24) == 24 * 2**30
    assert P.parse_memory("512MB") == 512 * 2**20
    with pytest.raises(ValueError, match="24GB"):
        P.parse_memory("lots")


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
@pytest.mark.parametrize("preset", ["tiny", "mamba2-tiny"])
def test_state_bytes_equal_real_tensors_in_one_process(preset: str, optimizer: str) -> None:
    model = build_model(preset, 300, 32, activation="swelu-fixed", learnable_lambda=True)
    opt = build_optimizer(model, optimizer, lr=1e-3)
    ids = torch.randint(0, 300, (2, 17))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    params = {id(p): p for p in model.parameters()}.values()
    real = {
        "params": sum(p.numel() * 4 for p in params),
        "grads": sum(p.grad.numel() * 4 for p in params if p.grad is not None),
        "optimizer": sum(
            t.numel() * t.element_size()
            for o in opt.optimizers
            for st in o.state.values()
            for t in st.values()
            if torch.is_tensor(t)
        ),
    }
    with torch.device("meta"):
        meta = build_model(preset, 300, 32, activation="swelu-fixed", learnable_lambda=True)
    assert P.state_bytes(meta, 1, "ddp", optimizer) == real


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_sharded_state_bytes_equal_rank_zero_of_a_real_fsdp_run(optimizer: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(ROOT / "tests" / "fsdp_state_bytes.py"), "tiny", optimizer]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("STATE "))[6:])
    with torch.device("meta"):
        meta = build_model("tiny", 300, 32)
    assert P.state_bytes(meta, 2, "fsdp", optimizer) == real


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("preset", ["tiny", "small", "hybrid-small", "mamba2-small"])
def test_activation_estimate_is_within_a_factor_of_two_of_a_measurement(preset: str, bf16: bool) -> None:
    """Measured: every tensor a CPU training step saves for its backward."""
    config = MsweluConfig.for_run(preset, 512, 64)
    measured = measure_activation_bytes(preset, 64, bf16=bf16)
    estimate = activation_bytes(config, 64, bf16=bf16)["total"]
    assert 0.5 <= measured / estimate <= 2.0, (measured, estimate)
    assert activation_bytes(config, 64, bf16=bf16, checkpointing=True)["total"] < estimate
    # the blocks' share is what each block class declares (the plan names no mixer)
    s = 2 if bf16 else 4
    declared = sum(mixer_spec(m).block.activation_bytes(config, s) for m in config.layer_mixers())
    assert activation_bytes(config, 64, bf16=bf16)["blocks"] == 64 * declared


@pytest.mark.parametrize(
    ("preset", "mode"), [("seed-124m", "ddp"), ("mamba-1.4b", "fsdp"), ("seed004-hybrid", "ddp")]
)
def test_plans_for_the_seeds_shapes_on_six_24gb_gpus(preset: str, mode: str, capsys) -> None:
    assert P.main(["--preset", preset, "--gpus", "6", "--gpu-memory", "24GB"]) == 0
    text = capsys.readouterr().out
    plan = P.make_plan(preset, 6, P.parse_memory("24GB"))
    assert plan.fits and plan.parallel == mode and plan.micro_batch >= 1
    assert plan.global_batch == plan.micro_batch * plan.grad_accum * 6
    assert plan.tokens_per_step == plan.global_batch * plan.seq_len
    assert f"--nproc_per_node 6 -m mswelu.train --preset {preset}" in text and f"--parallel {mode}" in text
    whole = P.state_bytes(P._meta_model(preset, None, plan.seq_len, {}), 1, "ddp", "adamw")
    assert sum(whole.values()) == 16 * plan.parameters + 4 * len(
        list(P._meta_model(preset, None, 8, {}).parameters())
    )


def test_an_unplannable_request_says_so() -> None:
    plan = P.make_plan("mamba-1.4b", 1, P.parse_memory("8GB"))
    assert not plan.fits and "does not fit" in P.render(plan)
    assert P.main(["--preset", "nosuch", "--gpus", "2"]) == 2
