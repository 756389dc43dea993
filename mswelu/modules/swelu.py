"""SWELU as a layer with a learnable exponent ``k`` (and optionally a learnable scale ``lambda``).

Parameterisation (the optimiser sees the *raw* parameters, reports show the effective values):

* ``k = K_MIN + softplus(k_raw)``. ``k`` must stay positive: at ``k <= 0`` the activation is
  constant (``|z|^0 = 1``) or blows up. softplus keeps every ``k_raw`` in R valid with a smooth,
  never-zero gradient, and the floor ``K_MIN = 0.05`` keeps ``k`` away from 0, where the function
  degenerates into a step and its gradients become huge. ``k_raw`` is initialised to the inverse
  softplus of ``k_init - K_MIN`` (nudged by an ulp if needed) so that the effective ``k`` equals
  ``k_init`` exactly in fp32 (for the default 1.0 and most values; otherwise within one ulp).
  Near ``k = 1`` ``dk/dk_raw = sigmoid(k_raw) ~ 0.61``: the optimiser's step on ``k_raw`` is a
  slightly damped step on ``k``.
* ``lam = softplus(lambda_raw)`` when lambda is learnable (positive, init ``lambda_init``);
  otherwise ``lam`` is the constant ``lambda_init`` (no parameter).
* ``k_raw`` and ``lambda_raw`` are 0-dim; they need no weight decay (decay would drag ``k`` toward
  ``K_MIN + log 2``) and belong in their own optimiser group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mswelu.base.errors import unknown_choice
from mswelu.ops.swelu import IMPLS, swelu

K_MIN = 0.05


def _inverse_softplus(y: float) -> float:
    """``x`` with ``softplus(x) = y`` (y > 0), i.e. ``log(expm1(y))``, stable for small and large y."""
    return y + math.log(-math.expm1(-y))


def _raw_for(value: float, offset: float) -> torch.Tensor:
    """fp32 ``raw`` whose ``offset + softplus(raw)`` is nearest to ``float32(value)`` (usually equal).

    The inverse softplus rounded to fp32 can miss by an ulp; the few neighbouring fp32 values are
    tried and the best kept. Not every value is reachable (e.g. 3.0 is not), 1.0 and most are.
    Computed on the CPU, so it works inside a ``torch.device("meta")`` context too.
    """
    cpu = torch.device("cpu")
    target = torch.tensor(value, dtype=torch.float32, device=cpu)
    start = torch.tensor(_inverse_softplus(value - offset), dtype=torch.float32, device=cpu)
    best, best_err = start, math.inf
    for direction in (math.inf, -math.inf):
        raw = start
        for _ in range(16):
            err = abs((offset + F.softplus(raw) - target).item())
            if err < best_err:
                best, best_err = raw, err
            if err == 0:
                return best
            raw = torch.nextafter(raw, torch.tensor(direction, device=cpu))
    return best


def _param_device() -> torch.device:
    """The default device, except meta: k must hold real values even when a model is built on meta
    (``from_pretrained``), since checkpoints converted from other Mamba code carry no ``k_raw``."""
    device = torch.empty(0).device
    return torch.device("cpu") if device.type == "meta" else device


class SWELU(nn.Module):
    """``lam * sign(z) * (1 - exp(-|z|^k))`` with ``k = K_MIN + softplus(k_raw)`` (see module doc).

    Args:
        k_init: initial effective k (> ``k_min``); 1.0 by default.
        learnable_k: False freezes k (``k_raw`` stays a parameter with ``requires_grad=False`` so
            checkpoints have the same keys and the value is still reported).
        learnable_lambda: add a learnable output scale ``lam = softplus(lambda_raw)``.
        lambda_init: initial (or, if not learnable, fixed) scale.
        k_min: floor of k.
        impl: SWELU implementation, see :func:`mswelu.ops.swelu.swelu`.
    """

    def __init__(
        self,
        k_init: float = 1.0,
        learnable_k: bool = True,
        learnable_lambda: bool = False,
        lambda_init: float = 1.0,
        *,
        k_min: float = K_MIN,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        if not (math.isfinite(k_min) and k_min >= 0):
            raise ValueError(f"SWELU: k_min must be a finite number >= 0, got {k_min}")
        if not (math.isfinite(k_init) and k_init > k_min):
            raise ValueError(f"SWELU: k_init must be finite and > k_min={k_min}, got {k_init}")
        if not (math.isfinite(lambda_init) and lambda_init > 0):
            raise ValueError(f"SWELU: lambda_init must be finite and > 0, got {lambda_init}")
        if impl not in IMPLS:
            raise ValueError(f"SWELU: {unknown_choice('impl', impl, IMPLS)}")
        self.k_min = float(k_min)
        self.learnable_lambda = bool(learnable_lambda)
        self.lambda_init = float(lambda_init)
        self.impl = impl
        device = _param_device()
        self.k_raw = nn.Parameter(_raw_for(k_init, self.k_min).to(device), requires_grad=learnable_k)
        if learnable_lambda:
            self.lambda_raw = nn.Parameter(_raw_for(lambda_init, 0.0).to(device))

    @property
    def learnable_k(self) -> bool:
        return self.k_raw.requires_grad

    @property
    def k(self) -> torch.Tensor:
        """Effective exponent (0-dim tensor, differentiable w.r.t. ``k_raw``)."""
        return self.k_min + F.softplus(self.k_raw)

    @property
    def lam(self) -> torch.Tensor:
        """Effective scale (0-dim tensor; a constant when lambda is not learnable)."""
        if self.learnable_lambda:
            return F.softplus(self.lambda_raw)
        return torch.tensor(self.lambda_init, dtype=self.k_raw.dtype, device=self.k_raw.device)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.learnable_lambda:
            lam = self.lam
        else:
            lam = None if self.lambda_init == 1.0 else self.lambda_init
        return swelu(z, self.k, lam, impl=self.impl)

    def extra_repr(self) -> str:
        with torch.no_grad():
            k, lam = float(self.k), float(self.lam)
        parts = [f"k={k:.4g}", f"learnable_k={self.learnable_k}"]
        if self.learnable_lambda or self.lambda_init != 1.0:
            parts += [f"lambda={lam:.4g}", f"learnable_lambda={self.learnable_lambda}"]
        parts.append(f"k_min={self.k_min:g}")
        if self.impl != "auto":
            parts.append(f"impl={self.impl!r}")
        return ", ".join(parts)
