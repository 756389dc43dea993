"""Workbook helpers: run discovery and loading, profiles, variants, launch plans, smoke checks, plots."""

from __future__ import annotations

import json
import os
import time
import types

import matplotlib.pyplot as plt
import pytest

from mswelu import workbook as wb
from mswelu.base.errors import RunInterrupted
from mswelu.base.run_names import parse_run_name
from mswelu.runs.folder import list_runs, newest_run, read_jsonl
from mswelu.training.variants import hybrid_pattern, variant_overrides
from mswelu.workbook import prologue
from mswelu.workbook.profiles import PROFILES
from mswelu.workbook.prologue import check_parameters, notebook_parameters
from mswelu.workbook.reuse import reusable, train_or_load


def _write_run(path, steps=4, k_move=0.01, loss_fall=True, final=True):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"preset": "tiny", "data": None}))
    recs = []
    for s in range(1, steps + 1):
        loss = 10.0 - s if loss_fall else 10.0
        recs.append(
            {
                "step": s,
                "tokens": 64 * s,
                "loss": loss,
                "lr": {"decay": 1e-3},
                "grad_norm": 1.0,
                "tokens_per_s": 100.0,
                "k": {"blocks.0.mixer.act": 1.0 + k_move * s, "dense.0.act": 1.0},
                "lambda": {},
            }
        )
    recs.append({"step": steps, "tokens": 64 * steps, "val_loss": 7.5, "val_ppl": 1808.0, "val_bpb": 3.1})
    text = "\n".join(json.dumps(r) for r in recs) + "\n"
    (path / "metrics.jsonl").write_text(text + '{"step": 99, "tok')  # a run still writing its last line
    summary = {
        "steps": steps,
        "tokens": 64 * steps,
        "tokens_per_step": 64,
        "val_loss": 7.5,
        "val_bpb": 3.1,
        "parameters": 1234,
        "k": {"blocks.0.mixer.act": 1.0 + k_move * steps},
    }
    (path / "summary.json").write_text(json.dumps(summary))
    if final:
        (path / "final").mkdir()
        (path / "final" / "config.json").write_text('{"model_type": "mamba_swelu"}')
        (path / "final" / "model.safetensors").write_bytes(b"")
    return path


def test_read_jsonl_skips_truncated_tail_only(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a"')
    assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\nnot json\n{"a": 2}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_jsonl(p)
    assert read_jsonl(tmp_path / "missing") == []


def test_load_run_and_final_metrics(tmp_path):
    run = wb.load_run(_write_run(tmp_path / "r"))
    assert list(run.train.step) == [1, 2, 3, 4] and list(run.eval.val_loss) == [7.5]
    assert run.model_dir == tmp_path / "r" / "final"
    m = run.final_metrics()
    assert m["steps"] == 4 and m["tokens"] == 256 and m["final_val_loss"] == 7.5 and m["params"] == 1234
    assert m["final_train_loss"] == 6.0 and m["tokens_per_s"] == 100.0
    assert run.final_k() == {"blocks.0.mixer.act": pytest.approx(1.04)}
    with pytest.raises(ValueError):
        wb.load_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError):
        wb.load_run(tmp_path / "empty")


def test_newest_run_and_require_model(tmp_path):
    a = _write_run(tmp_path / "a")
    b = _write_run(tmp_path / "b", final=False)
    later = time.time() + 10
    os.utime(b / "summary.json", (later, later))
    assert newest_run(tmp_path) == b
    assert newest_run(tmp_path, require_model=True) == a
    assert list_runs(tmp_path / "missing") == [] and newest_run(tmp_path / "missing") is None


def test_smoke_checks(tmp_path):
    ok = wb.smoke_checks(wb.load_run(_write_run(tmp_path / "ok")))
    assert ok == {"steps": 4, "tokens": 256, "num_k": 2, "k_moved": 1, "loss_fell": True}
    with pytest.raises(AssertionError, match="loss did not fall"):
        wb.smoke_checks(wb.load_run(_write_run(tmp_path / "flat", loss_fall=False)))
    with pytest.raises(AssertionError, match=r"no learnable shape parameter moved from its init \(k\)"):
        wb.smoke_checks(wb.load_run(_write_run(tmp_path / "still", k_move=0.0)))
    assert wb.smoke_checks(wb.load_run(tmp_path / "still"), expect_k=False)["loss_fell"]


