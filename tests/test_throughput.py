"""The side-by-side throughput measurement: every variant built as the trainer builds it at the study's
shape, rounds interleaved in a rotating order until each variant's time is spent, one row per variant with
its spread and its ratio to its mixer's SiLU reference. (Speed itself is never asserted.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import mswelu.bench.throughput as T
import mswelu.workbook.throughput as M
from mswelu.models import build as models
from mswelu.models.flops import model_flops_per_token
from mswelu.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "notebooks" / "studies" / "activations-cpu.yaml"


def test_spread_is_the_median_with_min_max_and_quartiles() -> None:
    s = M.spread([4.0, 1.0, 10.0, 3.0, 2.0])
    assert s == {"median": 3.0, "min": 1.0, "max": 10.0, "q1": 2.0, "q3": 4.0}
    assert M.spread([1.0, 2.0]) == {"median": 1.5, "min": 1.0, "max": 2.0, "q1": 1.25, "q3": 1.75}
    with pytest.raises(ValueError):
        M.spread([])


def test_rounds_rotate_the_order() -> None:
    names = ["a", "b", "c"]
    assert [M.rotation(names, r) for r in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def test_each_variant_is_held_to_its_mixers_silu_reference() -> None:
    from mswelu.training.variants import variant_overrides

    def ref(variant: str) -> str | None:
        return M.silu_reference({"preset": "small", **variant_overrides(variant, "small")})

    assert [ref(v) for v in ("mamba", "mamba-swelu", "swelu-residual", "mamba2-swelu", "gpt2")] == [
        "mamba",
        "mamba",
        "mamba",
        "mamba2",
        None,
    ]
    assert M.silu_reference({"preset": "mamba2-small"}) == "mamba2"


def _configs(data: Path) -> dict[str, dict]:
    base = {"preset": "tiny", "data": str(data), "batch_size": 2, "seq_len": 16, "optimizer": "adamw"}
    return {
        "mamba": {**base, "activation": "silu"},
        "mamba-swelu": {**base, "activation": "swelu"},
        "gpt2": {**base, "preset": "gpt2:tiny", "activation": None},
    }


def test_variants_are_measured_interleaved(embedded_data, monkeypatch) -> None:
    calls = []
    real = models.lm_loss

    def recording(model, x, y):
        calls.append((getattr(model.config, "activation", "gpt2"), tuple(x.shape)))
        return real(model, x, y)

    monkeypatch.setattr(models, "lm_loss", recording)
    table = M.measure_throughput(_configs(embedded_data), rounds=3, steps=2, warmup=1).set_index("variant")
    assert list(table.index) == ["mamba", "mamba-swelu", "gpt2"] and (table.tokens_per_s > 0).all()
    assert all(len(r) == 3 for r in table["rounds"])
    swelu = table.loc["mamba-swelu"]
    assert (
        swelu.tokens_per_s
        == pytest.approx(sorted(swelu.rounds)[1])
        == swelu.vs_silu * table.tokens_per_s.mamba
    )
    assert swelu.tokens_per_s_min == min(swelu.rounds) and swelu.silu_reference == "mamba"
    # warm-up (1 step each), then rounds of 2 steps in a rotating order
    order = [a for a, _ in calls[3:]]
    rounds = [["silu", "swelu", "gpt2"], ["swelu", "gpt2", "silu"], ["gpt2", "silu", "swelu"]]
    assert order == [v for r in rounds for v in r for _ in range(2)]
    assert {s for _, s in calls} == {(2, 16)}
    assert table.loc["mamba", "vs_silu"] == 1.0 and M.pd.isna(table.loc["gpt2", "silu_reference"])
    built = models.build_model("tiny", 50257, 16, "swelu", eos_token_id=50256)
    assert swelu.flops_per_token == model_flops_per_token(built, 16)["training"]


def test_rounds_go_on_until_every_variant_had_its_seconds(embedded_data, monkeypatch) -> None:
    """A clock that advances one second per reading: each timed block takes 1 s, so 2.5 s per variant takes
    three rounds, more than the one asked for."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(M.time, "perf_counter", lambda: float(next(ticks)))
    configs = {k: v for k, v in _configs(embedded_data).items() if k != "gpt2"}
    table = M.measure_throughput(configs, rounds=1, steps=1, warmup=0, seconds=2.5)
    assert [len(r) for r in table["rounds"]] == [3, 3] and list(table.seconds) == [3.0, 3.0]
    assert list(table.tokens_per_s) == [32.0, 32.0]  # 1 step x 2 x 16 tokens per second


