"""Reports: status life cycle, escaping, secrets, metrics.json, index, and the IPython failure hook."""

from __future__ import annotations

import base64
import json
import re

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from mswelu.report import Report, load_report_state, sanitize_params, write_index


def test_running_then_complete_writes_metrics_and_index(tmp_path):
    rep = Report(
        "run-a", "03_train.ipynb", {"preset": "tiny", "max_steps": 5}, root=tmp_path, register_hook=False
    )
    page = (tmp_path / "run-a" / "report.html").read_text()
    assert "status-running" in page and not (tmp_path / "run-a" / "metrics.json").exists()
    assert (tmp_path / "index.html").is_file()

    rep.add_metrics({"final_val_loss": 3.25, "tokens": 12345})
    path = rep.finish({"val_bpb": 1.5, "tokens_per_s": 999.0})
    data = json.loads(path.read_text())
    assert data["status"] == "complete" and data["notebook"] == "03_train.ipynb"
    assert data["metrics"] == {"final_val_loss": 3.25, "tokens": 12345, "val_bpb": 1.5, "tokens_per_s": 999.0}
    assert data["params"] == {"preset": "tiny", "max_steps": 5}
    prov = data["provenance"]  # what produced the numbers
    assert prov["versions"]["torch"] and prov["versions"]["mswelu"] and prov["threads"] >= 1
    assert set(prov["git"]) == {"commit", "dirty"} and prov["device"].startswith(("cpu", "cuda"))
    assert "status-complete" in (tmp_path / "run-a" / "report.html").read_text()

    index = (tmp_path / "index.html").read_text()
    assert 'href="run-a/report.html"' in index
    row = re.search(r"<tr><td><a href=\"run-a/report.html\">.*?</tr>", index).group(0)
    for shown in ("complete", "03_train.ipynb", "3.25", "1.5", "12,345", "999"):
        assert shown in row


def test_files_are_readable_by_others(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        Report("perm", "n", {}, root=tmp_path, register_hook=False).finish({})
    finally:
        os.umask(old)
    for name in ("report.html", "metrics.json", "report.json"):
        assert stat.S_IMODE((tmp_path / "perm" / name).stat().st_mode) == 0o644, name


def test_new_report_removes_stale_metrics(tmp_path):
    Report("r", "02.ipynb", {}, root=tmp_path, register_hook=False).finish({"final_val_loss": 1.0})
    assert (tmp_path / "r" / "metrics.json").exists()
    Report("r", "02.ipynb", {}, root=tmp_path, register_hook=False)
    assert not (tmp_path / "r" / "metrics.json").exists()
    assert load_report_state(tmp_path / "r")["status"] == "running"


def test_everything_is_escaped_and_secrets_dropped(tmp_path):
    evil = "<script>alert(1)</script>"
    rep = Report(
        "esc",
        evil.replace("<", "").replace(">", ""),
        {
            "note": evil,
            "hf_token": "hf_" + "a" * 30,
            "API_KEY": "x",
            "hfToken": "y",
            "other": "hf_" + "b" * 34,
            "max_tokens": 7,
            "top_k": 5,
        },
        root=tmp_path,
        register_hook=False,
    )
    rep.add_markdown(f"# Title\n\nsome *text* {evil}")
    rep.add_table(pd.DataFrame({"col": [evil]}))
    rep.add_text(evil)
    rep.add_metrics({"name": evil})
    rep.finish()
    page = (tmp_path / "esc" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<em>text</em>" in page
    assert "hf_aaaa" not in page and "hf_bbbb" not in page
    params = json.loads((tmp_path / "esc" / "metrics.json").read_text())["params"]
    assert set(params) == {"note", "max_tokens", "top_k"}


@pytest.mark.parametrize(
    "name", ["hf_token", "HF_TOKEN", "token", "api_key", "apiKey", "secret", "db_password", "credentials"]
)
def test_secret_names(name):
    assert sanitize_params({name: "v"}) == {}


@pytest.mark.parametrize("name", ["max_tokens", "tokens", "top_k", "k_init", "keep_last", "monkey"])
def test_not_secret_names(name):
    assert sanitize_params({name: 1}) == {name: 1}


def test_json_safe_values(tmp_path):
    import numpy as np
    import torch

    clean = sanitize_params(
        {"a": np.float32(1.5), "b": torch.tensor(2), "c": float("nan"), "d": (1, 2), "e": tmp_path}
    )
    assert clean == {"a": 1.5, "b": 2, "c": None, "d": [1, 2], "e": str(tmp_path)}
    json.dumps(clean)


def test_figure_embedded_as_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    rep = Report("fig", "n", {}, root=tmp_path, register_hook=False)
    rep.add_figure(fig, caption="loss & <k>")
    plt.close(fig)
    page = (tmp_path / "fig" / "report.html").read_text()
    payload = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page).group(1)
    assert base64.b64decode(payload)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "loss &amp; &lt;k&gt;" in page
    with pytest.raises(ValueError):
        rep.add_figure("not a figure")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "-x", "a b", 3])
