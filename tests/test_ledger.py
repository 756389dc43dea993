"""A study's ledger: a finished run's record holds what its report needs, a rerun without any run folder
(a fresh clone) rebuilds the same results from the records without training, and a change on the training
path invalidates exactly the records whose runs that file is on."""

from __future__ import annotations

import json
import shutil

import pytest

from mswelu import workbook as wb
from mswelu.workbook import compare as C
from mswelu.workbook import ledger as L
from mswelu.workbook.compare import variant_config
from mswelu.workbook.reuse import as_run
from mswelu.workbook.study import study_from_records


@pytest.fixture
def base(tiny_config, embedded_data, tmp_path, monkeypatch) -> dict:
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    cfg = tiny_config(embedded_data, tmp_path / "unused", max_steps=4, eval_every=2, eval_batches=0)
    cfg.pop("out")
    return cfg


def test_records_rebuild_a_comparison_without_training(base, tmp_path, monkeypatch) -> None:
    ledger = L.Ledger(tmp_path / "study" / "runs")
    first, curves, runs = wb.run_variants(base, ["mamba", "mamba2"], [0, 1], prefix="led", ledger=ledger)
    files = sorted(p.name for p in ledger.folder.glob("*.json"))
    assert files == [f"led-{v}-s{s}.json" for v in ("mamba", "mamba2") for s in (0, 1)]
    assert sum(p.stat().st_size for p in ledger.folder.glob("*.json")) < 60_000  # small text
    record = ledger.records()["led-mamba2-s1"]
    assert record.key["settings"]["seed"] == 1 and record.key["code"]["digest"]
    assert "modules/mamba2_mixer.py" in record.key["code"]["files"]
    assert record.final["val_scope"] == "whole split" and len(record.curve) >= 2
    assert not record.units.empty and record.shapes == {}  # SiLU: no shape values
    # a fresh clone: no run folders; nothing may train
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(
        C, "train_or_load", lambda *a, **k: pytest.fail("trained instead of reusing a record")
    )
    again, again_curves, again_runs = wb.run_variants(
        base, ["mamba", "mamba2"], [0, 1], prefix="led", ledger=ledger
    )
    cols = ["variant", "seed", "val_loss", "val_bpb", "tokens", "params"]
    assert again[cols].to_dict("records") == first[cols].to_dict("records")
    assert again_curves[["step", "val_loss"]].equals(curves[["step", "val_loss"]])
    assert all(r.reused for r in again_runs.values())


def test_a_training_path_change_invalidates_exactly_the_runs_it_is_on(base, tmp_path, monkeypatch) -> None:
    ledger = L.Ledger(tmp_path / "study" / "runs")
    wb.run_variants(base, ["mamba", "mamba2"], [0], prefix="inv", ledger=ledger)
    real = L.training_code

    def edited(config):  # as if modules/mamba2_mixer.py had changed
        code = real(config)
        if "modules/mamba2_mixer.py" in code["files"]:
            code = {"digest": "changed", "files": {**code["files"], "modules/mamba2_mixer.py": "edited"}}
        return code

    monkeypatch.setattr(L, "training_code", edited)
    for variant, stale in (("mamba", False), ("mamba2", True)):
        name = f"inv-{variant}-s0"
        cfg = as_run(variant_config(base, variant), name, seed=0)
        record, why = ledger.lookup(name, cfg)
        assert (record is None) == stale
        assert (why == "training code changed: modules/mamba2_mixer.py") if stale else why is None
    other = as_run({**variant_config(base, "mamba"), "lr": 0.5}, "inv-mamba-s0", seed=0)
    assert ledger.lookup("inv-mamba-s0", other) == (None, "settings differ: lr")


def test_side_by_side_throughput_is_recorded_and_reused(base, tmp_path, monkeypatch) -> None:
    ledger = L.Ledger(tmp_path / "study" / "runs")
    table = wb.side_by_side_throughput(base, ["mamba", "mamba-swelu"], ledger=ledger, rounds=1)
    assert set(table.variant) == {"mamba", "mamba-swelu"} and (table.tokens_per_s > 0).all()
    saved = json.loads((tmp_path / "study" / "throughput.json").read_text())
    assert set(saved["keys"]) == {"mamba", "mamba-swelu"}
    import mswelu.workbook.throughput as T

    monkeypatch.setattr(T, "measure_throughput", lambda *a, **k: pytest.fail("measured again"))
    again = wb.side_by_side_throughput(base, ["mamba", "mamba-swelu"], ledger=ledger, rounds=1)
    assert list(again.variant) == list(table.variant)


