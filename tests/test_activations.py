"""The activation registry: every registered kind builds, its plot curve is its module's function, its shape
parameters are read through the spec and go to their own optimizer group, it trains in the model and its
learnability is what the spec (or its ``-fixed`` twin) says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mswelu.modules.activations import (
    ACTIVATIONS,
    curve,
    effective_shape,
    make_activation,
    register,
    shape_param_names,
    shape_parameters,
    shape_values,
    spec_of,
)
from mswelu.training.optim import route_parameters


def _off_init(name: str) -> dict[str, float]:
    """Initial values away from the defaults, so a curve that ignored them would show."""
    return {p.name: p.init * 0.7 for p in ACTIVATIONS[name].params}


def _shape(init: dict[str, float]) -> dict[str, dict[str, float]]:
    return {name: {"init": value} for name, value in init.items()}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_curve_is_the_module_function(name: str) -> None:
    module = make_activation(name, _shape(_off_init(name)))
    z = np.linspace(-5, 5, 201)
    with torch.no_grad():
        got = module(torch.tensor(z, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(curve(name, z, shape_values(module)), got, rtol=1e-6, atol=1e-7)
    assert shape_values(module) == pytest.approx(_off_init(name))
    assert spec_of(module).module_type is type(module)
    assert spec_of(torch.nn.Softmax(dim=-1)) is None


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_learnability_is_the_specs(name: str) -> None:
    spec = ACTIVATIONS[name]
    module = make_activation(name)
    with torch.enable_grad():
        learns = {p for p, v in effective_shape(module).items() if v.requires_grad}
    assert learns == {p.name for p in spec.params if p.learnable}
    if name.endswith("-fixed"):
        base = ACTIVATIONS[name.removesuffix("-fixed")]
        assert base.learnable and not spec.learnable and spec.module_type is base.module_type
        assert spec.param_names() == base.param_names()
    elif spec.learnable:
        assert f"{name}-fixed" in ACTIVATIONS


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_shape_parameters_go_to_their_own_group(name: str) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), make_activation(name))
    shape = {pname: p for pname, p, _ in shape_parameters(module)}
    assert bool(shape) == bool(ACTIVATIONS[name].params)
    routes = {r.name: r.group for r in route_parameters(module)}
    for pname, p in shape.items():
        assert (pname in routes) == p.requires_grad
        if p.requires_grad:
            assert routes[pname] == "shape"
    assert routes["0.weight"] == "decay"


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_trains_in_the_model(name: str) -> None:
    from mswelu import MsweluConfig, MsweluForCausalLM

    model = MsweluForCausalLM(MsweluConfig.from_preset("tiny", activation=name))
    ids = torch.randint(0, 512, (2, 9))
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    spec = ACTIVATIONS[name]
    assert (model.num_shape_slots(learnable_only=True) > 0) == spec.learnable
    for slot in model.shape_slots():
        assert slot.activation == spec_of(slot.module).name and slot.params == spec.param_names()
        for p in slot.module.parameters():
            assert (p.grad is not None and bool(torch.isfinite(p.grad).all())) == p.requires_grad


def test_shape_param_names_cover_every_spec() -> None:
    names = shape_param_names()
    assert all(p in names for spec in ACTIVATIONS.values() for p in spec.param_names())
    assert {"k", "lambda", "beta"} <= set(names)


def test_settings_are_checked_against_what_the_activation_registered() -> None:
    """A parameter the activation lacks, an unknown setting or a bad value is one line naming the nearest
    name; a frozen parameter cannot be made learnable; an initial value and a switched-on parameter land."""
    with pytest.raises(
        ValueError, match=r"unknown shape parameter 'k' of activation 'silu' \(its shape parameters: none\)"
    ):
        make_activation("silu", {"k": {"init": 0.3}})
    with pytest.raises(ValueError, match="'lamda' \\(did you mean 'lambda'\\?\\) of activation 'swelu'"):
        make_activation("swelu", {"lamda": {"learnable": True}})
    with pytest.raises(ValueError, match="'lr_scal' \\(did you mean 'lr_scale'\\?\\) of shape.k"):
        make_activation("swelu", {"k": {"lr_scal": 2.0}})
    with pytest.raises(ValueError, match="shape.k is frozen in 'swelu-fixed': use 'swelu'"):
        make_activation("swelu-fixed", {"k": {"learnable": True}})
    for bad, match in (
        ({"init": "1"}, "init must be a finite number"),
        ({"learnable": "yes"}, "learnable must be true or false"),
        ({"lr_scale": 0}, "lr_scale must be a number > 0"),
        ({"sharing": "some"}, "unknown sharing 'some'"),
    ):
        with pytest.raises(ValueError, match=match):
            make_activation("swish", {"beta": bad})
    fixed = make_activation("swelu-fixed", {"k": {"init": 1.5}, "lambda": {"learnable": True, "init": 1.2}})
    with torch.enable_grad():
        learns = {p for p, v in effective_shape(fixed).items() if v.requires_grad}
    assert learns == {"lambda"} and shape_values(fixed) == pytest.approx({"k": 1.5, "lambda": 1.2})


def test_unknown_activation_suggests_the_nearest_name() -> None:
    with pytest.raises(ValueError, match="did you mean 'swelu'"):
        make_activation("swelo")


def test_register_refuses_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(ACTIVATIONS["silu"])
