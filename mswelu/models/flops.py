"""Model FLOPs per token: the work a model's forward pass needs, counted from its config, for comparisons at
equal compute (:mod:`mswelu.analysis.curves`) and for MFU.

Convention (the one MFU figures use, made explicit, with the activations added): 2 FLOPs per multiply-add of
every matmul (projections, the dense stack, the LM head, attention's scores and weighted sum), plus the work a
mixer does per element of its state (Mamba-1's selective scan: 8 per channel and state), plus every
activation's work per element as its spec declares it (:class:`~mswelu.modules.activations.ActivationFlops`:
1 FLOP per add, multiply, divide, compare, abs or sign; ``TRANSCENDENTAL_FLOPS`` = 10 per exp, expm1, log, pow
or erf), so that SWELU's pow and expm1 and its k-gradient, SiLU's sigmoid and Swish-beta's beta count. Other
elementwise work (norms, residual adds, the gate product, the softmax) is not counted. A causal attention
query at position t attends t + 1 keys: (seq_len + 1) / 2 on average. Training is 3x the matmuls (the
backward's two matmuls per forward matmul) plus each activation's forward, backward and the gradients of its
learnable shape parameters.

Each part declares its own count: a mixer's block class ``flops_per_token(config, seq_len)`` (``{"forward",
"training"}``, beside its ``parameter_count``; :class:`~mswelu.modules.mixers.ssm_block.SSMBlock` subclasses
declare their own part, ``own_flops_per_token``), a baseline family's module ``flops_per_token(config,
seq_len)`` (matmuls only: training is 3x). A new mixer that declares none gets a clear error here, not a
silent zero.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mswelu.models.baselines import BASELINES
from mswelu.models.build import unwrap
from mswelu.models.configuration import MsweluConfig
from mswelu.modules.mixers import mixer_spec
from mswelu.modules.mixers.common import TRAINING_FACTOR, block_flops

__all__ = ["TRAINING_FACTOR", "config_flops", "model_flops_per_token"]

#: a baseline family by the ``model_type`` of its transformers config
_FAMILY = {"gpt2": "gpt2", "gpt_neox": "pythia"}


def config_flops(config: MsweluConfig, seq_len: int) -> dict[str, float]:
    """FLOPs per token of one of our models, by part: ``mixers`` (every block, forward), ``dense`` (the dense
    stack with its three activations, forward), ``head``, and ``forward`` / ``training`` in all."""
    parts = []
    for name in config.layer_mixers():
        count = getattr(mixer_spec(name).block, "flops_per_token", None)
        try:
            parts.append(count(config, seq_len) if count is not None else None)
        except NotImplementedError:
            parts.append(None)
        if parts[-1] is None:
            raise ValueError(
                f"mixer {name!r} declares no FLOPs per token: give its block flops_per_token(config, "
                "seq_len) (an SSMBlock subclass: own_flops_per_token)"
            )
    d = config.d_model
    h = tuple(config.dense_sizes)
    dense = block_flops(config, 2.0 * (d * h[0] + h[0] * h[1] + h[1] * d), h[0] + h[1] + d) if h else None
    head = 2.0 * d * config.vocab_size
    mixers = sum(p["forward"] for p in parts)
    forward = mixers + (dense["forward"] if dense else 0.0) + head
    training = (
        sum(p["training"] for p in parts) + (dense["training"] if dense else 0.0) + TRAINING_FACTOR * head
    )
    return {
        "mixers": mixers,
        "dense": dense["forward"] if dense else 0.0,
        "head": head,
        "forward": forward,
        "training": training,
    }


def model_flops_per_token(model: nn.Module, seq_len: int) -> dict[str, float]:
    """Forward and training FLOPs per token of a built model (ours, or a baseline family's: dispatched on
    its config's ``model_type``; a model on the ``meta`` device will do)."""
    bare = unwrap(model)
    config: Any = getattr(bare, "config", None)
    if isinstance(config, MsweluConfig):
        return config_flops(config, seq_len)
    family = _FAMILY.get(getattr(config, "model_type", None))
    if family is None or family not in BASELINES:
        raise ValueError(f"no FLOPs count for a {type(bare).__name__}: add flops_per_token to its family")
    forward = float(BASELINES[family].flops_per_token(config, seq_len))
    return {"forward": forward, "training": TRAINING_FACTOR * forward}
