"""Run discovery and the monitor: ``python -m mswelu.runs list|show`` and ``python -m mswelu.monitor`` on a
folder with a finished, an interrupted, a failed and a running run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mswelu import monitor
from mswelu.runs import index as run_index
from mswelu.train import train

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tiny_train_config: dict, out: Path, **kw) -> dict:
    return {**tiny_train_config, "out": str(out), "max_steps": 6, "ckpt_every": 2, "eval_every": 3, **kw}


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory, embedded_data) -> Path:
    """finished/, interrupted/ (stopped at step 3 with a checkpoint), failed/ (an error at step 3)."""
    base = dict(
        preset="tiny", data=str(embedded_data), batch_size=4, seq_len=16, lr=1e-2, warmup=2, eval_batches=1,
        log_every=1, progress=False, tensorboard=False, monitor_every=0,
    )  # fmt: skip
    root = tmp_path_factory.mktemp("runs")
    train(_cfg(base, root / "finished"))

    def stop_at_3(event, trainer, info):
        if event == "step" and info["step"] == 3:
            trainer.request_stop("test")

    train(_cfg(base, root / "interrupted"), callbacks=[stop_at_3])

    def fail_at_3(event, trainer, info):
        if event == "step" and info["step"] == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(_cfg(base, root / "failed"), callbacks=[fail_at_3])
    return root


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=120, cwd=ROOT
    )


def test_runs_list_json_reports_each_status(runs_folder) -> None:
    proc = _cli("-m", "mswelu.runs", "list", str(runs_folder), "--json")
    assert proc.returncode == 0, proc.stderr
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert set(infos) == {"finished", "interrupted", "failed"}
    done, stopped, failed = infos["finished"], infos["interrupted"], infos["failed"]
    assert (done["status"], stopped["status"], failed["status"]) == ("finished", "interrupted", "failed")
    assert (done["step"], stopped["step"], failed["step"]) == (6, 3, 2)  # failed: its last record
    assert done["total_steps"] == stopped["total_steps"] == 6
    assert done["tokens"] == 6 * 4 * 16 and stopped["tokens"] == 3 * 4 * 16
    assert (done["final"], stopped["final"], failed["final"]) == (True, False, False)
    assert done["newest_checkpoint"] == "step_0000006" and stopped["newest_checkpoint"] == "step_0000003"
    assert failed["newest_checkpoint"] == "step_0000002"  # still resumable
    summary = json.loads((runs_folder / "finished" / "summary.json").read_text())
    assert done["final_val_bpb"] == summary["val_bpb"] and stopped["final_val_bpb"] is None
    lines = (runs_folder / "finished" / "metrics.jsonl").read_text().splitlines()
    evals = [json.loads(x)["val_bpb"] for x in lines if '"val_bpb"' in x]
    assert done["best_val_bpb"] == min(evals)
    assert all(i["size_bytes"] == run_index.folder_size(runs_folder / n) > 0 for n, i in infos.items())


def test_runs_list_table_and_show(runs_folder, capsys) -> None:
    assert run_index.main(["list", str(runs_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["run", "status", "steps"] and len(lines) == 4
    assert any(line.split()[:3] == ["failed", "failed", "2/6"] for line in lines)
    assert run_index.main(["show", str(runs_folder / "interrupted")]) == 0
    assert "step_0000003 (complete" in capsys.readouterr().out
    assert run_index.main(["show", str(runs_folder / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: no run")


def test_monitor_shows_a_running_and_a_finished_run(tmp_path, tiny_train_config, monkeypatch) -> None:
    root = tmp_path / "runs"
    train(_cfg(tiny_train_config, root / "done", max_steps=3))
    reached, release = threading.Event(), threading.Event()

    def hold_at_2(event, trainer, info):
        if event == "log" and info.get("step") == 2 and "loss" in info:
            reached.set()
            release.wait(120)

    worker = threading.Thread(
        target=train,
        args=(_cfg(tiny_train_config, root / "live", max_steps=4),),
        kwargs={"callbacks": [hold_at_2]},
    )
    worker.start()
    try:
        assert reached.wait(120), "the run never reached step 2"
        lines = {line.split()[0]: line for line in monitor.render(root).splitlines()}
        assert lines["live"].split()[1:4] == ["running", "step", "2/4"] and "ETA" in lines["live"]
        assert "tok/s" in lines["live"] and "loss" in lines["live"]
        assert lines["done"].split()[1:4] == ["finished", "step", "3/3"] and "val" in lines["done"]
        assert "ETA" not in lines["done"]
        assert run_index.lock_holder(root / "live").startswith(f"pid {os.getpid()} ")
        # where /proc/locks cannot be read, the process named in the lock file is asked instead
        monkeypatch.setattr(run_index, "_locked_inodes", lambda: None)
        assert run_index.run_status(root / "live") == "running"
        assert monitor.render(root, running_only=True).split()[0] == "live"
    finally:
        release.set()
        worker.join(120)
    assert run_index.run_status(root / "live") == "finished"  # the lock file stays; no one holds it
    monkeypatch.undo()
    assert run_index.run_status(root / "live") == "finished"
    assert [ln.split()[1] for ln in monitor.render(root).splitlines()] == ["finished"] * 2


def test_monitor_command(tmp_path, runs_folder) -> None:
    proc = _cli("-m", "mswelu.monitor", str(runs_folder))
    assert proc.returncode == 0, proc.stderr
    assert sorted(ln.split()[:2] for ln in proc.stdout.splitlines()) == [
        ["failed", "failed"], ["finished", "finished"], ["interrupted", "interrupted"]
    ]  # fmt: skip
    assert monitor.main([str(tmp_path / "missing")]) == 2
    assert monitor.main([str(tmp_path), "--watch", "0"]) == 2
