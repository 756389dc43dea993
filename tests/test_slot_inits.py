"""Per-slot initial values of a shape parameter (``shape: {k: {init: {slot: value}}}``, e.g. SWELU frozen at
the k each layer learned in another run), and frozen parameters staying frozen through ``from_pretrained``."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from mswelu.models.configuration import MsweluConfig
from mswelu.models.modeling import MsweluForCausalLM

SLOTS = ["blocks.0.mixer.act", "blocks.0.post_act", "blocks.1.mixer.act", "blocks.1.post_act"]
SLOTS += ["dense.0.act", "dense.1.act", "dense.2.act"]


def _model(**kwargs) -> MsweluForCausalLM:
    torch.manual_seed(0)
    return MsweluForCausalLM(MsweluConfig.from_preset("tiny", **kwargs))


def test_each_slot_starts_at_its_own_value_and_stays_there_when_frozen() -> None:
    values = {name: 0.6 + 0.2 * i for i, name in enumerate(SLOTS)}
    model = _model(shape={"k": {"init": values, "learnable": False}})
    got = {name: v["k"] for name, v in model.shape_values().items()}
    assert got == pytest.approx(values, abs=1e-6)
    assert all(s.learnable == () for s in model.shape_slots())
    # the rest of the model is built as without the per-slot values (same random draws)
    plain = _model(shape={"k": {"learnable": False}})
    same = [n for n, _ in model.named_parameters() if "k_raw" not in n]
    assert all(torch.equal(model.get_parameter(n), plain.get_parameter(n)) for n in same)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randint(0, 100, (2, 8)), labels=torch.randint(0, 100, (2, 8))).loss.backward()
    opt.step()
    assert {n: v["k"] for n, v in model.shape_values().items()} == got


def test_a_learnable_k_can_start_per_slot_too_and_separate_slots_are_named_each() -> None:
    names = [f"blocks.{i}.mixer.act_{s}" for i in (0, 1) for s in ("conv", "gate")]
    names += [n for n in SLOTS if "mixer" not in n]
    values = {name: 1.0 + 0.05 * i for i, name in enumerate(names)}
    model = _model(shape={"k": {"init": values, "sharing": "separate"}})
    assert {n: v["k"] for n, v in model.shape_values().items()} == pytest.approx(values, abs=1e-6)
    assert all(s.learnable == ("k",) for s in model.shape_slots())


@pytest.mark.parametrize(
    "init, match",
    [
        ({**dict.fromkeys(SLOTS, 1.0), "blocks.0.mixer.akt": 1.0}, "names no slot 'blocks.0.mixer.akt'.*act"),
        (dict.fromkeys(SLOTS[:-1], 1.0), "no value for slot.*dense.2.act"),
        ({**dict.fromkeys(SLOTS, 1.0), "dense.2.act": math.nan}, "finite number"),
    ],
)
def test_a_per_slot_init_that_does_not_fit_the_model_is_a_clear_error(init, match) -> None:
    with pytest.raises(ValueError, match=match):
        _model(shape={"k": {"init": init}})


def test_shared_slots_given_different_values_are_refused() -> None:
    """With k ``shared`` but lambda learnable and ``separate``, the two in-mixer modules hold one k."""
    names = [f"blocks.{i}.mixer.act_{s}" for i in (0, 1) for s in ("conv", "gate")]
    names += [n for n in SLOTS if "mixer" not in n]
    values = {name: 1.0 + 0.05 * i for i, name in enumerate(names)}
    with pytest.raises(ValueError, match="share one k"):
        _model(shape={"k": {"init": values}, "lambda": {"learnable": True, "sharing": "separate"}})


def test_a_frozen_lambda_has_no_parameter_to_set_per_slot() -> None:
    with pytest.raises(ValueError, match="keeps no parameter for it"):
        _model(shape={"lambda": {"init": dict.fromkeys(SLOTS, 0.5)}})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"conv_mode": "ones"},
        {"activation": "swelu-fixed"},
        {"shape": {"k": {"init": dict.fromkeys(SLOTS, 0.7), "learnable": False}}},
    ],
    ids=["conv-ones", "swelu-fixed", "per-slot-k"],
)
def test_frozen_parameters_stay_frozen_and_equal_through_from_pretrained(tmp_path, kwargs) -> None:
    """transformers' loader makes every floating-point weight it loads trainable; the model freezes its
    config's frozen ones again, through the Auto class too."""
    model = _model(**kwargs)
    model.save_pretrained(tmp_path)
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen
    for loaded in (
        AutoModelForCausalLM.from_pretrained(tmp_path),
        MsweluForCausalLM.from_pretrained(tmp_path),
    ):
        assert sorted(n for n, p in loaded.named_parameters() if not p.requires_grad) == frozen
        assert all(torch.equal(loaded.get_parameter(n), model.get_parameter(n)) for n in frozen)
