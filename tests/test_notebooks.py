"""Each workbook notebook executed headless through papermill with tiny parameters, asserting on the
``reports/<run>/metrics.json`` it writes; and a failing cell must stop papermill with a non-zero exit and
leave a report that says "failed".

Runs share one tiny training (notebook 03, module fixture) for 04 and 06. Everything is written under the
test session's ``MSWELU_HOME`` (a temporary folder, see conftest.py) and a temporary working directory.
``pytest --nbval-lax notebooks/`` separately runs the notebooks' stored sources with their defaults.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

pm = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
pytestmark = pytest.mark.slow


def _home() -> Path:
    return Path(os.environ["MSWELU_HOME"])


def _execute(name: str, tmp: Path, cli_log: list[str] | None = None, **parameters) -> dict:
    """Run notebook ``name`` with ``parameters``; return the metrics.json of its run_name. With
    ``cli_log`` it runs as a user would, ``papermill`` on the command line, and collects what the
    terminal shows (stdout + stderr) into that list."""
    out = tmp / f"out-{name}"
    if cli_log is None:
        pm.execute_notebook(
            str(NOTEBOOKS / name),
            str(out),
            parameters=parameters,
            kernel_name="mswelu",
            cwd=str(tmp),
            progress_bar=False,
        )
    else:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "papermill",
                str(NOTEBOOKS / name),
                str(out),
                "-k",
                "mswelu",
                "--cwd",
                str(tmp),
                "--no-progress-bar",
                "-y",
                json.dumps(parameters),
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        cli_log.append(proc.stdout + proc.stderr)
        assert proc.returncode == 0, proc.stderr[-3000:]
    run_name = parameters["run_name"]
    reports = _home() / "reports" / ("studies" if parameters.get("study") else "")  # a study's are committed
    metrics = json.loads((reports / run_name / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["run"] == run_name
    page = (reports / run_name / "report.html").read_text()
    assert "status-complete" in page and "data:image/png;base64," in page
    assert run_name in (reports / "index.html").read_text()
    return metrics


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebooks")


@pytest.fixture(scope="module")
def trained(workdir) -> dict:
    """One tiny training through notebook 03 from the papermill command line, shared by the tests of 04
    and 06; ``terminal`` is what that command printed."""
    log: list[str] = []
    mode = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"  # the papermill child inherits it: no network, no key
    try:
        metrics = _execute(
            "03_train.ipynb",
            workdir,
            cli_log=log,
            run_name="nbtest-train",
            profile="nbval",
            max_steps=6,
            batch_size=2,
            seq_len=32,
            samples=1,
            trackers=["tensorboard", "wandb"],
            tasks=["mswelu_lastword"],
            task_limit=4,
        )
    finally:
        os.environ.pop("WANDB_MODE") if mode is None else os.environ.update(WANDB_MODE=mode)
    return {**metrics, "terminal": log[0]}


def test_every_notebook_has_one_parameters_cell_and_the_mswelu_kernel():
    for path in sorted(NOTEBOOKS.glob("0[1-6]_*.ipynb")):
        book = nbformat.read(path, as_version=4)
        tagged = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        assert book.metadata["kernelspec"]["name"] == "mswelu", path.name
        text = path.read_text()
        assert "/work/" not in text and "/tmp/" not in text and "/home/" not in text, path.name
        assert not re.search(r"hf_[A-Za-z0-9]{20,}", text), f"{path.name}: looks like a token"
        checked = [c for c in book.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
        assert checked and all(c.outputs for c in checked), f"{path.name}: checked summary cells, executed"


def test_03_train(trained):
    m = trained["metrics"]
    assert m["steps"] == 6 and m["tokens"] == 6 * 2 * 32
    assert m["final_val_loss"] > 0 and m["val_bpb"] > 0 and m["tokens_per_s"] > 0
    # the report records the values the profile filled in, not None
    assert trained["params"]["profile"] == "nbval" and trained["params"]["preset"] == "tiny"
    assert trained["params"]["max_steps"] == 6 and trained["params"]["lr"] == 3e-3
    run = _home() / "runs" / "nbtest-train"
    assert (run / "final" / "config.json").is_file() and (run / "metrics.jsonl").is_file()
    index = (_home() / "reports" / "index.html").read_text()
    assert "Training runs" in index and index.count("nbtest-train") >= 2  # its report and its run folder


def test_03_reports_devices_and_tasks_and_joins_the_tracker_run(trained, workdir):
    """The report's device panel (sampled during training), the lm-eval scores of the final model (one
    local task, 4 documents) in the report and metrics.json, and the finished report added to the run's
    wandb run (offline: a second offline folder of the same run id holding it)."""
    from tracker_files import wandb_artifact_files

    m = trained["metrics"]
    assert m["device"]["nbtest-train"]["rss_gb"] > 0 and m["device"]["nbtest-train"]["cpu_percent"] >= 0
    lastword = m["tasks"]["nbtest-train/mswelu_lastword"]
    assert lastword["n"] == 4 and 0 <= lastword["acc"] <= 1
    page = (_home() / "reports" / "nbtest-train" / "report.html").read_text()
    assert "devices during training (nbtest-train)" in page and "downstream tasks (lm-eval-harness)" in page
    run = _home() / "runs" / "nbtest-train"
    scores = json.loads((run / "tasks.json").read_text())["tasks"]
    assert scores["mswelu_lastword"]["acc"] == lastword["acc"]
    state = json.loads((run / "trackers.json").read_text())
    offline = sorted((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(p.name.endswith(state["wandb"]["id"]) for p in offline)
    attached = [sorted(wandb_artifact_files(p)) for p in offline]
    assert ["metrics.json", "report.html"] in attached
    assert "report added to the wandb run of nbtest-train" in (workdir / "out-03_train.ipynb").read_text()


def test_03_keeps_the_executed_notebook_in_the_run_folder(trained):
    """papermill's output file is replaced by any later execution to the same path; the run folder keeps
    the executed notebook of the run that finished it (every cell before the keeping one, with outputs)."""
    kept = nbformat.read(_home() / "runs" / "nbtest-train" / "notebook.ipynb", as_version=4)
    assert kept.metadata["papermill"]["parameters"]["run_name"] == "nbtest-train"
    checked = [c for c in kept.cells if c.cell_type == "code" and "NBVAL_CHECK_OUTPUT" in c.source]
    assert checked and all(c.outputs for c in checked)


def test_a_refused_rerun_changes_nothing_and_says_so_in_one_line(trained, workdir):
    """Notebook 03 again under a finished run's name with other settings, to the same output notebook: the
    run is refused before anything is written. Its report folder stays byte for byte as it was, its executed
    notebook stays recoverable from the run folder, and the refusal is one line, in the output notebook and
    on the terminal (papermill's own traceback then ends with that line, not with the cell's traceback)."""
    report = _home() / "reports" / "nbtest-train"
    before = {p: p.read_bytes() for p in sorted(report.rglob("*")) if p.is_file()}
    kept = _home() / "runs" / "nbtest-train" / "notebook.ipynb"
    kept_before = kept.read_bytes()
    index_before = (_home() / "reports" / "index.html").read_bytes()
    out = workdir / "out-03_train.ipynb"  # the finished run's output notebook: papermill replaces it
    parameters = {
        "run_name": "nbtest-train",
        "profile": "nbval",
        "max_steps": 6,
        "batch_size": 2,
        "seq_len": 32,
        "samples": 1,
        "lr": 1e-2,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOKS / "03_train.ipynb"), str(out), "-k", "mswelu"]
        + ["--cwd", str(workdir), "--no-progress-bar", "-y", json.dumps(parameters)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert {p: p.read_bytes() for p in sorted(report.rglob("*")) if p.is_file()} == before
    assert kept.read_bytes() == kept_before
    assert (_home() / "reports" / "index.html").read_bytes() == index_before
    terminal = (proc.stdout + proc.stderr).strip().splitlines()
    said = [ln for ln in terminal if ln.startswith("error: ")]
    assert said == [
        "error: run_name 'nbtest-train' already holds a run (settings differ: lr); nothing was changed: pick "
        "another run_name, or pass overwrite=True to replace it (its executed notebook: "
        "runs/nbtest-train/notebook.ipynb)"
    ], terminal
    assert terminal[-1] == f"RunRefused: {said[0].removeprefix('error: ')}"
    assert not any(ln.startswith("Cell In[") for ln in terminal), terminal
    errors = [
        o
        for c in nbformat.read(out, as_version=4).cells
        for o in c.get("outputs", [])
        if o.output_type == "error"
    ]
    assert len(errors) == 1 and errors[0].traceback == [terminal[-1]]


def test_03_headless_run_shows_progress_in_the_terminal(trained):
    """papermill captures cell output into the notebook; the trainer's progress lines still reach the
    terminal: one per log interval (log_every 2 of 6 steps, plus the first) and one per evaluation (at 20%
    of the run and at the end)."""
    lines = [ln for ln in trained["terminal"].splitlines() if "nbtest-train]" in ln]
    steps = [ln for ln in lines if " step " in ln and "left" in ln]
    evals = [ln for ln in lines if "eval at step" in ln]
    assert [ln.split(" step ")[1].split()[0] for ln in steps] == ["1/6", "2/6", "4/6", "6/6"], lines
    assert all("loss " in ln and "tok/s" in ln for ln in steps)
    assert [ln.split("eval at step ")[1].split(" (")[0] for ln in evals] == ["1/6", "6/6"], lines  # 20%, end
    assert "(sampled windows," in evals[0] and "(whole split," in evals[1]  # what each scored
    assert all("val loss" in ln and "bits/byte" in ln for ln in evals), lines


def test_02_smoke(workdir):
    m = _execute("02_smoke_run.ipynb", workdir, run_name="nbtest-smoke", max_steps=5, batch_size=2)["metrics"]
    assert m["steps"] == 5 and m["tokens"] == 5 * 2 * 32 and m["loss_fell"] is True and m["k_moved"] == 7


def test_02_smoke_checks_what_learns_in_the_activation_it_was_given(workdir):
    """Swish: its learnable beta is what must move (SiLU: nothing learnable, nothing expected)."""
    m = _execute(
        "02_smoke_run.ipynb",
        workdir,
        run_name="nbtest-smoke-swish",
        max_steps=5,
        batch_size=2,
        activation="swish",
    )["metrics"]
    assert m["num_k"] == 7 and m["k_moved"] == 7
    page = (_home() / "reports" / "nbtest-smoke-swish" / "report.html").read_text()
    assert "loss, beta and throughput" in page
    m = _execute(
        "02_smoke_run.ipynb",
        workdir,
        run_name="nbtest-smoke-silu",
        max_steps=5,
        batch_size=2,
        activation="silu",
    )["metrics"]
    assert m["num_k"] == 0 and m["loss_fell"] is True


def test_04_k_analysis(trained, workdir):
    run = str(_home() / "runs" / "nbtest-train")
    m = _execute(
        "04_k_analysis.ipynb", workdir, run_name="nbtest-k", run=run, grad_batch_size=2, grad_seq_len=16
    )
    assert m["metrics"]["analysed_run"] == "nbtest-train"
    assert m["metrics"]["count"] == 7 and m["metrics"]["mean_abs_deviation"] > 0


def test_06_generation(trained, workdir):
    run = str(_home() / "runs" / "nbtest-train")
    m = _execute(
        "06_generation.ipynb",
        workdir,
        run_name="nbtest-gen",
        run=run,
        max_new_tokens=8,
        bench_tokens=8,
        bench_batch=2,
    )["metrics"]
    assert m["analysed_run"] == "nbtest-train"
    assert m["recurrent_tokens_per_s"] > 0 and m["recompute_tokens_per_s"] > 0


@pytest.fixture(scope="module")
def interrupted_run(trained) -> Path:
    """The tiny run of notebook 03 as an interrupted run leaves it: checkpoints, no final/, no summary."""
    src, dst = _home() / "runs" / "nbtest-train", _home() / "runs" / "nbtest-stopped"
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "final")
    (dst / "summary.json").unlink()
    assert list((dst / "checkpoints").glob("step_*"))
    return dst


def test_04_and_06_on_an_interrupted_run(interrupted_run, workdir):
    """A run stopped before its end has no final/: 04 and 06 use its newest checkpoint's weights."""
    m4 = _execute(
        "04_k_analysis.ipynb",
        workdir,
        run_name="nbtest-k-stopped",
        run=str(interrupted_run),
        grad_batch_size=2,
        grad_seq_len=16,
    )["metrics"]
    assert m4["analysed_run"] == "nbtest-stopped" and m4["count"] == 7
    m6 = _execute(
        "06_generation.ipynb",
        workdir,
        run_name="nbtest-gen-stopped",
        run=str(interrupted_run),
        max_new_tokens=4,
        bench_tokens=4,
        bench_batch=1,
    )["metrics"]
    assert m6["analysed_run"] == "nbtest-stopped" and m6["recurrent_tokens_per_s"] > 0


