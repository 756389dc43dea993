"""ARCHITECTURE.md's "Add an activation" recipe, done inside this file (no package file edited): a new
activation ``lambda tanh(a z)`` with two shape parameters, ``a`` learnable and ``lambda`` frozen, is
registered, and then builds in a model with the initial values its settings give, keeps ``lambda`` frozen,
puts ``a`` in the optimizer's ``shape`` group with its lr scale, learns ``a`` in a few training steps, and
shows both values in the run's metrics."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_train import write_byte_dataset
from torch import Tensor, nn

from mswelu import MsweluConfig, MsweluForCausalLM
from mswelu.modules.activations import ACTIVATIONS, Activation, ShapeParam, curve, register, shape_values
from mswelu.train import train
from mswelu.training.optim import build_optimizer

NAME = "scaled-tanh"


class ScaledTanh(nn.Module):
    """``lam * tanh(a z)``: ``a = softplus(a_raw)`` (a parameter; frozen when not learnable), ``lam`` a
    constant unless it learns (``lambda_raw``, softplus)."""

    def __init__(self, a: float, lam: float, learn_a: bool, learn_lam: bool) -> None:
        super().__init__()
        self.a_raw = nn.Parameter(torch.tensor(a + math.log(-math.expm1(-a))), requires_grad=learn_a)
        if learn_lam:
            self.lambda_raw = nn.Parameter(torch.tensor(lam + math.log(-math.expm1(-lam))))
        self.lam_init = lam

    def values(self) -> dict[str, Tensor]:
        lam = F.softplus(self.lambda_raw) if hasattr(self, "lambda_raw") else torch.tensor(self.lam_init)
        return {"a": F.softplus(self.a_raw), "lambda": lam}

    def forward(self, z: Tensor) -> Tensor:
        v = self.values()
        return v["lambda"].to(z.dtype) * torch.tanh(v["a"].to(z.dtype) * z)


def _curve(z: np.ndarray, values: Mapping[str, float]) -> np.ndarray:
    return values["lambda"] * np.tanh(values["a"] * z)


@pytest.fixture
def scaled_tanh() -> Iterator[Activation]:
    """The recipe's one call, undone after the test (the registry is global)."""
    spec = register(
        Activation(
            NAME,
            lambda init, learn: ScaledTanh(init["a"], init["lambda"], learn["a"], learn["lambda"]),
            ScaledTanh,
            params=(
                ShapeParam("a", 1.0, learnable=True, constraint="a = softplus(a_raw)"),
                ShapeParam(
                    "lambda", 1.0, learnable=False, constraint="lambda = softplus(lambda_raw) when learnable"
                ),
            ),
            elementwise=True,
            curve=_curve,
            values=ScaledTanh.values,
            description="lambda tanh(a z), a learnable",
        )
    )
    yield spec
    for name in (NAME, f"{NAME}-fixed"):
        ACTIVATIONS.pop(name, None)


SHAPE = {"a": {"init": 0.8, "lr_scale": 4.0}, "lambda": {"init": 1.5}}


def test_it_builds_with_its_settings_and_routes_its_parameters(scaled_tanh: Activation) -> None:
    model = MsweluForCausalLM(MsweluConfig.from_preset("tiny", activation=NAME, shape=SHAPE))
    slots = model.shape_slots()
    assert len(slots) == 2 * 2 + 3  # in-mixer (shared) and post-mixer per block, three dense layers
    for slot in slots:
        assert slot.activation == NAME and slot.params == ("a", "lambda") and slot.learnable == ("a",)
        assert shape_values(slot.module) == pytest.approx({"a": 0.8, "lambda": 1.5})
    z = np.linspace(-3, 3, 13)
    with torch.no_grad():
        module = slots[0].module
        got = module(torch.tensor(z, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(curve(NAME, z, shape_values(module)), got, rtol=1e-5, atol=1e-6)
    opt = build_optimizer(model, "adamw", lr=0.01)
    shape = [g for g in opt.param_groups if g["name"] == "shape"]
    assert len(shape) == 1 and shape[0]["lr"] == pytest.approx(0.04)
    assert {id(p) for p in shape[0]["params"]} == {id(s.module.a_raw) for s in slots}
    with pytest.raises(ValueError, match="unknown shape parameter 'lamda' \\(did you mean 'lambda'\\?\\)"):
        MsweluConfig.from_preset("tiny", activation=NAME, shape={"lamda": {"init": 2.0}})
    with pytest.raises(ValueError, match=f"shape.a is frozen in '{NAME}-fixed'"):
        MsweluConfig.from_preset("tiny", activation=f"{NAME}-fixed", shape={"a": {"learnable": True}})


def test_it_trains_and_its_values_are_in_the_metrics(scaled_tanh: Activation, tmp_path: Path) -> None:
    data = write_byte_dataset(tmp_path / "data")
    summary = train(
        {
            "preset": "tiny",
            "activation": NAME,
            "model": {"shape": SHAPE},
            "data": str(data),
            "out": str(tmp_path / "run"),
            "max_steps": 3,
            "batch_size": 2,
            "seq_len": 16,
            "lr": 1e-2,
            "warmup": 1,
            "eval_every": 0,
            "eval_batches": 1,
            "log_every": 1,
            "ckpt_every": 0,
            "progress": False,
            "trackers": [],
        }
    )
    run = Path(summary["run_dir"])
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in lines if "loss" in r]
    assert len(steps) == 3
    for r in steps:
        assert set(r["a"]) == set(r["lambda"]) and len(r["a"]) == 7
        assert all(v == pytest.approx(1.5) for v in r["lambda"].values())  # frozen at its init
    assert all(v != pytest.approx(0.8, abs=1e-6) for v in steps[-1]["a"].values())  # learned
    recorded = json.loads((run / "config.json").read_text())["_model_config"]["shape"]
    assert recorded == SHAPE