@pytest.mark.parametrize(
    "study, models, tokens",
    [("mamba-swelu-cpu", 18, 409_600), ("activations-cpu", 40, 1_024_000), ("folds-cpu", 16, 1_024_000)],
)
def test_the_committed_study_rebuilds_from_its_records_alone(study: str, models: int, tokens: int) -> None:
    """A committed study (the first, the second, the third's folds) from its parameter file, ledger records
    and throughput alone, as a fresh clone has them (no run folder, no dataset, nothing trained): the claims
    notebook 05 judged give the committed table again, row by row."""
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from mswelu import analysis

    root = Path(__file__).resolve().parent.parent
    rebuilt = study_from_records(study, root=root)
    data, claims = rebuilt.data, rebuilt.claims
    rows = analysis.evaluate_claims(claims, data)
    committed = json.loads((root / "reports" / "studies" / study / "metrics.json").read_text())["metrics"]
    table = pd.DataFrame(committed["study"]["rows"])
    assert len(data.runs) == models and data.runs.tokens.min() == tokens
    assert list(rows.claim) == list(table.claim) and list(rows.verdict) == list(table.verdict)
    for col in ("measured", "why"):
        assert rows[col].fillna("").tolist() == table[col].fillna("").tolist(), col
    # not judged: NaN in the table, null in the file; the records keep 7 significant digits (tokens/s of the
    # equal-time rows), so the rebuilt p-values agree to about 1e-5 of themselves
    for col in ("p", "p (Holm)", "MDE (80%)"):
        got, want = pd.to_numeric(rows[col]).to_numpy(float), pd.to_numeric(table[col]).to_numpy(float)
        assert np.allclose(got, want, rtol=1e-4, atol=0, equal_nan=True), col
    assert {row["claim"]: row["verdict"] for _, row in table.iterrows()} == committed["claims"]


def test_a_records_data_key_is_what_the_data_hold_not_where(embedded_data, tmp_path) -> None:
    """Two clones of a study key their data alike (a dataset's own fingerprint may name a path); other
    tokens do not."""
    data_content = L.data_content

    moved = tmp_path / "elsewhere"
    shutil.copytree(embedded_data, moved)
    meta = json.loads((moved / "meta.json").read_text())
    meta.update(tokenizer="/another/machine/tokenizer.json", fingerprint="0123456789abcdef")
    (moved / "meta.json").write_text(json.dumps(meta))
    assert data_content(moved) == data_content(embedded_data)
    meta["splits"]["val"]["sha256"] = "0" * 64
    (moved / "meta.json").write_text(json.dumps(meta))
    assert data_content(moved) != data_content(embedded_data)