def test_study_parameters_are_the_notebooks_with_the_file_and_the_command_line_on_top(tmp_path) -> None:
    params = T.study_parameters(STUDY, seq_len=128)
    study = yaml.safe_load(STUDY.read_text())
    assert {k: params[k] for k in study if k != "seq_len"} == {
        k: v for k, v in study.items() if k != "seq_len"
    }
    assert params["seq_len"] == 128 and params["data"] is None and params["overwrite"] is False
    assert T.study_parameters()["preset"] == "tiny"  # the notebook's own default
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: small\nbatchsize: 4\n")
    with pytest.raises(ValueError, match="batchsize"):
        T.study_parameters(bad)
    with pytest.raises(ValueError, match="not found"):
        T.study_parameters(tmp_path / "missing.yaml")


@pytest.mark.slow
def test_the_study_shape_is_the_one_measured(monkeypatch, capsys) -> None:
    """``--study activations-cpu.yaml``: every model measured has the settings of the committed study's
    throughput keys and the parameter count of its committed runs (built on the study's data)."""
    from mswelu.workbook.ledger import speed_key

    measured = {}
    real = M.measure_throughput

    def recording(configs, **options):
        measured.update(configs)
        return real(configs, **{**options, "warmup": 0})

    monkeypatch.setattr(M, "measure_throughput", recording)
    variants = ["mamba", "mamba-swelu", "mamba2", "mamba2-swelu"]
    argv = ["--study", str(STUDY), "--variants", ",".join(variants), "--seconds", "0", "--rounds", "1"]
    assert T.main([*argv, "--steps", "1"]) == 0
    assert "mamba2-swelu" in capsys.readouterr().out
    folder = ROOT / "reports" / "studies" / "activations-cpu"
    keys = json.loads((folder / "throughput.json").read_text())["keys"]
    assert list(measured) == variants
    for variant, cfg in measured.items():
        assert speed_key(cfg)["settings"] == keys[variant]["settings"]
        model, _ = M._build(TrainConfig.from_dict(cfg), M.torch.device("cpu"))
        record = json.loads((folder / "runs" / f"activations-cpu-{variant}-s0.json").read_text())
        assert models.count_parameters(model) == record["final"]["params"]
        assert model.config.d_state == record["key"]["settings"]["model"]["d_state"]


def test_record_writes_what_the_study_reads_back(tmp_path, monkeypatch) -> None:
    from mswelu import workbook as wb

    study = tmp_path / "mini.yaml"
    study.write_text("run_name: mini-speed\nstudy: true\nvariants: [mamba, mamba-swelu]\nseq_len: 16\n")
    argv = ["--study", str(study), "--seconds", "0", "--rounds", "1", "--steps", "1", "--json"]
    assert T.main([*argv, "--record"]) == 0
    monkeypatch.setattr(M, "measure_throughput", lambda *a, **k: pytest.fail("measured again"))
    params = T.study_parameters(study)
    again = wb.side_by_side_throughput(
        T.study_base(params), params["variants"], ledger=wb.study_ledger("mini-speed")
    )
    assert list(again.variant) == ["mamba", "mamba-swelu"] and list(again.vs_silu) == [1.0, again.vs_silu[1]]


def test_the_command_line_refuses_in_one_line(tmp_path, capsys) -> None:
    assert T.main(["--variants", "nope", "--seconds", "0"]) == 2
    assert "nope" in capsys.readouterr().err
    assert T.main(["--record", "--seconds", "0"]) == 2
    assert "study: true" in capsys.readouterr().err
    assert T.main(["--study", str(tmp_path / "none.yaml")]) == 2


def test_a_variant_measured_without_its_silu_reference_prints_no_ratio(capsys) -> None:
    """--variants mamba-swelu alone: no reference ran, so no ratio (it crashed on pandas' None before)."""
    import pandas as pd

    from mswelu.bench.throughput import _print

    row = {
        "batch_size": 16,
        "seq_len": 256,
        "dtype": "bf16",
        "device": "cpu",
        "rounds": [1.0],
        "seconds": 1.0,
        "tokens_per_s": 9000.0,
        "tokens_per_s_min": 9000.0,
        "tokens_per_s_max": 9000.0,
        "tokens_per_s_q1": 9000.0,
        "tokens_per_s_q3": 9000.0,
        "silu_reference": "mamba",
    }
    for missing in (None, float("nan")):
        _print(pd.DataFrame([{**row, "variant": "mamba-swelu", "vs_silu": missing}]))
        assert capsys.readouterr().out.splitlines()[-1].rstrip().endswith("1.0 s")
    _print(pd.DataFrame([{**row, "variant": "mamba-swelu", "vs_silu": 0.888}]))
    assert capsys.readouterr().out.rstrip().endswith("0.888x mamba")
