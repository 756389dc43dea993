"""The activations a model can put in its slots, by name (:data:`ACTIVATIONS`): the one table config, CLI,
model, kernel path, optimizer routing, logs and plots read (:mod:`.registry`).

Adding an activation is one file in this folder that calls :func:`register` (its module, shape parameters,
curve, effective values), imported below, plus its case in ``tests/test_activations.py``; ``swish`` was added
this way (``tests/test_activation_recipe.py`` does it inside a test). Its shape parameters' settings (initial
value, learnable, lr scale, sharing) then come from a model config's ``shape`` (:mod:`.settings`).
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
    epilogue_of,
    register,
    shape_param_names,
    shape_values,
    spec_of,
)
from mswelu.modules.activations.settings import (
    OLD_SHAPE_SETTINGS,
    SHARING,
    ShapeSetting,
    activation_pair,
    apply_slot_inits,
    make_activation,
    migrate_shape_settings,
    resolve_shape,
    shape_parameters,
)

__all__ = [
    "ACTIVATIONS",
    "TRANSCENDENTAL_FLOPS",
    "OLD_SHAPE_SETTINGS",
    "SHARING",
    "Activation",
    "ActivationFlops",
    "ShapeParam",
    "activation_flops",
    "ShapeSetting",
    "activation_pair",
    "apply_slot_inits",
    "curve",
    "effective_shape",
    "epilogue_of",
    "make_activation",
    "migrate_shape_settings",
    "register",
    "resolve_shape",
    "shape_param_names",
    "shape_parameters",
    "shape_values",
    "spec_of",
]
