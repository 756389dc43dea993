"""The run folder's reading side: the model of an interrupted run (no final/) comes from its newest
complete checkpoint, a run without any model says so, and a broken final/ falls back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_train import _stop_at, tiny_cfg, write_byte_dataset

from mswelu import generate as G
from mswelu import runs
from mswelu import workbook as wb
from mswelu.train import train


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = write_byte_dataset(tmp_path_factory.mktemp("bytes") / "data")
    out = tmp_path_factory.mktemp("runs") / "stopped"
    summary = train(tiny_cfg(data, out, max_steps=6), callbacks=[_stop_at(3)])
    assert summary["interrupted"] and not (out / "final").exists()
    return out


def test_interrupted_run_loads_from_its_newest_checkpoint(interrupted: Path) -> None:
    kind, source = runs.model_source(interrupted)
    assert kind == "checkpoint" and source.name == "step_0000003"
    model, model_dir = runs.load_model(interrupted)
    assert model_dir == source
    from safetensors.torch import load_file

    state = load_file(source / "model.safetensors")
    for name, p in model.state_dict().items():
        if name in state:
            torch.testing.assert_close(p, state[name], rtol=0, atol=0)
    ids = G.decode(model, torch.tensor([[1, 2]]), G.SamplingConfig(temperature=0, max_new_tokens=4))
    assert ids.shape == (1, 6)
    assert wb.load_run(interrupted).model_dir == source
    assert wb.k_gradients_for_run(wb.load_run(interrupted), batch_size=2, seq_len=8)


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
    model, _ = runs.load_model(run)
    model.save_pretrained(run / "final")
    assert runs.load_model(run)[1] == run / "final"
    with open(run / "final" / "model.safetensors", "r+b") as f:
        f.truncate(64)
    _, model_dir = runs.load_model(run)
    assert model_dir.name == "step_0000003"
    assert "cannot be loaded" in capsys.readouterr().err
