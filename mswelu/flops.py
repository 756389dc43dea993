"""Model FLOPs per token: the work a model's forward pass needs, counted from its config, for comparisons at
equal compute (:mod:`mswelu.analysis.curves`) and for MFU.

Convention (the one MFU figures use, made explicit): 2 FLOPs per multiply-add of every matmul (projections,
the dense stack, the LM head, attention's scores and weighted sum), plus the work a mixer does per element of
its state (Mamba-1's selective scan: 8 per channel and state); elementwise work (norms, activations, residual
adds, the gate, the softmax) is not counted, since it is memory-bound and small in FLOPs. A causal attention
query at position t attends t + 1 keys: (seq_len + 1) / 2 on average. Training is 3x the forward (the
backward's two matmuls per forward matmul); the gradients of shape parameters are elementwise.

Each part declares its own count: a mixer's block class ``flops_per_token(config, seq_len)`` (beside its
``parameter_count``; :class:`~mswelu.modules.mixers.ssm_block.SSMBlock` subclasses implement
``mixer_flops_per_token``), a baseline family's module ``flops_per_token(config, seq_len)``. A new mixer that
declares none gets a clear error here, not a silent zero.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mswelu.baselines import BASELINES
from mswelu.configuration import MambaSWELUConfig
from mswelu.models import unwrap
from mswelu.modules.mixers import mixer_spec

__all__ = ["TRAINING_FACTOR", "config_flops", "model_flops_per_token"]

#: training FLOPs per forward FLOP (forward + backward of every matmul)
TRAINING_FACTOR = 3.0
#: a baseline family by the ``model_type`` of its transformers config
_FAMILY = {"gpt2": "gpt2", "gpt_neox": "pythia"}


def config_flops(config: MambaSWELUConfig, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token of one of our models, by part: ``mixers`` (every block), ``dense``, ``head``,
    and ``forward`` / ``training`` (3x) in all."""
    mixers = 0.0
    for name in config.layer_mixers():
        block = mixer_spec(name).block
        count = getattr(block, "flops_per_token", None)
        try:
            value = float(count(config, seq_len)) if count is not None else None
        except NotImplementedError:
            value = None
        if value is None:
            raise ValueError(
                f"mixer {name!r} declares no FLOPs per token: give its block flops_per_token(config, "
                "seq_len) (an SSMBlock subclass: mixer_flops_per_token)"
            )
        mixers += value
    d = config.d_model
    h = tuple(config.dense_sizes)
    dense = 2.0 * (d * h[0] + h[0] * h[1] + h[1] * d) if h else 0.0
    head = 2.0 * d * config.vocab_size
    forward = mixers + dense + head
    return {
        "mixers": mixers,
        "dense": dense,
        "head": head,
        "forward": forward,
        "training": TRAINING_FACTOR * forward,
    }


def model_flops_per_token(model: nn.Module, seq_len: int) -> dict[str, float]:
    """Forward and training FLOPs per token of a built model (ours, or a baseline family's: dispatched on
    its config's ``model_type``; a model on the ``meta`` device will do)."""
    bare = unwrap(model)
    config: Any = getattr(bare, "config", None)
    if isinstance(config, MambaSWELUConfig):
        return config_flops(config, seq_len)
    family = _FAMILY.get(getattr(config, "model_type", None))
    if family is None or family not in BASELINES:
        raise ValueError(f"no FLOPs count for a {type(bare).__name__}: add flops_per_token to its family")
    forward = float(BASELINES[family].flops_per_token(config, seq_len))
    return {"forward": forward, "training": TRAINING_FACTOR * forward}
