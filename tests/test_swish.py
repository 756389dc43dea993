"""Swish-beta, the activation added to prove that an activation is one registration: it is SiLU at init, its
beta gradient is the derivative of the loss, and a tiny training run learns, logs and plots beta."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mswelu.modules.activations import ACTIVATIONS, make_activation, shape_values
from mswelu.modules.activations.swish import Swish


def test_swish_at_init_is_silu() -> None:
    z = torch.randn(1000) * 4
    module = make_activation("swish")
    assert shape_values(module)["beta"] == 1.0  # exactly, in fp32
    torch.testing.assert_close(module(z), F.silu(z), rtol=1e-6, atol=1e-7)
    assert shape_values(module) == {"beta": 1.0}
    assert ACTIVATIONS["swish"].learnable and not ACTIVATIONS["swish-fixed"].learnable


def test_beta_gradient_matches_finite_differences() -> None:
    z = torch.linspace(-6, 6, 301, dtype=torch.float64)
    module = Swish(beta_init=1.3).double()
    (module(z) ** 2).sum().backward()
    beta = float(module.beta.detach())
    dbeta_draw = float(torch.sigmoid(module.beta_raw.detach()))
    h = 1e-6

    def loss(b: float) -> float:
        return float(((z * torch.sigmoid(b * z)) ** 2).sum())

    fd = (loss(beta + h) - loss(beta - h)) / (2 * h)
    assert float(module.beta_raw.grad) / dbeta_draw == pytest.approx(fd, rel=1e-6)


def test_beta_is_positive_and_shapes_interpolate_line_and_relu() -> None:
    z = np.linspace(-3, 3, 7)
    from mswelu.modules.activations import curve

    np.testing.assert_allclose(curve("swish", z, {"beta": 1e-9}), z / 2, atol=1e-8)
    np.testing.assert_allclose(curve("swish", z, {"beta": 60.0}), np.maximum(z, 0), atol=1e-6)
    with pytest.raises(ValueError, match="beta_init"):
        Swish(beta_init=0.0)


@pytest.mark.slow
def test_a_tiny_swish_run_learns_and_logs_beta(tmp_path, tiny_config, embedded_data) -> None:
    from mswelu.runs.folder import load_run
    from mswelu.train import train

    out = tmp_path / "swish"
    summary = train(
        tiny_config(embedded_data, out, activation="swish", max_steps=8, lr=1e-2, tensorboard=True)
    )
    assert summary["interrupted"] is False
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(set(r["beta"]) == set(steps[0]["beta"]) for r in steps)
    assert len(steps[0]["beta"]) == 7 and "k" not in steps[0]  # tiny: 2 x (mixer + post) + 3 dense
    assert any(abs(v - 1.0) > 1e-6 for v in steps[-1]["beta"].values())  # beta learned
    assert summary["beta"] == pytest.approx(steps[-1]["beta"], abs=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert {s["activation"] for s in config["_shape_slots"]} == {"swish"}
    assert all(s["learnable"] == ["beta"] for s in config["_shape_slots"])
    run = load_run(out)
    assert run.shape_params() == ["beta"] and run.final_shape("beta") == pytest.approx(summary["beta"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "tb"))
    tb.Reload()
    assert any(tag.startswith("beta/") for tag in tb.Tags()["scalars"])