def test_bad_run_names(tmp_path, bad):
    with pytest.raises(ValueError):
        Report(bad, "n", {}, root=tmp_path, register_hook=False)


def test_fail_records_traceback_and_index(tmp_path):
    rep = Report("bad", "n", {}, root=tmp_path, register_hook=False)
    try:
        raise RuntimeError("boom <here>")
    except RuntimeError as exc:
        rep.fail(exc)
    page = (tmp_path / "bad" / "report.html").read_text()
    assert "status-failed" in page and "RuntimeError: boom &lt;here&gt;" in page
    assert not (tmp_path / "bad" / "metrics.json").exists()
    write_index(tmp_path)
    assert "failed" in (tmp_path / "index.html").read_text()


def test_ipython_hook_marks_failed(tmp_path):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        rep = Report("hooked", "n", {}, root=tmp_path)
        ok = shell.run_cell("x = 1 + 1")
        assert ok.success and rep.status == "running"
        res = shell.run_cell("raise ValueError('cell exploded')")
        assert not res.success
        assert rep.status == "failed"
        assert "cell exploded" in (tmp_path / "hooked" / "report.html").read_text()
        # a second report replaces the first one's hook rather than stacking
        rep2 = Report("hooked2", "n", {}, root=tmp_path)

        def report_hooks():
            return [
                cb
                for cb in shell.events.callbacks["post_run_cell"]
                if isinstance(getattr(cb, "__self__", None), Report)
            ]

        assert len(report_hooks()) == 1
        rep2.finish({})
        assert not report_hooks()
    finally:
        InteractiveShell.clear_instance()


def test_live_metrics_shown_while_running_then_dropped(tmp_path):
    rep = Report(
        "run-live", "03_train.ipynb", {"preset": None, "max_steps": None}, root=tmp_path, register_hook=False
    )
    rep.live("main", {"step": 5, "tokens": 5120, "loss": 6.54321, "tokens_per_s": 640.2})
    rep.live(
        "main", {"step": 6, "time": 9.0, "device": {"cpu_percent": 187.5, "rss_gb": 0.75, "gpu0_temp_c": 60}}
    )
    rep.live("main", {"step": 5, "tokens": 5120, "val_loss": 7.25, "val_bpb": 2.9})  # eval: written at once
    page = (tmp_path / "run-live" / "report.html").read_text()
    row = re.search(r"<tr><td>main</td>.*?</tr>", page).group(0)
    for shown in (
        "5,120",
        "6.543",
        "640.2",
        "7.25",
        "2.9",
        "187.5",
        "0.75",
    ):  # a device sample keeps the loss
        assert shown in row
    rep.update_params({"preset": "small", "max_steps": 300, "lr": None})
    rep.finish({})
    page = (tmp_path / "run-live" / "report.html").read_text()
    assert "Latest metrics" not in page  # a finished report shows its final figures instead
    params = json.loads((tmp_path / "run-live" / "metrics.json").read_text())["params"]
    assert params == {"preset": "small", "max_steps": 300}  # effective values, None placeholders replaced


def test_tables_use_the_metrics_number_format(tmp_path):
    rep = Report("run-fmt", "03_train.ipynb", root=tmp_path, register_hook=False)
    rep.add_table(pd.DataFrame({"a": {"params": 3323399, "val_loss": 6.4412345}}).T)  # params becomes float
    page = (tmp_path / "run-fmt" / "report.html").read_text()
    assert "3,323,399" in page and "6.441" in page and "e+06" not in page


def test_index_lists_training_runs_from_the_command_line(tmp_path):
    reports, runs = tmp_path / "reports", tmp_path / "runs"
    (runs / "cli-run").mkdir(parents=True)
    (runs / "cli-run" / "config.json").write_text(json.dumps({"preset": "small", "activation": "silu"}))
    (runs / "cli-run" / "summary.json").write_text(
        json.dumps({"steps": 40, "tokens": 40960, "val_loss": 6.1, "val_bpb": 2.5, "interrupted": False})
    )
    (runs / "half").mkdir()
    (runs / "half" / "config.json").write_text(json.dumps({"preset": "tiny"}))
    index = write_index(reports, runs_root=runs).read_text()
    row = re.search(r"<tr><td>cli-run</td>.*?</tr>", index).group(0)
    for shown in ("complete", "small", "silu", "40,960", "6.1", "2.5"):
        assert shown in row
    assert re.search(r"<tr><td>half</td><td><span[^>]*>running</span>", index)


