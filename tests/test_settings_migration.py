"""The one migration of older settings (``k_init``, ``learnable_lambda``, ``mixer_k_sharing``, ``k_lr_scale``,
``strategy``) into today's (``model.shape``, ``parallel``): an old TrainConfig dict, an old run folder's
``config.json``, an old saved model and the committed ledger records load to the same model and settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from mswelu import MsweluConfig, MsweluForCausalLM
from mswelu.training.config import TrainConfig
from mswelu.training.optim import build_optimizer
from mswelu.training.settings_policy import changed_settings, migrate_train_settings

OLD_MODEL = {"k_init": 0.8, "learnable_lambda": True, "mixer_k_sharing": "separate"}
NEW_SHAPE = {
    "k": {"init": 0.8, "sharing": "separate", "lr_scale": 2.0},
    "lambda": {"learnable": True, "sharing": "separate", "lr_scale": 2.0},
}
ROOT = Path(__file__).resolve().parent.parent


def _model(**config: object) -> MsweluForCausalLM:
    torch.manual_seed(0)
    return MsweluForCausalLM(MsweluConfig.from_preset("tiny", vocab_size=97, **config)).eval()


def test_an_old_train_config_dict_reads_in_todays_names() -> None:
    old = {"preset": "tiny", "strategy": "ddp", "k_lr_scale": 2.0, "model": dict(OLD_MODEL)}
    cfg = TrainConfig.from_dict(old)
    assert cfg.parallel == "ddp" and cfg.model == {"shape": NEW_SHAPE}
    assert "k_lr_scale" not in cfg.to_dict()
    assert migrate_train_settings(cfg.to_dict()) == cfg.to_dict()  # today's dict comes back unchanged


def test_old_values_for_parameters_the_activation_lacks_are_dropped_as_they_were_ignored() -> None:
    silu = TrainConfig.from_dict(
        {"preset": "tiny", "activation": "silu", "k_lr_scale": 3.0, "model": OLD_MODEL}
    )
    assert silu.model == {}
    swish = TrainConfig.from_dict({"preset": "tiny", "activation": "swish", "model": {"k_init": 0.5}})
    assert swish.model == {}
    gpt2 = TrainConfig.from_dict({"preset": "gpt2:tiny", "k_lr_scale": 1.0})
    assert gpt2.model == {}


def test_an_old_model_config_builds_the_same_model_and_optimizer() -> None:
    old, new = (
        _model(**OLD_MODEL),
        _model(shape={k: {s: v for s, v in e.items() if s != "lr_scale"} for k, e in NEW_SHAPE.items()}),
    )
    assert old.config.shape == new.config.shape and "k_init" not in old.config.to_dict()
    assert old.state_dict().keys() == new.state_dict().keys()
    for (name, a), b in zip(old.state_dict().items(), new.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    scaled = _model(**OLD_MODEL, k_lr_scale=2.0)
    groups = {g["name"]: g["lr"] for g in build_optimizer(scaled, "adamw", lr=0.1).param_groups}
    assert groups["shape"] == pytest.approx(0.2)


def test_an_old_saved_model_loads_to_the_same_model(tmp_path: Path) -> None:
    model = _model(shape={"k": {"init": 0.8}, "lambda": {"learnable": True}})
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("shape")
    config.update(k_init=0.8, learnable_lambda=True, mixer_k_sharing="shared")
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = MsweluForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.shape == model.config.shape
    x = torch.randint(0, 97, (2, 7))
    assert torch.equal(loaded(x).logits, model(x).logits)
    assert loaded.shape_values() == model.shape_values()


def test_an_old_run_folders_config_matches_todays_settings_and_rebuilds_its_model() -> None:
    """A run folder's ``config.json``: its settings compare equal to today's dict of the same run (a resume
    and a notebook's reuse accept it), and its ``_model_config`` rebuilds the model (as loading a
    checkpoint does)."""
    cfg = TrainConfig.from_dict({"preset": "tiny", "k_lr_scale": 2.0, "model": dict(OLD_MODEL)})
    recorded = {**cfg.to_dict(), "k_lr_scale": 2.0, "model": dict(OLD_MODEL)}
    assert changed_settings(recorded, cfg.to_dict()) == []
    assert changed_settings({**recorded, "k_lr_scale": 1.0}, cfg.to_dict()) == ["model"]
    model_cfg = {**_model().config.to_dict(), **OLD_MODEL}
    model_cfg.pop("shape")
    rebuilt = AutoConfig.for_model(model_cfg.pop("model_type"), **model_cfg)
    assert rebuilt.shape == {k: {s: v for s, v in e.items() if s != "lr_scale"} for k, e in NEW_SHAPE.items()}


def test_the_committed_records_hold_todays_names() -> None:
    """The studies' ledger records and throughput keys were migrated once with this function: reading them
    again changes nothing, and an old record's settings (with ``k_lr_scale``) match the migrated ones."""
    records = sorted((ROOT / "reports" / "studies").glob("*/runs/*.json"))
    assert records
    for path in records:
        settings = json.loads(path.read_text())["key"]["settings"]
        assert migrate_train_settings(settings) == settings, path.name
        assert changed_settings({**settings, "k_lr_scale": 1.0}, settings) == []
    throughput = json.loads(
        (ROOT / "reports" / "studies" / "activations-cpu" / "throughput.json").read_text()
    )
    for key in throughput["keys"].values():
        assert migrate_train_settings(key["settings"]) == key["settings"]


def test_shape_settings_from_the_command_line_and_a_yaml_file(tmp_path: Path) -> None:
    """``--set shape.k.init=0.8`` sets one entry, over a config file's ``model.shape``; a misspelt
    parameter is refused with the nearest name when the run's config is checked."""
    from mswelu.train import config_from_args

    path = tmp_path / "run.yaml"
    path.write_text("preset: tiny\nmodel:\n  shape:\n    k: {lr_scale: 2.0}\n")
    cfg = config_from_args(
        ["--config", str(path), "--set", "shape.k.init=0.8", "--set", "shape.lambda.learnable=true"]
    )
    assert cfg.model == {"shape": {"k": {"lr_scale": 2.0, "init": 0.8}, "lambda": {"learnable": True}}}
    cfg = config_from_args(["--preset", "tiny", "--set", "shape.lamda.learnable=true"])
    with pytest.raises(ValueError, match="'lamda' \\(did you mean 'lambda'\\?\\) of activation 'swelu'"):
        cfg.validate()
