"""The Mamba-2 benchmark runs end to end and prints its JSON (tiny sizes; no timing asserts)."""

from __future__ import annotations

import json

from mswelu.bench import BENCHMARKS
from mswelu.bench import mamba2 as bench_mamba2


def test_mamba2_bench_json(capsys) -> None:
    assert BENCHMARKS["mamba2"] == "mswelu.bench.mamba2"
    argv = ["--json", "--layers", "1", "--d-model", "64", "--seq-len", "24", "--batch", "1", "--repeats", "1"]
    argv += ["--chunk-sizes", "8", "16", "--no-memory", "--model-layers", "1", "--modes", "fp32", "bf16"]
    assert bench_mamba2.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "mamba2" and out["config"]["d_model"] == 64
    assert out["config"]["max_rel_diff_fp32"] < 1e-4  # the two stacks hold the same weights
    assert set(out["stack"]) == {"fp32", "bf16"}
    for res in out["stack"].values():
        assert res["mswelu"]["seconds"] > 0 and res["transformers"]["seconds"] > 0 and res["speedup"] > 0
    assert set(out["ssd"]["bf16"]) == {"mswelu_chunk8", "mswelu_chunk16", "transformers_chunk256"}
    assert set(out["goal"]["met"]) == {"fp32", "bf16"}
    whole = out["model"]  # the whole model at the same width: bench model's measurement
    assert whole["config"]["preset"] == "mamba2-130m" and whole["config"]["d_model"] == 64
    assert {r["best_transformers"] for r in whole["results"].values()} == {"transformers_torch"}