def test_the_committed_studys_metrics_come_from_the_one_assembly() -> None:
    """Notebook 05 and the rebuild from records share :func:`assemble_study`: the rebuilt study's
    ``metrics.json`` figures (the lr and the seeds' summary per variant, the counts, the verdicts) are the
    committed ones."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    study = study_from_records("activations-cpu", root=root)
    judged, counts = study.judge()
    got = study.metrics(judged, counts)
    want = json.loads((root / "reports" / "studies" / "activations-cpu" / "metrics.json").read_text())[
        "metrics"
    ]
    assert got["lr"] == want["lr"] and got["counts"] == want["counts"] and got["claims"] == want["claims"]
    assert list(study.table.index) == list(want["variants"])
    for variant, figures in want["variants"].items():
        mine = got["variants"][variant]
        assert {k: mine[k] for k in ("params", "seeds", "lr")} == {
            k: figures[k] for k in ("params", "seeds", "lr")
        }
        for k in ("val_bpb_mean", "val_bpb_sd", "val_loss_mean", "val_loss_sd"):
            assert mine[k] == pytest.approx(figures[k], rel=1e-6), (variant, k)
    assert got["study"]["context"] == want["study"]["context"]


def test_a_probe_study_keeps_its_accuracies_and_a_second_sitting_trains_nothing(
    tmp_path, monkeypatch
) -> None:
    """Notebook 07's probes through a study's ledger: each record keeps every evaluation's exact-match
    accuracy and names its task; a fresh clone (no run folder) rebuilds the same results from the records;
    two tasks of the same vocabulary key their data apart."""
    from mswelu.workbook import probes

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    base = wb.comparison_config(
        preset="tiny",
        data="task:mqar",
        max_steps=4,
        batch_size=4,
        seq_len=1,
        lr=3e-3,
        optimizer="adamw",
        model={},
        ckpt_every=0,
        device="cpu",
        overwrite=False,
        evaluations=2,
    )
    tasks = {"mqar": ["easy"], "inverse_matching": ["easy"]}
    ledger = L.Ledger(tmp_path / "study" / "runs")
    first, curves = probes.run_probes(base, tasks, ["mamba"], [0], "pr", test_examples=16, ledger=ledger)
    records = ledger.records()
    assert sorted(records) == ["pr-inversematching-easy-mamba-s0", "pr-mqar-easy-mamba-s0"]
    for name, record in records.items():
        assert record.key["task"].startswith("task:" + ("mqar" if "mqar" in name else "inverse_matching"))
        assert len(record.curve) >= 2 and all(0 <= r["val_accuracy"] <= 1 for r in record.curve)
    keys = {r.key["data_fingerprint"] for r in records.values()}
    assert len(keys) == 2
    shutil.rmtree(tmp_path / "runs")
    monkeypatch.setattr(
        C, "train_or_load", lambda *a, **k: pytest.fail("trained instead of reusing a record")
    )
    again, again_curves = probes.run_probes(
        base, tasks, ["mamba"], [0], "pr", test_examples=16, ledger=ledger
    )
    cols = ["task", "variant", "seed", "val_accuracy", "val_loss", "tokens", "params"]
    assert again[cols].to_dict("records") == first[cols].to_dict("records")
    assert again_curves.equals(curves)


def test_a_study_over_several_splits_rebuilds_from_its_records(tiny_config, tmp_path, monkeypatch) -> None:
    """Seeds nested in disjoint folds of the corpus (notebook 05's ``splits``): each split's runs named and
    keyed apart, a ``split`` column the analysis takes as its unit, and the study rebuilt from its records
    alone (a fresh clone) gives the same verdicts."""
    import yaml

    from mswelu import analysis

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    splits = [{"folds": 3, "fold": 1}, {"folds": 3, "fold": 2}]
    with pytest.raises(ValueError, match="tuning split"):
        wb.split_data([{"folds": 3, "fold": 0}], "tiny")
    folders = wb.split_data(splits, "tiny")
    assert list(folders) == ["fold1", "fold2"]
    base = tiny_config(folders["fold1"], tmp_path / "unused", max_steps=4, eval_every=2, eval_batches=0)
    base.pop("out")
    params = {
        "variants": ["mamba", "mamba-swelu"],
        "seeds": [0, 1],
        "splits": splits,
        "preset": "tiny",
        "max_steps": 4,
        "batch_size": 4,
        "seq_len": 16,
        "tokenizer": "gpt2",
        "claims": ["seed"],
        "compare": {"swelu": "mamba-swelu", "silu": "mamba"},
    }
    ledger = L.Ledger(tmp_path / "reports" / "studies" / "sp" / "runs")
    results, curves, runs = wb.run_variants(
        base, params["variants"], params["seeds"], prefix="sp", ledger=ledger, splits=folders
    )
    assert sorted(runs) == sorted(
        f"sp-{f}-{v}-s{s}" for f in ("fold1", "fold2") for v in ("mamba", "mamba-swelu") for s in (0, 1)
    )
    keys = {f: {r.key["data_fingerprint"] for n, r in runs.items() if f in n} for f in folders}
    assert all(len(k) == 1 for k in keys.values()) and keys["fold1"] != keys["fold2"]
    assert set(results.split) == set(curves.split) == {"fold1", "fold2"}
    throughput = wb.side_by_side_throughput(base, params["variants"], ledger=ledger, rounds=1)
    study = wb.assemble_study(
        "sp", params, results, curves, runs, {v: 3e-3 for v in params["variants"]}, None, throughput
    )
    assert study.data.context["splits"] == ["fold1", "fold2"]
    assert "folds 1, 2 of 3" in study.data.context["data"]
    judged, _ = study.judge()
    (tmp_path / "notebooks" / "studies").mkdir(parents=True)
    (tmp_path / "notebooks" / "studies" / "sp.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(tmp_path / "runs")
    rebuilt = study_from_records("sp", root=tmp_path)
    again = analysis.evaluate_claims(rebuilt.claims, rebuilt.data)
    assert list(again.verdict) == list(judged.verdict) and list(again.measured) == list(judged.measured)
    assert any("2 splits" in str(m) or "split" in str(m) for m in again.measured)


def test_equal_time_trains_the_slower_variant_on_its_own_schedule_and_rebuilds(base, tmp_path, monkeypatch):
    """``equal_time``: the slower variant of the equal-time pair trains again on its own complete schedule
    for the steps that fit the faster one's time at their side-by-side tokens/s; the row is judged on those
    runs (no curve read), and the study rebuilds from its records, which must match the committed speeds."""
    import pandas as pd
    import yaml

    from mswelu import analysis
    from mswelu.analysis.equal_time import TimeMatch
    from mswelu.workbook import throughput as T

    variants, seeds = ["mamba", "mamba-swelu"], [0, 1]
    params = {"variants": variants, "seeds": seeds, "preset": "tiny", "max_steps": 4, "batch_size": 4,
              "seq_len": 16, "tokenizer": "gpt2", "claims": ["compute"], "equal_time": True,
              "compare": {"swelu": "mamba-swelu", "silu": "mamba"}}  # fmt: skip
    speeds = pd.DataFrame(  # SWELU at half SiLU's tokens/s, four interleaved rounds
        [
            {"variant": "mamba", "tokens_per_s": 1000.0, "flops_per_token": 1e6, "tokens_per_s_min": 900.0,
             "tokens_per_s_max": 1100.0, "rounds": [1000.0, 900.0, 1100.0, 1000.0]},
            {"variant": "mamba-swelu", "tokens_per_s": 500.0, "flops_per_token": 1e6,
             "tokens_per_s_min": 450.0, "tokens_per_s_max": 550.0, "rounds": [500.0, 500.0, 550.0, 450.0]},
        ]
    )  # fmt: skip
    monkeypatch.setattr(T, "measure_throughput", lambda configs, **kw: speeds)
    ledger = L.Ledger(tmp_path / "reports" / "studies" / "eq" / "runs")
    results, curves, runs = wb.run_variants(base, variants, seeds, prefix="eq", ledger=ledger)
    throughput = wb.side_by_side_throughput(base, variants, ledger=ledger)
    plan = wb.time_plan(params, throughput)
    assert plan == [TimeMatch("mamba-swelu", "mamba", 0.5, 2, 2, 2)]
    assert wb.time_plan({**params, "equal_time": False}, throughput) == []
    lrs = {v: base["lr"] for v in variants}
    matched, matched_runs = wb.time_matched_runs(base, plan, seeds, "eq", lrs, ledger=ledger)
    assert list(matched.run) == ["eq-mamba-swelu-time-s0", "eq-mamba-swelu-time-s1"]
    assert set(matched.steps) == {2} and set(matched.tokens) == {2 * 4 * 16}
    record = ledger.records()["eq-mamba-swelu-time-s0"]
    assert record.kind == "time" and record.config["max_steps"] == 2 and record.config["warmup"] == 1

    study = wb.assemble_study("eq", params, results, curves, runs, lrs, None, throughput, matched)
    judged, _ = study.judge()
    row = judged.set_index("claim").loc["SWELU better than SiLU at equal wall-clock time"]
    assert "trained 2 of 4 steps on its own complete schedule" in row.measured
    assert "approximation" not in row.measured and "approximation" not in row.why
    full = results[results.variant == "mamba"].set_index("seed").val_loss
    short = matched.set_index("seed").val_loss
    gain = sum((full[s] - short[s]) / full[s] for s in seeds) / len(seeds)
    assert row.estimate == pytest.approx(gain * 100) or row.estimate == pytest.approx(gain)

    (tmp_path / "notebooks" / "studies").mkdir(parents=True)
    (tmp_path / "notebooks" / "studies" / "eq.yaml").write_text(yaml.safe_dump(params))
    shutil.rmtree(tmp_path / "runs")
    rebuilt = study_from_records("eq", root=tmp_path)
    again = analysis.evaluate_claims(rebuilt.claims, rebuilt.data)
    assert list(again.verdict) == list(judged.verdict) and list(again.measured) == list(judged.measured)
    path = ledger.path("eq-mamba-swelu-time-s1")
    doc = json.loads(path.read_text())
    doc["key"]["settings"]["max_steps"] = 3  # trained for a budget the committed speeds do not give
    path.write_text(json.dumps(doc))
    with pytest.raises(L.LedgerError, match="trained 3 steps; the study's throughput.json fits 2"):
        study_from_records("eq", root=tmp_path)


def test_the_code_digest_builds_only_valid_model_configs(monkeypatch) -> None:
    """The digest builds a stand-in config (512 token ids) to find a run's mixers and activation: its special
    token ids must fit that vocabulary (GPT-2's 50256 did not, and transformers warned on every run key)."""
    from mswelu.models.configuration import MsweluConfig
    from mswelu.training.code_digest import training_code

    built = []
    real = MsweluConfig.for_run.__func__

    def spy(cls, *args, **kwargs):
        cfg = real(cls, *args, **kwargs)
        built.append(cfg)
        return cfg

    monkeypatch.setattr(MsweluConfig, "for_run", classmethod(spy))
    for preset in ("small", "tiny", "mamba2-130m"):
        training_code({"preset": preset, "seq_len": 64, "model": {"d_state": 4}})
    assert len(built) == 3
    for cfg in built:
        for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
            value = getattr(cfg, name, None)
            assert value is None or 0 <= value < cfg.vocab_size, (cfg.model_type, name, value)