def test_a_misspelt_papermill_parameter_fails_the_run(workdir):
    """papermill only warns about a parameter the notebook does not declare; the prologue stops the run."""
    with pytest.raises(pm.PapermillExecutionError, match=r"'presett' \(did you mean 'preset'\?\)"):
        pm.execute_notebook(
            str(NOTEBOOKS / "02_smoke_run.ipynb"),
            str(workdir / "typo.ipynb"),
            parameters={"run_name": "nbtest-typo", "presett": "small"},
            kernel_name="mswelu",
            cwd=str(workdir),
            progress_bar=False,
        )
    assert not (_home() / "runs" / "nbtest-typo").exists()


def test_a_single_value_where_a_list_belongs_fails_at_once(workdir):
    """``-p prompts "ROMEO:"`` gives notebook 06 a string: the prologue refuses it in one line, before a
    model is loaded or trained and before the report is written."""
    proc = subprocess.run(
        [sys.executable, "-m", "papermill", str(NOTEBOOKS / "06_generation.ipynb"), str(workdir / "p.ipynb")]
        + ["-k", "mswelu", "--cwd", str(workdir), "--no-progress-bar"]
        + ["-p", "prompts", "ROMEO:", "-p", "run_name", "nbtest-prompts"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    terminal = (proc.stdout + proc.stderr).strip().splitlines()
    said = """prompts must be a list, e.g. -y 'prompts: ["ROMEO:"]', not the single value 'ROMEO:'"""
    assert terminal[-1] == f"ParameterError: {said}", terminal[-5:]
    assert not (_home() / "reports" / "nbtest-prompts").exists()


@pytest.fixture(scope="module")
def compared(workdir) -> dict:
    """One tiny comparison through notebook 05 (two seeds of swelu, silu and gpt2, the claims on that trio)
    with an lr grid too low for 3 steps: the sweep must extend it upwards. Shared by the tests of 05 and of
    04 on a study."""
    return _execute(
        "05_baselines.ipynb",
        workdir,
        run_name="nbtest-base",
        variants=["swelu", "silu", "gpt2"],
        compare={"swelu": "swelu", "silu": "silu", "fixed": "swelu-fixed", "transformer": "gpt2"},
        seeds=[0, 1],
        max_steps=3,
        batch_size=2,
        seq_len=16,
        lr_grid=[1e-3, 3e-3],
        model={"d_state": 4},
    )


def test_05_baselines(compared):
    m = compared["metrics"]
    assert m["models"] == 6 and m["tokens"] == 3 * 2 * 16
    claims = m["claims"]
    # two seeds: nothing is decided; the premises and treatments that fail say "not tested"
    assert len(claims) == 12 and set(claims.values()) <= {"inconclusive", "not tested"}
    assert claims['loss 4.6 "at 20%" of training'] == "not tested"  # not SlimPajama
    assert claims["learnable k 17% better than fixed k"] in ("inconclusive", "not tested")
    # the study's data and its rows, recomputable from the file alone
    from mswelu import analysis

    again = analysis.recompute(compared)
    assert dict(zip(again.claim, again.verdict, strict=True)) == claims
    study = m["study"]
    assert {(r["variant"], r["seed"]) for r in study["runs"]} == {
        (v, s) for v in ("swelu", "silu", "gpt2") for s in (0, 1)
    }
    assert {r["scope"] for r in study["curves"]} == {"whole split"}  # one scope throughout
    # the swelu role's gain over silu along training: one point per evaluation, both seeds paired
    scale = m["scale"]
    assert (scale["ours"], scale["base"]) == ("swelu", "silu") and "ladder" not in scale
    end = {
        v: {r["seed"]: r["val_loss"] for r in study["runs"] if r["variant"] == v} for v in ("swelu", "silu")
    }
    gains = [(end["silu"][s] - end["swelu"][s]) / end["silu"][s] for s in (0, 1)]
    assert scale["along_training"][-1]["n"] == 2
    assert scale["along_training"][-1]["gain"] == pytest.approx(sum(gains) / 2, rel=1e-6)
    assert {r["param"] for r in study["shapes"] if r["variant"] == "swelu"} >= {"k"}
    assert {r["variant"] for r in study["throughput"]} == {"swelu", "silu", "gpt2"}
    assert all(r["tokens_per_s"] > 0 and r["flops_per_token"] > 0 for r in study["throughput"])
    assert {r["variant"] for r in study["units"]} == {"swelu", "silu", "gpt2"}  # the text bootstrap's units
    # the sweep started at the grid and went beyond its top edge where the best lr sat there
    for variant, status in study["lr"].items():
        tried = sorted({r["lr"] for r in study["sweep"] if r["variant"] == variant})
        assert tried[:2] == [1e-3, 3e-3] and status["lr"] == m["lr"][variant]
        if len(tried) > 2:
            assert tried[2] == pytest.approx(6e-3) and not (status["interior"] and status["lr"] == 3e-3)
    assert any(len({r["lr"] for r in study["sweep"] if r["variant"] == v}) > 2 for v in study["lr"])
    rows = {r["claim"]: r for r in study["rows"]}
    assert {"p", "p (Holm)", "Holm", "MDE (80%)", "scale"} <= set(next(iter(rows.values())))
    assert {
        "SWELU better than SiLU at equal wall-clock time",
        "SWELU better than SiLU at equal model FLOPs",
    } <= set(rows)
    assert {"swelu_val_loss", "silu_val_loss", "gpt2_val_loss"} <= set(m)
    assert m["variants"]["silu"]["seeds"] == 2 and m["variants"]["silu"]["lr"] == m["lr"]["silu"]
    bpb = [r["val_bpb"] for r in study["runs"] if r["variant"] == "silu"]
    assert m["variants"]["silu"]["val_bpb_mean"] == pytest.approx(sum(bpb) / 2)
    # the seeds' counts, on the architecture they specify
    assert {c: r["verdict"] for c, r in m["counts"].items()} == {
        "124M parameters": "refuted",
        "15 learnable k": "supported",
    }
    assert m["counts"]["15 learnable k"]["count"] == 15  # the count itself, not its verdict only
    assert {r["claim"]: r["estimate"] for r in study["counts"]}["15 learnable k"] == 15
    assert all(
        len(r["rounds"]) >= 1 and r["tokens_per_s_min"] <= r["tokens_per_s"] for r in study["throughput"]
    )
    # the notebook's model settings reach our variants, not the Transformer
    config = json.loads((_home() / "runs" / "nbtest-base-silu-s1" / "config.json").read_text())
    assert config["model"] == {"d_state": 4} and config["activation"] == "silu"
    assert json.loads((_home() / "runs" / "nbtest-base-gpt2-s0" / "config.json").read_text())["model"] == {}
    html = (_home() / "reports" / "nbtest-base" / "report.html").read_text()
    assert "lr sweep per variant" in html or "the lr sweep of every variant" in html


def test_04_on_a_study(compared, workdir):
    """04 with ``study``: the k of a comparison's SWELU runs over its seeds, per slot type, and how far it
    moved as training went on; the report goes where a study's are committed."""
    m = _execute(
        "04_k_analysis.ipynb",
        workdir,
        run_name="nbtest-study-k",
        study="nbtest-base",
        study_variants=["swelu"],
        grad_batch_size=2,
        grad_seq_len=16,
    )["metrics"]
    assert m["analysed_run"] == "nbtest-base-swelu-s0" and m["study"] == "nbtest-base" and m["param"] == "k"
    rows = {r["group"]: r for r in m["study_shapes"]["swelu/k"]}
    assert set(rows) == {"in-mixer", "post-mixer", "dense"}
    assert all(r["variant"] == "swelu" and r["seeds"] == 2 for r in rows.values())
    assert all(r["k min"] <= r["k mean"] <= r["k max"] for r in rows.values())
    assert rows["dense"]["seeds claim"] == "1.56-1.90"


def test_04_plots_a_learned_swish_beta(workdir):
    """A Swish-beta run: notebook 04 finds beta as the run's learnable shape parameter and analyses it."""
    from mswelu.train import train

    data = str(_home() / "data")  # prepared by the earlier notebooks of this module
    from mswelu.workbook import data_for

    summary = train(
        dict(
            preset="tiny",
            activation="swish",
            data=data_for(None, "tiny"),
            max_steps=8,
            batch_size=4,
            seq_len=16,
            lr=1e-2,
            warmup=1,
            eval_every=4,
            eval_batches=1,
            ckpt_every=0,
            progress=False,
            tensorboard=False,
            out=str(_home() / "runs" / "nbtest-swish"),
        )
    )
    assert data and summary["beta"]
    m = _execute("04_k_analysis.ipynb", workdir, run_name="nbtest-swish-k", run="nbtest-swish")["metrics"]
    assert m["param"] == "beta" and m["count"] == 7 and m["max_abs_deviation"] > 0
    html = (_home() / "reports" / "nbtest-swish-k" / "report.html").read_text()
    assert "beta per logged step" in html and "learned activation shapes" in html


def test_ctrl_c_of_03_under_papermill_leaves_an_interrupted_report_and_the_rerun_resumes(workdir):
    """Ctrl-C in the terminal of a headless notebook 03: the training checkpoints and stops, the report says
    "interrupted" and how to continue (not "running", not "failed"), the terminal says so in one line; the
    same command then resumes from the checkpoint and the report is complete."""
    import signal

    params = dict(
        run_name="nbtest-ctrlc", profile="nbval", max_steps=600, batch_size=2, seq_len=32, samples=1
    )
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "03_train.ipynb"), str(workdir / "ctrlc.ipynb")]
    cmd += ["-k", "mswelu", "--cwd", str(workdir), "-y", json.dumps(params)]

    def as_a_terminal_would() -> None:  # papermill as a shell starts it: SIGINT neither ignored nor blocked
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # (this test process's libraries may have done either,
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # and a child inherits both)

    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=as_a_terminal_would
    )
    for line in proc.stdout:
        if "nbtest-ctrlc] step" in line:
            break
    proc.send_signal(signal.SIGINT)  # what one Ctrl-C sends papermill, which interrupts the kernel
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "interrupted: training interrupted (nbtest-ctrlc at step" in rest
    report = _home() / "reports" / "nbtest-ctrlc"
    assert json.loads((report / "report.json").read_text())["status"] == "interrupted"
    assert "run the same command again to continue" in (report / "report.html").read_text()
    assert not (report / "metrics.json").exists()
    stopped = json.loads((_home() / "runs" / "nbtest-ctrlc" / "summary.json").read_text())
    assert stopped["interrupted"] and stopped["steps"] < 600
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    steps = re.findall(r"nbtest-ctrlc\] step +(\d+)/600", again.stdout + again.stderr)
    assert steps and int(steps[0]) > stopped["steps"]  # continued from the checkpoint, not from step 1
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["metrics"]["steps"] == 600


