"""The side-by-side throughput measurement: every variant built at the study's shape, rounds interleaved in
a rotating order, one row per variant with its FLOPs per token. (Speed itself is never asserted.)"""

from __future__ import annotations

import pytest

from mswelu.bench.throughput import main, measure_throughput
from mswelu.models import build as models
from mswelu.models.flops import model_flops_per_token


def test_variants_are_measured_interleaved(monkeypatch):
    calls = []
    real = models.lm_loss

    def recording(model, x, y):
        calls.append((model.config.activation, tuple(x.shape)))
        return real(model, x, y)

    monkeypatch.setattr(models, "lm_loss", recording)
    base = {"preset": "tiny", "batch_size": 2, "seq_len": 16, "optimizer": "adamw", "lr": 1e-3}
    configs = {"silu": {**base, "activation": "silu"}, "swelu": {**base, "activation": "swelu"}}
    table = measure_throughput(configs, vocab_size=512, rounds=3, steps=2, warmup=1).set_index("variant")
    assert list(table.index) == ["silu", "swelu"] and (table.tokens_per_s > 0).all()
    assert all(len(r) == 3 for r in table["rounds"]) and table.loc["silu", "vs_first"] == 1.0
    assert table.loc["swelu", "tokens_per_s"] == pytest.approx(sorted(table.loc["swelu", "rounds"])[1])
    # warm-up (1 step each), then rounds of 2 steps in a rotating order: silu swelu, swelu silu, silu swelu
    order = [a for a, _ in calls[2:]]
    assert order == ["silu"] * 2 + ["swelu"] * 4 + ["silu"] * 4 + ["swelu"] * 2
    assert set(s for _, s in calls) == {(2, 16)}
    built = models.build_model("tiny", 512, 16, "swelu", eos_token_id=511)
    assert table.loc["swelu", "flops_per_token"] == model_flops_per_token(built, 16)["training"]


def test_the_command_line(capsys):
    assert (
        main(
            [
                "--preset",
                "tiny",
                "--batch-size",
                "2",
                "--seq-len",
                "16",
                "--vocab-size",
                "512",
                "--variants",
                "mamba,mamba-swelu",
                "--rounds",
                "1",
                "--steps",
                "1",
                "--optimizer",
                "adamw",
            ]
        )
        == 0
    )
    assert "mamba-swelu" in capsys.readouterr().out
    assert main(["--variants", "nope", "--preset", "tiny"]) == 2
