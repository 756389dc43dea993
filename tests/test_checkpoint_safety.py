"""Loading a sharded (DCP) checkpoint runs no code from its files: the metadata pickle builds only DCP's
metadata classes, non-tensor items are read with ``weights_only=True``; a real checkpoint still loads
whole (weights and optimizer state), and a tampered one is refused before anything runs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from mswelu.base import distributed as du
from mswelu.training import checkpoint as ckpt
from mswelu.training.sharded_checkpoint import (
    DCP_DIR,
    METADATA_GLOBALS,
    _dcp_load,
    load_sharded,
    save_sharded,
)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _model_and_optimizer(seed: int, lr: float) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return model, opt


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    model, opt = _model_and_optimizer(0, 1e-3)
    path = save_sharded(tmp_path / "ckpts", 1, model, [opt], {"tokens": 5}, {}, None, du.DistInfo())
    return path, model, opt


def test_a_real_checkpoint_names_only_allowed_globals_and_loads_whole(saved) -> None:
    path, model, opt = saved
    named: set[tuple[str, str]] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module: str, name: str):
            named.add((module, name))
            return super().find_class(module, name)

    with open(path / DCP_DIR / ".metadata", "rb") as f:
        Recorder(f).load()
    assert {g for g in named if g[0] != "torch" or g[1] == "Size"} <= METADATA_GLOBALS
    other, other_opt = _model_and_optimizer(1, 5.0)
    state = load_sharded(path, other, [other_opt])
    assert state["step"] == 1 and state["tokens"] == 5
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other_opt.param_groups[0]["lr"] == 1e-3  # a non-tensor item, read with weights_only=True
    assert torch.equal(other_opt.state[other[0].weight]["exp_avg"], opt.state[model[0].weight]["exp_avg"])


def test_a_metadata_pickle_that_runs_code_is_refused_unrun(saved, tmp_path: Path) -> None:
    path = saved[0]
    marker = tmp_path / "ran"
    (path / DCP_DIR / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    names = [f"{DCP_DIR}/{p.name}" for p in (path / DCP_DIR).iterdir()] + [
        "trainer_state.json",
        "config.json",
    ]
    ckpt.write_manifest(path, 1, 5, names, "sharded")  # the attacker rewrites the hashes too
    model, opt = _model_and_optimizer(1, 5.0)
    with pytest.raises(ckpt.CheckpointError, match=r"names builtins\.exec, which DCP metadata never holds"):
        load_sharded(path, model, [opt])
    assert not marker.exists()


def test_a_non_tensor_item_that_runs_code_is_refused_unrun(tmp_path: Path) -> None:
    import torch.distributed.checkpoint as dcp

    marker = tmp_path / "ran"
    dcp.save({"x": _Payload(marker)}, checkpoint_id=str(tmp_path / "dcp"))
    with pytest.raises(ckpt.CheckpointError, match="'x' is not plain data"):
        _dcp_load({"x": 0}, tmp_path / "dcp")
    assert not marker.exists()
