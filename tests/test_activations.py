"""The activation registry: every registered kind builds, its plot curve is its module's function, and the
optimizer and the model find its shape parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mswelu.modules.activations import ACTIVATIONS, curve, make_activation, shape_parameters, spec_of
from mswelu.optim import route_parameters


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_curve_is_the_module_function(name: str) -> None:
    module = make_activation(name, k_init=0.7)
    z = np.linspace(-5, 5, 201)
    values = module.values() if hasattr(module, "values") else None
    with torch.no_grad():
        got = module(torch.tensor(z, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(curve(name, z, values), got, rtol=1e-6, atol=1e-7)
    assert spec_of(module).module_type is type(module)
    assert spec_of(torch.nn.Softmax(dim=-1)) is None


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_shape_parameters_go_to_their_own_group(name: str) -> None:
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), make_activation(name))
    shape = dict(shape_parameters(module))
    assert bool(shape) == (ACTIVATIONS[name].learnable or name == "swelu-fixed")
    routes = {r.name: r.group for r in route_parameters(module)}
    for pname, p in shape.items():
        if p.requires_grad:
            assert routes[pname] == "swelu"
    assert routes["0.weight"] == "decay"


def test_every_activation_trains_in_the_model() -> None:
    from mswelu import MambaSWELUConfig, MambaSWELUForCausalLM

    for name in ACTIVATIONS:
        model = MambaSWELUForCausalLM(MambaSWELUConfig.from_preset("tiny", activation=name))
        ids = torch.randint(0, 512, (2, 9))
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        assert (model.num_k(learnable_only=True) > 0) == ACTIVATIONS[name].learnable


def test_register_refuses_a_duplicate_name() -> None:
    from mswelu.modules.activations import register

    with pytest.raises(ValueError, match="already registered"):
        register(ACTIVATIONS["silu"])
