"""``python -m mswelu.bench train``: the report's figures are consistent (no speed is asserted)."""

from __future__ import annotations

import json
import math

from mswelu.bench import train as bench


def test_training_benchmark_reports_consistent_figures() -> None:
    r = bench.run("tiny", batch_size=2, seq_len=16, steps=1, vocab_size=512)
    assert r["parameters"] > 0 and list(r["paths"]) == ["fp32-logits", "fp32", "bf16-torch", "bf16"]
    assert r["paths"]["fp32-logits"]["speedup"] == 1.0
    for e in r["paths"].values():
        assert math.isclose(e["speedup"], e["tokens_per_s"] / r["paths"]["fp32-logits"]["tokens_per_s"])
        assert math.isclose(e["tokens_per_s"], 2 * 16 / e["step_seconds"])
        assert math.isclose(e["model_gflops"], 6 * r["parameters"] * 32 / e["step_seconds"] / 1e9)
        assert math.isclose(e["share_of_fp32_peak"], e["model_gflops"] / r["matmul_peak_gflops"]["fp32"])
        assert all(math.isfinite(v) for v in e["loss_first_last"])
        shares = e["components"]
        assert math.isclose(sum(shares.values()), 1.0) and all(v >= 0 for v in shares.values())
        # every labelled part is found: the scan (forward label and autograd's backward node), the head
        # (ops with the vocabulary as a dimension) and the optimizer
        assert shares["scan"] > 0 and shares["head_and_loss"] > 0 and shares["optimizer"] > 0
        assert shares["swelu"] > 0 and shares["conv"] > 0


def test_cli_json(capsys) -> None:
    assert (
        bench.main(
            [
                "--preset",
                "tiny",
                "--batch-size",
                "2",
                "--seq-len",
                "16",
                "--steps",
                "1",
                "--paths",
                "fp32",
                "--vocab-size",
                "512",
                "--no-components",
                "--json",
            ]
        )
        == 0
    )
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(r["paths"]) == ["fp32"] and "components" not in r["paths"]["fp32"]
    assert bench.main(["--preset", "nope", "--steps", "1", "--paths", "fp32"]) == 2
    assert bench.main(["--preset", "tiny", "--steps", "1", "--paths", "fp16"]) == 2