def test_profiles_and_variants():
    s = wb.resolve_profile("nbval", max_steps=3, lr=None)
    assert s["max_steps"] == 3 and s["lr"] == PROFILES["nbval"]["lr"] and s["preset"] == "tiny"
    main = wb.resolve_profile("cpu-10min")
    assert main["preset"] == "small" and main["tokenizer"] == "bpe:4096" and main["model"]["dense_residual"]
    assert all(p["tokenizer"] in ("gpt2", "bpe:4096") for p in PROFILES.values())  # notebook 03 pops it
    with pytest.raises(ValueError):
        wb.resolve_profile("huge")
    assert variant_overrides("silu", "small") == {"activation": "silu"}
    assert variant_overrides("gpt2", "small")["preset"] == "gpt2:small"
    assert variant_overrides("pythia", "tiny")["preset"] == "pythia:tiny"
    assert variant_overrides("hybrid", "small")["model"] == {"layer_pattern": "MAMA"}
    assert hybrid_pattern("MMMMMM") == "MAMAMA"
    with pytest.raises(ValueError):
        variant_overrides("relu", "small")


def test_plan_launch_modes():
    base = {"preset": "small", "seed": 3, "max_steps": 5}
    single = wb.plan_launch(base, "main", launch="auto", visible_gpus=0)
    assert [(p["name"], p["launch"]) for p in single] == [("main", "single")]
    assert single[0]["config"]["run_name"] == "main" and single[0]["config"]["seed"] == 3
    ddp = wb.plan_launch(base, "main", launch="auto", visible_gpus=6)
    assert len(ddp) == 1 and ddp[0]["launch"] == "ddp" and ddp[0]["gpus"] == list(range(6))
    ind = wb.plan_launch(base, "six", launch="independent", n_gpus=6, visible_gpus=6)
    assert [p["name"] for p in ind] == [f"six-s{i}" for i in range(3, 9)]
    assert [p["config"]["seed"] for p in ind] == [3, 4, 5, 6, 7, 8] and ind[2]["gpus"] == [2]
    var = wb.plan_launch(base, "cmp", launch="single", variants=["swelu", "silu"], visible_gpus=0)
    assert [(p["name"], p["config"]["activation"]) for p in var] == [
        ("cmp-swelu", "swelu"),
        ("cmp-silu", "silu"),
    ]
    with pytest.raises(ValueError):
        wb.plan_launch(base, "x", launch="ddp", visible_gpus=0)
    with pytest.raises(ValueError):
        wb.plan_launch(base, "x", launch="independent", n_gpus=8, visible_gpus=6)
    with pytest.raises(ValueError):
        wb.plan_launch(base, "x", launch="mpi", visible_gpus=0)


def test_plots_return_figures(tmp_path):
    run = wb.load_run(_write_run(tmp_path / "r"))
    for fig in (
        wb.plot_loss({"r": run}),
        wb.plot_k_trajectories(run.shape("k")),
        wb.plot_tokens_per_s(run),
        wb.plot_activation_shapes({"blocks.0.mixer.act": 0.5, "dense.0.act": {"k": 1.8}}),
    ):
        assert fig.axes and fig.axes[0].lines
        plt.close(fig)


def test_format_samples_shows_whitespace_and_no_reprs():
    text = wb.format_samples(["ROMEO:", "To be"], [" Good\n\n\n\nmorrow", "\n" * 30])
    assert text.splitlines()[:3] == ["--- sample 1 ---", "ROMEO: Good", "[4 newlines]"]
    assert "To be[30 whitespace characters: 30 newlines]" in text
    assert "['" not in text and "\n\n\n" not in text
    with pytest.raises(ValueError, match="2 prompts but 1"):
        wb.format_samples(["a", "b"], ["x"])


