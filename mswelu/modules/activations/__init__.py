"""The activations a model can put in its slots, by name (:data:`ACTIVATIONS`): the one table config, CLI,
model, kernel path, optimizer routing, logs and plots read (:mod:`.registry`).

Adding an activation is one file in this folder that calls :func:`register` (its module, shape parameters,
curve, effective values), imported below, plus its case in ``tests/test_activations.py``; ``swish`` was added
this way.
"""

from mswelu.modules.activations import pointwise, swelu, swish  # noqa: F401  (they register themselves)
from mswelu.modules.activations.registry import (
    ACTIVATIONS,
    TRANSCENDENTAL_FLOPS,
    Activation,
    ActivationFlops,
    ShapeParam,
    activation_flops,
    curve,
    effective_shape,
    make_activation,
    register,
    shape_param_names,
    shape_parameters,
    shape_values,
    spec_of,
)

__all__ = [
    "ACTIVATIONS",
    "TRANSCENDENTAL_FLOPS",
    "Activation",
    "ActivationFlops",
    "ShapeParam",
    "activation_flops",
    "curve",
    "effective_shape",
    "make_activation",
    "register",
    "shape_param_names",
    "shape_parameters",
    "shape_values",
    "spec_of",
]
