"""The run folder's reading side: the model of an interrupted run (no final/) comes from its newest
complete checkpoint, a run without any model says so, and a broken final/ falls back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_train import _stop_at, write_byte_dataset

from mswelu import generate as G
from mswelu import workbook as wb
from mswelu.runs import folder as runs
from mswelu.runs import model as run_model
from mswelu.train import train
from mswelu.workbook.reuse import run_decision, train_or_load


@pytest.fixture(scope="module")
def interrupted(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_byte_dataset(tmp_path_factory.mktemp("bytes") / "data")
    out = tmp_path_factory.mktemp("runs") / "stopped"
    summary = train(tiny_config(data, out, max_steps=6), callbacks=[_stop_at(3)])
    assert summary["interrupted"] and not (out / "final").exists()
    return out


def test_interrupted_run_loads_from_its_newest_checkpoint(interrupted: Path) -> None:
    kind, source = runs.model_source(interrupted)
    assert kind == "checkpoint" and source.name == "step_0000003"
    model, model_dir = run_model.load_model(interrupted)
    assert model_dir == source
    from safetensors.torch import load_file

    state = load_file(source / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in state:
            torch.testing.assert_close(p, state[name], rtol=0, atol=0)
    ids = G.decode(model, torch.tensor([[1, 2]]), G.SamplingConfig(temperature=0, max_new_tokens=4))
    assert ids.shape == (1, 6)
    assert wb.load_run(interrupted).model_dir == source
    assert wb.shape_gradients_for_run(wb.load_run(interrupted), batch_size=2, seq_len=8)


def test_run_without_a_model_says_so(interrupted: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(interrupted / "config.json", bare / "config.json")
    with pytest.raises(ValueError, match="has no model: no final/ and no complete checkpoint"):
        G.load_model(bare)
    assert wb.load_run(bare).model_dir is None
    assert G.main(["--run", str(bare), "--prompt", "a"]) == 2


def test_broken_final_falls_back_to_the_checkpoint(interrupted: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    model, _ = run_model.load_model(run)
    model.save_pretrained(run / "final")
    assert run_model.load_model(run)[1] == run / "final"
    with open(run / "final" / "model.safetensors", "r+b") as f:
        f.truncate(64)
    _, model_dir = run_model.load_model(run)
    assert model_dir.name == "step_0000003"
    err = capsys.readouterr().err
    assert "final does not hold loadable weights (SafetensorError" in err
    assert "falling back to checkpoint step 3 (step_0000003)" in err


def test_a_second_writer_stops_at_once_naming_the_holder(tiny_config, tmp_path: Path) -> None:
    from mswelu.base.fs import FolderLock

    data = write_byte_dataset(tmp_path / "data")
    out = tmp_path / "busy"
    with FolderLock(out, "run folder"):
        with pytest.raises(ValueError, match=r"busy is being written by pid \d+ on .* since"):
            train(tiny_config(data, out, max_steps=2))
    # released: the folder (only the lock in it) is usable
    summary = train(tiny_config(data, out, max_steps=2))
    assert summary["steps"] == 2


def test_a_dead_writer_leaves_no_lock_in_the_way(tiny_config, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "run"
    code = (
        f"from mswelu.base.fs import FolderLock; FolderLock({str(out)!r}).acquire(); import os; os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert (out / ".lock").is_file()
    data = write_byte_dataset(tmp_path / "data")
    assert train(tiny_config(data, out, max_steps=2))["steps"] == 2


def test_a_refused_run_leaves_no_folder_behind(tiny_config, tmp_path: Path) -> None:
    data = write_byte_dataset(tmp_path / "data")
    out = tmp_path / "never"
    with pytest.raises(ValueError, match="unknown model setting.*'d_modle' \\(did you mean 'd_model'\\?\\)"):
        train(tiny_config(data, out, model={"d_modle": 32}))
    assert not out.exists()


def test_notebook_03_never_replaces_a_run_it_was_not_asked_to(
    tiny_config, tmp_path: Path, monkeypatch
) -> None:
    """Rerunning notebook 03's plan under one run_name: the same settings reuse the finished run, an
    interrupted one is continued, other settings are refused (nothing changed), overwrite=True retrains."""
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    data = write_byte_dataset(tmp_path / "data")
    base = {k: v for k, v in tiny_config(data, tmp_path / "unused").items() if k not in ("out", "run_name")}

    def execute(**kw):
        plan = wb.plan_launch({**base, **kw.pop("cfg", {})}, "main", launch="single", visible_gpus=0, **kw)
        return wb.execute_plan(plan)["main"]

    first = execute()
    out = first.path
    weights = (out / "final" / "model.safetensors").read_bytes()
    again = execute()
    assert again.reused and (out / "final" / "model.safetensors").read_bytes() == weights
    with pytest.raises(
        ValueError, match="already holds a run \\(settings differ: lr\\); nothing was changed"
    ):
        execute(cfg={"lr": 1e-3})
    assert (out / "final" / "model.safetensors").read_bytes() == weights
    replaced = execute(cfg={"lr": 1e-3}, overwrite=True)
    assert not replaced.reused and replaced.config["lr"] == 1e-3
    # an interrupted run of the same settings is continued from its checkpoint, not restarted
    stopped = train({**tiny_config(data, tmp_path / "runs" / "cont", max_steps=6)}, callbacks=[_stop_at(3)])
    assert stopped["interrupted"]
    plan = wb.plan_launch({**base, "max_steps": 6}, "cont", launch="single", visible_gpus=0)
    assert run_decision(plan[0]["config"]) == "resume"
    done = wb.execute_plan(plan)["cont"]
    assert done.summary["steps"] == 6 and [r["step"] for r in done.train.to_dict("records")] == list(
        range(1, 7)
    )


def test_notebook_05_runs_are_reused_continued_or_refused_too(tiny_config, tmp_path: Path) -> None:
    data = write_byte_dataset(tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "v-swelu-s0")
    first = train_or_load(cfg)
    assert not first.reused and train_or_load(cfg).reused
    with pytest.raises(ValueError, match="settings differ: max_steps"):
        train_or_load({**cfg, "max_steps": 4})
    assert train_or_load({**cfg, "max_steps": 4, "overwrite": True}).summary["steps"] == 4
    assert not train_or_load({**cfg, "max_steps": 4}, reuse=False).reused  # retrain on request