@pytest.mark.slow
def test_a_finished_run_is_reused_only_for_the_same_settings_data_and_code(
    tiny_config, embedded_data, tmp_path, monkeypatch, capsys
):
    cfg = tiny_config(
        embedded_data,
        tmp_path / "r",
        max_steps=2,
        batch_size=2,
        warmup=1,
        eval_every=0,
        ckpt_every=0,
        tensorboard=False,
    )
    first = train_or_load(cfg)
    assert not first.reused
    stamp = (tmp_path / "r" / "summary.json").stat().st_mtime_ns
    capsys.readouterr()
    report = types.SimpleNamespace(html_path=tmp_path / "reports" / "mine" / "report.html", reuse_named=False)
    monkeypatch.setattr(prologue, "_CURRENT", [report])  # the notebook's report, as wb.start records it
    again = train_or_load(cfg)
    assert again.reused and (tmp_path / "r" / "summary.json").stat().st_mtime_ns == stamp
    said = [ln for ln in capsys.readouterr().err.splitlines() if "reusing" in ln]
    assert said == [
        f"reusing the finished run 'r' ({tmp_path / 'r'}: same settings, data and code, nothing to train); "
        f"report: {tmp_path / 'reports' / 'mine' / 'report.html'}"
    ]
    train_or_load(cfg)  # a second reuse in the same report: the path is not repeated
    said = [ln for ln in capsys.readouterr().err.splitlines() if "reusing" in ln]
    assert said == [
        f"reusing the finished run 'r' ({tmp_path / 'r'}: same settings, data and code, nothing to train)"
    ]
    assert reusable({**cfg, "lr": 1e-2}, tmp_path / "r") == "settings differ: lr"
    assert reusable({**cfg, "progress": True}, tmp_path / "r") is None  # a runtime switch only
    import mswelu.base.provenance
    import mswelu.data

    real_meta = mswelu.data.load_meta
    monkeypatch.setattr(mswelu.data, "load_meta", lambda p: {**real_meta(p), "fingerprint": "other"})
    assert reusable(cfg, tmp_path / "r") == "trained on other data"
    monkeypatch.setattr(mswelu.data, "load_meta", real_meta)
    import mswelu.workbook.reuse as reuse

    real_code = reuse.training_code
    monkeypatch.setattr(reuse, "training_code", lambda c: {**real_code(c), "files": {"trainer.py": "edited"}})
    assert reusable(cfg, tmp_path / "r").startswith("trained by other code (")
    monkeypatch.setattr(reuse, "training_code", real_code)
    monkeypatch.setattr(mswelu.base.provenance, "code_version", lambda: "0000")  # code off the training path
    assert reusable(cfg, tmp_path / "r") is None


def test_notebook_parameters_are_the_declared_ones():
    """The prologue records the parameters the notebook declares (read by papermill from its file), with
    the values now set (papermill's overrides included), and nothing else."""
    namespace = {
        "run_name": "r",
        "run": None,
        "grad_batch_size": 8,
        "grad_seq_len": 32,
        "k_init": 1.0,
        "pd": object(),
        "table": {"a": 1},
    }
    params = notebook_parameters("04_k_analysis.ipynb", namespace)
    assert params == {"run": None, "run_name": "r", "grad_batch_size": 8, "grad_seq_len": 32, "k_init": 1.0}
    # a notebook copied out of the checkout: the plain values defined so far
    other = notebook_parameters("copied.ipynb", {"run_name": "x", "In": [], "_": 1, "n": 2, "f": len})
    assert other == {"run_name": "x", "n": 2}


def test_study_runs_finds_each_seed_of_exactly_one_variant(monkeypatch, tmp_path):
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    for name in ("st-swelu-s0", "st-swelu-s2", "st-swelu-fixed-s0", "st-swelu-s1x", "other-swelu-s0"):
        _write_run(tmp_path / "runs" / name)
    (tmp_path / "runs" / "st-swelu-s3").mkdir()  # started, nothing written yet: not a finished run
    runs = wb.study_runs("st", "swelu")
    assert sorted(runs) == [0, 2] and runs[2].name == "st-swelu-s2"
    assert sorted(wb.study_runs("st", "swelu-fixed")) == [0]
    with pytest.raises(ValueError, match="no finished runs of variant 'silu' of study 'st'"):
        wb.study_runs("st", "silu")
    fig = wb.plot_study_k({"swelu": runs})
    assert [line.get_label() for line in fig.axes[0].lines[:2]] == ["in-mixer", "dense"]
    plt.close(fig)


def test_start_returns_the_report_of_run_name(monkeypatch, tmp_path):
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    report = wb.start(
        "04_k_analysis.ipynb",
        {"run_name": "k-test", "run": "main", "grad_batch_size": 2, "grad_seq_len": 16, "k_init": 1.0},
    )
    assert report.params["run"] == "main" and (tmp_path / "reports" / "k-test" / "report.html").is_file()