def test_a_failing_rerun_keeps_the_previous_complete_report(tmp_path):
    good = Report("main", "03_train.ipynb", {"lr": 1e-3}, root=tmp_path, register_hook=False)
    good.add_markdown("the good one")
    good.finish({"val_loss": 6.6})
    page = (tmp_path / "main" / "report.html").read_text()
    rerun = Report("main", "03_train.ipynb", {"lr": 2e-3}, root=tmp_path, register_hook=False)
    rerun.fail("RuntimeError: diverged")
    folder = tmp_path / "main"
    assert (folder / "report.previous.html").read_text() == page
    assert json.loads((folder / "metrics.previous.json").read_text())["metrics"]["val_loss"] == 6.6
    assert "report.previous.html" in (folder / "report.html").read_text()
    assert not (folder / "metrics.json").exists()
    # a failed report is not "previous": the next rerun keeps the last complete one
    Report("main", "03_train.ipynb", {}, root=tmp_path, register_hook=False)
    assert (folder / "report.previous.html").read_text() == page


def test_a_deferred_report_writes_nothing_until_its_first_content(tmp_path):
    Report("main", "03_train.ipynb", {"lr": 1e-3}, root=tmp_path, register_hook=False).finish(
        {"val_loss": 6.6}
    )
    folder = tmp_path / "main"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    index = (tmp_path / "index.html").read_bytes()
    rerun = Report("main", "03_train.ipynb", {"lr": 2e-3}, root=tmp_path, register_hook=False, defer=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert (tmp_path / "index.html").read_bytes() == index and not rerun.opened
    rerun.update_params({"max_steps": 5})  # the run was accepted: from here on it is this run's report
    assert rerun.opened and load_report_state(folder)["status"] == "running"
    assert (folder / "report.previous.html").read_bytes() == before["report.html"]


def test_a_refusal_before_the_report_is_written_leaves_the_folder_as_it_was(tmp_path):
    """The IPython hook: a cell that raises RunRefused before a deferred report was written changes
    nothing; any other error (or a refusal after it was written) marks the report failed as usual."""
    from IPython.core.interactiveshell import InteractiveShell

    from mswelu.base.errors import RunRefused

    Report("kept", "03_train.ipynb", {}, root=tmp_path, register_hook=False).finish({"val_loss": 1.0})
    before = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    shell = InteractiveShell.instance()
    try:
        shell.user_ns["RunRefused"] = RunRefused
        refused = Report("kept", "03_train.ipynb", {}, root=tmp_path, defer=True)
        assert not shell.run_cell("raise RunRefused('run_name kept already holds a run')").success
        assert {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()} == before
        assert not refused.opened
        failing = Report("other", "03_train.ipynb", {}, root=tmp_path, defer=True)
        shell.run_cell("raise ValueError('bad preset')")
        assert failing.status == "failed" and "bad preset" in (tmp_path / "other" / "report.html").read_text()
    finally:
        InteractiveShell.clear_instance()


def test_the_index_of_every_run_lists_the_committed_studies(tmp_path, monkeypatch):
    """``reports/index.html`` links every study under ``reports/studies/`` (not only their own index), and a
    study finishing refreshes it."""
    import mswelu.report.index as index_module

    monkeypatch.setattr(index_module, "reports_dir", lambda: tmp_path)
    Report("main", "03_train.ipynb", {}, root=tmp_path, register_hook=False).finish({"val_bpb": 1.78})
    studies = tmp_path / "studies"
    study = Report("study-a", "05_baselines.ipynb", {}, root=studies, register_hook=False)
    page = (tmp_path / "index.html").read_text()
    assert (
        '<a href="studies/study-a/report.html">study-a</a>' in page and "running" in page.split("Studies")[1]
    )
    study.finish({})
    page = (tmp_path / "index.html").read_text()
    assert "<h2>Studies</h2>" in page and '<a href="studies/index.html">' in page
    assert page.index('href="main/report.html"') < page.index("<h2>Studies</h2>")
    assert "complete" in page.split("<h2>Studies</h2>")[1]
    assert (studies / "index.html").is_file() and "Studies" not in (studies / "index.html").read_text()


def test_tables_read_as_a_reader_wants(tmp_path):
    """Readable headers, the same decimals down a column, separators on every large number, yes / no for
    booleans, run names on one line: not a dump of a data frame."""
    from mswelu.report import format_column, readable_name

    results = pd.DataFrame(
        {
            "run": ["study-mamba-swelu-fixed-s0", "study-gpt2-s0"],
            "lr": [0.004, 0.008],
            "final_train_loss": [4.44216680, 4.5],
            "val_bpb seed sd": [0.007697, 0.01197],
            "tokens": [409600, 409600],
            "tokens_per_s": [2553.41, 12130.9],
            "wall_time_s": [179.342, 92.5],
            "reused": [True, False],
        }
    ).set_index("run")
    rep = Report("run-tables", "05_baselines.ipynb", root=tmp_path, register_hook=False)
    rep.add_table(results, caption="every model")
    page = (tmp_path / "run-tables" / "report.html").read_text()
    start = page.index('<table class="frame">')
    table = page[start : page.index("</table>", start)]
    for header in ("run", "lr", "final train loss", "val bpb seed sd", "tokens/s", "wall time (s)", "reused"):
        assert f">{header}</th>" in table
    assert "final_train_loss" not in table and "True" not in table and "False" not in table
    assert '<td class="name">study-mamba-swelu-fixed-s0</td>' in table  # one line (CSS: nowrap)
    assert ">0.004<" in table and ">4.442<" in table and ">4.500<" in table  # same decimals down a column
    assert ">0.00770<" in table and ">0.01197<" in table and "0.007697" not in table
    assert ">409,600<" in table and ">2,553<" in table and ">12,131<" in table
    assert ">yes<" in table and ">no<" in table
    assert readable_name("wall_time_s") == "wall time (s)" and readable_name("tokens_per_s") == "tokens/s"
    assert format_column([1.5, None, float("nan")]) == ["1.5", "-", "-"]  # no more digits than it needs
    assert format_column([3, 1_234_567]) == ["3", "1,234,567"]


def test_the_claims_table_has_verdict_badges_and_says_a_caveat_once(tmp_path):
    scale = "claimed at 124M params, 3.1B tokens (25 tokens/param); comparable from 50% of both"
    claims = pd.DataFrame(
        {
            "claim": ["SWELU 22% better than SiLU", "comparable to GPT-2", "k move 0.39"],
            "seed says": ["22% lower loss", "on par", "mean |k - 1| = 0.39"],
            "measured": ["+1.56% [+0.91%, +2.21%]", "+6.3%", "0.059"],
            "verdict": ["refuted", "supported", "not reproduced at this scale"],
            "why": ["below", "within", "below the scale"],
            "p": [0.001, 0.02, 0.3],
            "scale": [scale] * 3,
        }
    )
    rep = Report("run-claims", "05_baselines.ipynb", root=tmp_path, register_hook=False)
    rep.add_verdicts(claims, caption="seed claims vs this run")
    page = (tmp_path / "run-claims" / "report.html").read_text()
    assert page.count(scale) == 1 and "Caveat (every row):" in page
    assert '<span class="verdict verdict-refuted">refuted</span>' in page
    assert '<span class="verdict verdict-supported">supported</span>' in page
    assert '<span class="verdict verdict-not-reproduced">not reproduced at this scale</span>' in page
    assert "3 claim(s): 1 refuted, 1 supported, 1 not reproduced at this scale" in page
    assert ">p</th>" not in page  # the reader's columns only
    two = claims.assign(scale=[scale, scale, "any scale (a count)"])
    rep.add_verdicts(two.set_index("claim"))
    page = (tmp_path / "run-claims" / "report.html").read_text()
    assert "<li>any scale (a count)</li>" in page and ">[2]</td>" in page and ">[1]</td>" in page
    # which row is the pre-registered primary and which are exploratory (issue 38)
    rep.add_verdicts(claims.assign(role=["primary", "exploratory", "exploratory"]))
    page = (tmp_path / "run-claims" / "report.html").read_text()
    assert "primary (pre-registered, tested alone): SWELU 22% better than SiLU; every other" in page
    assert ">exploratory</td>" in page


def test_a_table_indexed_by_two_levels_shows_each_as_a_column(tmp_path):
    """A frame indexed by (run, task) or (variant, group): one column per level, named, then the values."""
    scores = pd.DataFrame(
        [
            {"run": "a", "task": "mswelu_lastword", "acc": 0.25},
            {"run": "a", "task": "mswelu_choice", "acc": 0.5},
        ]
    ).set_index(["run", "task"])
    rep = Report("run-levels", "03_train.ipynb", root=tmp_path, register_hook=False)
    rep.add_table(scores, caption="downstream tasks")
    rep.add_table(scores.rename_axis([None, None]), caption="unnamed levels")
    page = (tmp_path / "run-levels" / "report.html").read_text()
    assert ">run</th>" in page and ">task</th>" in page and ">acc</th>" in page
    assert ">level 0</th>" in page and ">level 1</th>" in page
    assert ">mswelu_choice<" in page and ">0.50<" in page
