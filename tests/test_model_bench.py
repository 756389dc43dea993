"""The whole-model benchmark runs end to end and prints its JSON (tiny sizes; no timing asserts): both
presets against transformers' path holding the same weights, and the share of the measured matmul peak
computed from the model's own FLOPs count."""

from __future__ import annotations

import json
import math

import pytest

from mswelu.bench import model as bench_model
from mswelu.bench import peak
from mswelu.models.flops import model_flops_per_token

TINY = ["--layers", "1", "--d-model", "64", "--seq-len", "16", "--batch", "1", "--vocab-size", "64"]


@pytest.mark.parametrize(
    ("preset", "theirs"), [("mamba-130m", "transformers_mambapy"), ("mamba2-130m", "transformers_torch")]
)
def test_model_bench_json(preset, theirs, capsys) -> None:
    assert bench_model.main(["--json", "--preset", preset, *TINY, "--repeats", "1", "--profile", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    cfg = out["config"]
    assert out["benchmark"] == "model" and cfg["preset"] == preset and set(out["results"]) == {"fp32", "bf16"}
    ours = bench_model.build(preset, 1, 64, 64)["mswelu"]
    assert cfg["training_flops_per_token"] == model_flops_per_token(ours, 16)["training"]
    for r in out["results"].values():
        assert r["best_transformers"] == theirs and r["vs_best_transformers"] > 0
        assert math.isclose(
            r["vs_best_transformers"], r["mswelu"]["tokens_per_s"] / r[theirs]["tokens_per_s"]
        )
        achieved = cfg["training_flops_per_token"] * r["mswelu"]["tokens_per_s"] / 1e9
        assert math.isclose(r["model_gflops"], achieved)
        assert math.isclose(r["share_of_peak"], achieved / r["matmul_peak_gflops"])
        assert len(r["profile"]) == 3 and r["profile"][0]["share"] >= r["profile"][1]["share"] > 0


def test_top_ops_are_sorted_shares_of_the_step() -> None:
    import torch

    a = torch.randn(64, 64)
    ops = peak.top_ops(lambda: (a @ a).relu().sum(), k=10)
    assert "aten::mm" in [o["op"] for o in ops]
    assert sum(o["share"] for o in ops) <= 1.0 + 1e-9 and ops == sorted(ops, key=lambda o: -o["share"])
