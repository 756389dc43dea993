"""How hard the loss pulls on each activation shape parameter: |dL/d(value)| per slot from one backward pass.

Gradients are taken with respect to the *effective* values (SWELU's k, Swish's beta), not the raw parameters
the optimizer sees (``k_raw``): the chain rule through each activation's own parametrisation is undone, so
the figures compare across parametrisations and with finite differences on the value itself.
"""

from __future__ import annotations

from typing import Any

import torch

from mswelu.models.build import lm_loss
from mswelu.modules.activations import effective_shape
from mswelu.ops.lm_loss import split_window

__all__ = ["shape_gradients"]


def shape_gradients(model: Any, input_ids: torch.Tensor) -> dict[str, dict[str, float]]:
    """``{slot: {param: |dL/dparam|}}`` for every learnable shape parameter of ``model`` (one of ours: it has
    ``shape_slots()``), from one forward/backward on ``input_ids`` (B, L+1) with the trainer's loss. The
    model's ``.grad`` fields are left untouched; it is evaluated in eval mode."""
    slots = [s for s in model.shape_slots() if s.learnable]
    if not slots:
        return {}
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # each learnable value with the raw parameter it is a function of, and d(value)/d(raw)
            links = []
            for s in slots:
                params = [p for p in s.module.parameters() if p.requires_grad]
                for name, value in effective_shape(s.module).items():
                    if name not in s.learnable:
                        continue
                    dv = torch.autograd.grad(value, params, allow_unused=True)
                    (raw, dvdr), *_ = [(p, d) for p, d in zip(params, dv, strict=True) if d is not None]
                    links.append((s.name, name, raw, float(dvdr)))
            x, y = split_window(input_ids)
            loss = lm_loss(model, x, y)
            raws = list({id(r): r for _, _, r, _ in links}.values())
            grads = dict(zip(map(id, raws), torch.autograd.grad(loss, raws, allow_unused=True), strict=True))
        out: dict[str, dict[str, float]] = {}
        for slot, name, raw, dvdr in links:
            g = grads[id(raw)]
            out.setdefault(slot, {})[name] = 0.0 if g is None else abs(float(g)) / max(abs(dvdr), 1e-12)
        return out
    finally:
        model.train(was_training)