def test_plot_variant_curves_draws_each_variant():
    import pandas as pd

    curves = pd.DataFrame(
        {
            "variant": ["a", "a", "b", "b"] * 2,
            "seed": [0] * 4 + [1] * 4,
            "tokens": [10, 20, 10, 20] * 2,
            "val_loss": [5.0, 4.0, 5.5, 4.5, 5.2, 4.1, 5.4, 4.4],
        }
    )
    results = pd.DataFrame({"variant": ["a", "a", "b", "b"], "tokens_per_s": [100.0, 110.0, 90.0, 95.0]})
    fig = wb.plot_variant_curves(curves, results)
    lines = fig.axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    assert list(lines[0].get_ydata()) == [5.1, 4.05]


def test_a_misspelt_parameter_stops_the_notebook_with_the_nearest_name():
    namespace = {"run_name": "r", "run": None, "grad_batch_size": 8, "grad_seq_len": 32, "k_init": 1.0}
    check_parameters("04_k_analysis.ipynb", namespace)  # the declared ones only: fine
    with pytest.raises(
        ValueError, match=r"unknown parameter\(s\) 'grad_batchsize' \(did you mean 'grad_batch_size'\?\)"
    ):
        check_parameters("04_k_analysis.ipynb", {**namespace, "grad_batchsize": 2})
    with pytest.raises(ValueError, match="unknown parameter"):
        wb.start("04_k_analysis.ipynb", {**namespace, "presett": "small"}, check=True)
    assert not prologue._fresh_kernel()  # outside a kernel (pytest): the automatic check stays off


def test_a_stopped_run_stops_the_comparison_instead_of_counting_as_a_result(monkeypatch, tmp_path):
    import mswelu.train

    monkeypatch.setattr(mswelu.train, "train", lambda cfg: {"interrupted": True, "steps": 3})
    cfg = {"preset": "tiny", "out": str(tmp_path / "r"), "max_steps": 10, "progress": False}
    with pytest.raises(RunInterrupted, match="stopped at step 3 .*again to resume"):
        train_or_load(cfg)


def test_a_refusal_shows_as_one_line_in_a_notebook(monkeypatch, tmp_path, capsys):
    """After the prologue, a cell that raises RunRefused shows its message as one line, not a traceback
    (papermill's error cell and its exception then end with that line); other errors keep theirs."""
    from IPython.core.interactiveshell import InteractiveShell

    from mswelu.base.errors import RunRefused

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    shell = InteractiveShell.instance()
    try:
        wb.start("03_train.ipynb", {"run_name": "r"}, check=False, defer=True)
        shell.user_ns["RunRefused"] = RunRefused
        capsys.readouterr()
        result = shell.run_cell("def plan():\n    raise RunRefused('run_name r already holds a run')\nplan()")
        assert isinstance(result.error_in_exec, RunRefused)
        assert capsys.readouterr().out.strip().splitlines() == ["RunRefused: run_name r already holds a run"]
        assert not (tmp_path / "reports" / "r").exists()  # refused: the deferred report never written
        shell.run_cell("def plan():\n    raise ValueError('other')\nplan()")
        assert "Traceback" in capsys.readouterr().out
    finally:
        InteractiveShell.clear_instance()


def test_run_names_are_built_and_read_back_in_one_place():
    assert wb.run_name("cmp", "swelu-fixed", seed=2) == "cmp-swelu-fixed-s2"
    assert wb.run_name("st", "tune", "silu", lr=1e-5) == "st-tune-silu-lr1e-05"
    assert wb.run_name("main", None, "") == "main"
    for name in ("cmp-swelu-fixed-s2", "st-tune-silu-lr1e-05", "st-tune-silu-lr0.001", "main", "a-s1x"):
        stem, lr, seed = parse_run_name(name)
        assert wb.run_name(stem, lr=lr, seed=seed) == name
    assert parse_run_name("st-swelu-s10") == ("st-swelu", None, 10)
    assert parse_run_name("st-tune-silu-lr1e-05") == ("st-tune-silu", 1e-5, None)
    with pytest.raises(ValueError):
        wb.run_name(None)


