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
from mswelu.optim import route_parameters


def _off_init(name: str) -> dict[str, float]:
    """Initial values away from the defaults, so a curve that ignored them would show."""
    return {p.name: p.init * 0.7 for p in ACTIVATIONS[name].params}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_curve_is_the_module_function(name: str) -> None:
    module = make_activation(name, init=_off_init(name))
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
    shape = dict(shape_parameters(module))
    assert bool(shape) == bool(ACTIVATIONS[name].params)
    routes = {r.name: r.group for r in route_parameters(module)}
    for pname, p in shape.items():
        assert (pname in routes) == p.requires_grad
        if p.requires_grad:
            assert routes[pname] == "shape"
    assert routes["0.weight"] == "decay"


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_every_activation_trains_in_the_model(name: str) -> None:
    from mswelu import MambaSWELUConfig, MambaSWELUForCausalLM

    model = MambaSWELUForCausalLM(MambaSWELUConfig.from_preset("tiny", activation=name))
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


def test_overrides_that_name_no_parameter_are_ignored_and_frozen_stays_frozen() -> None:
    silu = make_activation("silu", init={"k": 0.3}, learnable={"lambda": True})
    assert shape_values(silu) == {} and not list(silu.parameters())
    fixed = make_activation("swelu-fixed", init={"k": 1.5}, learnable={"k": True, "lambda": True})
    with torch.enable_grad():
        learns = {p for p, v in effective_shape(fixed).items() if v.requires_grad}
    assert learns == {"lambda"} and shape_values(fixed)["k"] == pytest.approx(1.5)


def test_unknown_activation_suggests_the_nearest_name() -> None:
    with pytest.raises(ValueError, match="did you mean 'swelu'"):
        make_activation("swelo")


def test_register_refuses_a_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(ACTIVATIONS["silu"])
