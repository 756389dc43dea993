"""The model benchmark runs end to end and prints the contract's JSON (tiny sizes; no timing asserts)."""

from __future__ import annotations

import json

from mswelu.bench import model as bench_model


def test_model_bench_json(capsys) -> None:
    argv = ["--json", "--layers", "1", "--d-model", "32", "--seq-len", "16", "--batch", "1"]
    argv += ["--vocab-size", "64", "--repeats", "1"]
    assert bench_model.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "model"
    assert set(out["results"]) >= {"mswelu", "transformers_slow", "transformers_mambapy", "config", "goal"}
    assert set(out["ratios"]) == {
        "mswelu_vs_transformers_slow",
        "mswelu_vs_transformers_mambapy",
        "mswelu_vs_best_transformers",
    }
    assert all(v > 0 for v in out["ratios"].values())