def test_a_mistyped_choice_names_the_nearest_one():
    with pytest.raises(
        ValueError, match=r"unknown profile 'nbvall' \(did you mean 'nbval'\?\): expected one of"
    ):
        wb.resolve_profile("nbvall")
    with pytest.raises(
        ValueError, match=r"unknown launch mode 'indepedent' \(did you mean 'independent'\?\)"
    ):
        wb.plan_launch({"preset": "tiny"}, "x", launch="indepedent", visible_gpus=0)
    from mswelu.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"unknown optimizer 'adamm' \(did you mean 'adamw'\?\)"):
        TrainConfig(preset="tiny", optimizer="adamm").validate()


def test_a_single_value_where_a_list_belongs_stops_the_notebook_at_once():
    """``-p prompts "ROMEO:"`` / ``-y "variants: swelu"`` give a string: it must stop the run in the
    prologue with the form to use, before a model is trained or text generated (not "unknown variant 's'"
    or "6 prompts but 1 continuations" after the work)."""
    from mswelu.base.errors import ParameterError

    with pytest.raises(ParameterError, match=r"""prompts must be a list, e.g. -y 'prompts: \["ROMEO:"\]'"""):
        check_parameters("06_generation.ipynb", {"run_name": "g", "prompts": "ROMEO:"})
    with pytest.raises(ParameterError, match=r"variants must be a list, e.g. -y 'variants: \[swelu\]'"):
        check_parameters("05_baselines.ipynb", {"run_name": "b", "variants": "swelu"})
    with pytest.raises(ParameterError, match=r"seeds must be a list, e.g. -y 'seeds: \[3\]'"):
        check_parameters("05_baselines.ipynb", {"run_name": "b", "seeds": 3})
    with pytest.raises(ParameterError, match="compare must be a mapping"):
        check_parameters("05_baselines.ipynb", {"run_name": "b", "compare": "swelu"})
    check_parameters("06_generation.ipynb", {"run_name": "g", "prompts": ["ROMEO:"], "run": None})
    # notebook 03's variants default to None: the plan refuses a string before anything is written
    with pytest.raises(ParameterError, match=r"variants must be a list"):
        wb.plan_launch({}, "x", variants="swelu")


def test_the_variant_figure_shows_each_mean_with_its_interval_best_first():
    import pandas as pd

    results = pd.DataFrame(
        {
            "variant": ["mamba-swelu-fixed"] * 3 + ["gpt2"] * 3 + ["one"],
            "val_bpb": [2.13, 2.14, 2.12, 2.28, 2.27, 2.29, 2.5],
            "tokens_per_s": [2400.0, 2500.0, 2450.0, 6200.0, 6300.0, 6250.0, 100.0],
        }
    )
    fig = wb.plot_variant_bpb(results)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[::-1] == ["mamba-swelu-fixed", "gpt2", "one"]  # best (lowest) at the top
    bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == 2  # one interval per variant with two or more seeds
    assert "one seed: no interval" in ax.get_title()
    curves = pd.DataFrame(
        {"variant": ["gpt2", "one"], "seed": [0, 0], "tokens": [10, 10], "val_loss": [5.0, 6.0]}
    )
    throughput = wb.plot_variant_curves(curves, results).axes[1]
    names = [t.get_text() for t in throughput.get_yticklabels()]
    assert names[::-1] == ["gpt2", "mamba-swelu-fixed", "one"]  # names on the y axis, fastest first
    plt.close("all")


def test_a_model_is_announced_with_bits_per_byte_or_on_a_task_its_loss(monkeypatch) -> None:
    """One line per model on a study's terminal: bits/byte for text; a synthetic task has no bytes (NaN or
    None there), so its answers' loss, never 'nan bits/byte'."""
    from types import SimpleNamespace

    from mswelu.workbook import compare

    lines: list[str] = []
    monkeypatch.setattr(compare, "say", lines.append)

    def run(**final):
        return SimpleNamespace(final_metrics=lambda: {"steps": 600, "wall_time_s": 12.0, **final})

    compare._announce("text", run(val_bpb=2.1234, final_val_loss=4.5), "trained")
    compare._announce("task", run(val_bpb=float("nan"), final_val_loss=0.6910), "trained")
    compare._announce("none", run(val_bpb=None, final_val_loss=None), "reused")
    text, task, none = lines
    assert text.endswith("val 2.1234 bits/byte") and "in 12 s" in text
    assert task.endswith("val loss 0.6910") and none.endswith("no val figure")
