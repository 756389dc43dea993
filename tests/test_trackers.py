"""Trackers: the ``trackers`` setting, the scalars every tracker gets, a wandb offline run and trackio's local
store read back against ``metrics.jsonl``, and the one-line failures before training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mswelu.train import config_from_args, main
from mswelu.training import trackers as tr
from mswelu.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]


# ----------------------------------------------------------------------------------------- the setting
def test_trackers_setting_forms_and_defaults() -> None:
    assert TrainConfig().resolved_trackers() == ("tensorboard",)
    assert TrainConfig(tensorboard=False).resolved_trackers() == ()  # the older switch still works
    assert TrainConfig.from_dict({"trackers": "tensorboard, wandb"}).trackers == ("tensorboard", "wandb")
    assert TrainConfig.from_dict({"trackers": ["trackio"]}).resolved_trackers() == ("trackio",)
    assert TrainConfig.from_dict({"trackers": []}).resolved_trackers() == ()
    assert config_from_args(["--trackers", "tensorboard,wandb"]).trackers == ("tensorboard", "wandb")
    assert TrainConfig.from_dict({"trackers": ["wandb"]}).to_dict()["trackers"] == ["wandb"]  # JSON-ready
    with pytest.raises(ValueError, match=r"unknown tracker 'wandbb' \(did you mean 'wandb'\?\)"):
        TrainConfig.from_dict({"trackers": "wandbb"}).validate()
    assert TrainConfig(trackers=("tensorboard",), tensorboard=False).resolved_trackers() == ("tensorboard",)
    with pytest.raises(ValueError, match="trackers must be a list of names or null"):
        TrainConfig.from_dict({"trackers": [1]}).validate()


def test_scalars_are_tensorboards_names() -> None:
    record = {
        "step": 3,
        "loss": 2.5,
        "grad_norm": 0.5,
        "tokens_per_s": 100.0,
        "lr": {"decay": 1e-3, "shape": 2e-3},
        "k": {"blocks.0.mixer.act": 1.1},
        "lambda": {"blocks.0.mixer.act": 1.0},
        "val_bpb": None,
        "device": {"cpu_percent": 150.0, "gpu0_util": 97.0},
    }
    assert tr.scalars(record, ["k"]) == {
        "train/loss": 2.5,
        "train/grad_norm": 0.5,
        "train/tokens_per_s": 100.0,
        "lr/decay": 1e-3,
        "lr/shape": 2e-3,
        "k/blocks.0.mixer.act": 1.1,  # frozen lambda left out; val_bpb None left out
        "device/cpu_percent": 150.0,
        "device/gpu0_util": 97.0,
    }
    assert tr.scalars({"step": 4, "val_loss": 3.0, "val_bpb": 1.5}) == {
        "val/val_loss": 3.0,
        "val/val_bpb": 1.5,
    }


def test_config_for_trackers_moves_derived_values() -> None:
    out = tr.tracker_config({"lr": 1e-3, "_world_size": 1, "_model_config": {"d_model": 64}})
    assert out == {"lr": 1e-3, "derived": {"world_size": 1, "model_config": {"d_model": 64}}}


# ----------------------------------------------------------------------------------------- failing first
def _args(tmp_path: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--preset", "tiny", "--data", str(data), "--out", str(tmp_path / "run"), "--max-steps", "2",
        "--batch-size", "2", "--seq-len", "8", "--progress", "false", *extra,
    ]  # fmt: skip


def test_a_missing_tracker_package_is_one_line_before_training(
    tmp_path, embedded_data, monkeypatch, capsys
) -> None:
    real = tr.importlib.util.find_spec
    monkeypatch.setattr(tr.importlib.util, "find_spec", lambda n, *a: None if n == "trackio" else real(n, *a))
    assert main(_args(tmp_path, embedded_data, "--trackers", "tensorboard,trackio")) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: tracker 'trackio' needs the trackio package, which is not installed: " + (
        "pip install 'mswelu[trackio]'"
    )
    assert not (tmp_path / "run").exists()  # nothing written


def test_wandb_online_without_a_key_is_one_line_before_training(
    tmp_path, embedded_data, monkeypatch, capsys
) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp_path / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert main(_args(tmp_path, embedded_data, "--trackers", "wandb")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "WANDB_API_KEY" in err[0] and "WANDB_MODE=offline" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_tracker_that_fails_mid_run_is_switched_off(
    tmp_path, tiny_train_config, monkeypatch, capsys
) -> None:
    from mswelu.train import train

    def broken(self, values, step):
        raise OSError("disk of the tracker is gone")

    monkeypatch.setattr(tr.TensorBoardTracker, "log", broken)
    summary = train({**tiny_train_config, "out": str(tmp_path / "run"), "trackers": ["tensorboard"]})
    assert summary["interrupted"] is False and (tmp_path / "run" / "final").is_dir()
    err = capsys.readouterr().err
    assert err.count("tracker tensorboard failed (OSError: disk of the tracker is gone)") == 1
    assert len([r for r in _records(tmp_path / "run") if "loss" in r]) == tiny_train_config["max_steps"]


# ----------------------------------------------------------------------------------------- wandb offline
@pytest.mark.slow
def test_wandb_offline_run_holds_the_losses_of_metrics_jsonl(tmp_path, tiny_train_config) -> None:
    pytest.importorskip("wandb")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tracker_files import wandb_artifact_files, wandb_config, wandb_history

    from mswelu.runs.metrics_log import attach_to_trackers
    from mswelu.train import train

    out = tmp_path / "run"
    cfg = {**tiny_train_config, "out": str(out), "trackers": ["tensorboard", "wandb"], "monitor_every": 0.05}
    train(cfg)
    records = _records(out)
    losses = [r["loss"] for r in records if "loss" in r]
    bpbs = [r["val_bpb"] for r in records if "val_bpb" in r]
    (offline,) = (out / "wandb").glob("offline-run-*")
    history = wandb_history(offline)
    assert [h["train/loss"] for h in history if "train/loss" in h] == losses
    assert [h["val/val_bpb"] for h in history if "val/val_bpb" in h] == bpbs
    assert [h["step"] for h in history if "train/loss" in h] == [r["step"] for r in records if "loss" in r]
    assert any("device/rss_gb" in h for h in history) and any(k.startswith("k/") for h in history for k in h)
    config = wandb_config(offline)
    assert config["preset"] == "tiny" and config["derived"]["total_steps"] == tiny_train_config["max_steps"]
    assert {"summary.json", "config.json", "README.md"} <= set(wandb_artifact_files(offline))
    state = json.loads((out / "trackers.json").read_text())
    assert offline.name.endswith(state["wandb"]["id"])
    # TensorBoard got the same losses
    tb = EventAccumulator(str(out / "tb"))
    tb.Reload()
    assert [e.value for e in tb.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    # `wandb sync` recognises the run as one to upload (--dry-run: nothing leaves the machine)
    wandb_cli = Path(sys.executable).parent / "wandb"
    cmd = [str(wandb_cli)] if wandb_cli.exists() else [sys.executable, "-m", "wandb"]
    proc = subprocess.run(
        [*cmd, "sync", "--dry-run", str(offline)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "Would sync 1 run" in proc.stdout + proc.stderr, proc.stderr
    # a report written later joins the same wandb run (a second offline folder of the same id)
    report = tmp_path / "report.html"
    report.write_text("<html>report</html>")
    assert attach_to_trackers(out, [report]) == ["wandb"]
    later = [p for p in (out / "wandb").glob("offline-run-*") if p != offline]
    assert len(later) == 1 and later[0].name.endswith(state["wandb"]["id"])
    assert wandb_artifact_files(later[0]) == ["report.html"]


# ----------------------------------------------------------------------------------------- trackio
@pytest.mark.slow
def test_trackio_local_store_holds_the_losses_of_metrics_jsonl(tmp_path, tiny_train_config) -> None:
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    from mswelu.train import train

    out = tmp_path / "trackio-run"
    train({**tiny_train_config, "out": str(out), "trackers": ["trackio"], "monitor_every": 0.05})
    records = _records(out)
    logs = SQLiteStorage.get_logs("mswelu", out.name)
    assert [r["train/loss"] for r in logs if "train/loss" in r] == [r["loss"] for r in records if "loss" in r]
    assert [r["val/val_bpb"] for r in logs if "val/val_bpb" in r] == [
        r["val_bpb"] for r in records if "val_bpb" in r
    ]
    assert any("device/cpu_percent" in r for r in logs)
    assert SQLiteStorage.get_run_config("mswelu", out.name)["preset"] == "tiny"
    assert json.loads((out / "trackers.json").read_text())["trackio"]["name"] == out.name
    # the end of the run and a report written later are kept as files in trackio's store
    from mswelu.base.fs import sha256_file
    from mswelu.runs.metrics_log import attach_to_trackers

    report = tmp_path / "report.html"
    report.write_text("<html>trackio report</html>")
    assert attach_to_trackers(out, [report]) == ["trackio"]
    blobs = Path(os.environ["TRACKIO_DIR"]) / "artifacts" / "mswelu" / "blobs" / "sha256"
    for f in (report, out / "summary.json", out / "final" / "README.md"):
        digest = sha256_file(f)
        assert (blobs / digest[:2] / digest).is_file(), f.name