def test_failing_cell_fails_papermill_and_the_report(workdir):
    out = workdir / "failed.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(NOTEBOOKS / "02_smoke_run.ipynb"),
            str(out),
            "-k",
            "python3",
            "-p",
            "run_name",
            "nbtest-fail",
            "-p",
            "preset",
            "no-such-preset",
            "--no-progress-bar",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    report = _home() / "reports" / "nbtest-fail"
    page = (report / "report.html").read_text()
    assert "status-failed" in page and "no-such-preset" in page and "Traceback" in page
    assert not (report / "metrics.json").exists()
    assert json.loads((report / "report.json").read_text())["status"] == "failed"


def test_07_probes(workdir):
    """Notebook 07 on one task at two levels, two variants (Mamba and its conv-ones control) and two seeds,
    with an lr grid: the sweep runs on the tuning set and the claims are judged."""
    m = _execute(
        "07_probes.ipynb",
        workdir,
        run_name="nbtest-probes",
        tasks={"inverse_matching": ["easy", "medium"]},
        variants=["mamba", "mamba-conv1"],
        seeds=[0, 1],
        max_steps=3,
        batch_size=4,
        lr_grid=[1e-3, 3e-3],
        test_examples=16,
        hypotheses=[
            {
                "name": "H",
                "says": "the control helps",
                "ours": "mamba-conv1",
                "base": "mamba",
                "tasks": ["inverse_matching", "mqar"],
                "test": "at_least",
                "effect": 0.0,
            }
        ],
    )["metrics"]
    assert m["models"] == 8 and m["tokens"] == 3 * 4 * 14  # the medium level's examples: 14 inputs
    assert set(m["accuracy"]) == {
        f"{v}@inverse_matching:{lv}" for v in ("mamba", "mamba-conv1") for lv in ("easy", "medium")
    }
    assert all(0 <= a <= 1 for a in m["accuracy"].values()) and set(m["seeds"].values()) == {2}
    assert set(m["claims"]) == {"H · inverse_matching easy", "H · inverse_matching medium"}  # mqar: not run
    floors = m["most_common_answer"]  # the accuracy of always giving the test set's most common answer
    assert set(floors) == {"inverse_matching:easy", "inverse_matching:medium"} and all(
        0.4 < f < 0.8 for f in floors.values()
    )  # a yes/no label
    verdicts = {"inconclusive", "supported", "refuted", "not reproduced at this scale"}
    assert set(m["claims"].values()) <= verdicts
    for status in m["lr"].values():  # the grid, extended where an optimum sat at its edge
        assert status["tried"][:2] == [1e-3, 3e-3]
    runs = sorted(p.name for p in (_home() / "runs").glob("nbtest-probes-*"))
    assert "nbtest-probes-inversematching-easy-mamba-conv1-s1" in runs
    assert any(n.startswith("nbtest-probes-tune-inversematching-easy-mamba-lr") for n in runs)
