"""Mamba-1 mixer (selective SSM block) with configurable activations, in pure PyTorch.

Parameter names, shapes and initialisation follow mamba_ssm's ``Mamba`` (and transformers'
``MambaMixer``), so weights move between this CPU path, the CUDA kernels and other Mamba-1 code:

    in_proj.weight (2 d_inner, d_model)      conv1d.weight (d_inner, 1, d_conv), conv1d.bias
    x_proj.weight (dt_rank + 2 N, d_inner)   dt_proj.weight (d_inner, dt_rank), dt_proj.bias
    A_log (d_inner, N)   D (d_inner,)        out_proj.weight (d_model, d_inner)

The two activations Mamba-1 hard-codes as SiLU (after the causal conv, and on the gate z) are
modules passed in: ``act_conv`` and ``act_gate``. Their state-dict keys are ``act_conv.*`` and
``act_gate.*``; when one module object is passed for both (one shared k), both attributes point to
it, ``named_parameters()`` lists it once (under ``act_conv``) and ``state_dict()`` holds its
tensors under both prefixes (same storage), so the keys do not depend on the sharing choice.
The gate ``y * act_gate(z)`` runs inside the CPU scan kernel's pass where the activation registers a kernel
form and the epilogue is allowed (:func:`mswelu.ops.scan_cpu.gate_fits`: SWELU by default, with the same bits
as the two apart); otherwise the scan runs with ``z=None`` and the gate is applied afterwards. The part every
state-space mixer shares (settings checks, slots, decoding, the kernel-path dispatch) is
:class:`~mswelu.modules.ssm_mixer.SSMMixer`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.base.errors import check_choice
from mswelu.modules.activations import epilogue_of
from mswelu.modules.ssm_mixer import SSMMixer, softplus_inverse_dt
from mswelu.ops import mamba_kernels
from mswelu.ops.scan_cpu import gate_fits
from mswelu.ops.selective_scan import resolve_impl, selective_scan

__all__ = ["CONV_MODES", "MambaMixer"]

#: what Mamba-1's causal conv is (the controls of "Achilles' heel of Mamba", Chen et al. 2025): ``learned``
#: (Mamba's), ``ones`` (weights fixed to one and frozen), ``residual`` (``conv(x) + x``, before the
#: activation)
CONV_MODES = ("learned", "ones", "residual")


class MambaMixer(SSMMixer):
    """Mamba-1 mixer: (B, L, d_model) -> (B, L, d_model); see the module docstring for the layout."""

    kernels = mamba_kernels
    own_defaults = {"dt_rank": "auto", "conv_mode": "learned"}  # conv_mode: one of CONV_MODES

    def build(self, *, dt_rank: int | str, conv_mode: str) -> None:
        self.dt_rank = dt_rank = math.ceil(self.d_model / 16) if dt_rank == "auto" else dt_rank
        self.conv_mode = conv_mode
        if conv_mode == "ones":  # a fixed, order-blind sum of the last d_conv tokens (the bias still learns)
            self.conv1d.weight.data.fill_(1.0)
            self.conv1d.weight.requires_grad_(False)
        self.x_proj = nn.Linear(self.d_inner, dt_rank + 2 * self.d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, self.d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.dt_proj.bias._no_reinit = True

    @classmethod
    def input_widths(cls, *, d_model: int, expand: float, **_: Any) -> tuple[int, int]:
        d_inner = int(expand * d_model)
        return 2 * d_inner, d_inner  # in_proj: x, z

    @classmethod
    def check_settings(cls, *, dt_rank: int | str, conv_mode: str, **shared: Any) -> None:
        super().check_settings(**shared)
        check_choice("conv_mode", conv_mode, CONV_MODES)
        if dt_rank != "auto" and (not isinstance(dt_rank, int) or isinstance(dt_rank, bool) or dt_rank < 1):
            raise ValueError(f"dt_rank must be 'auto' or an integer >= 1, got {dt_rank!r}")

    @torch.no_grad()
    def reset_ssm_parameters(
        self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0
    ) -> None:
        """Mamba-1 init ("random" dt init): S4D-real A, D = 1, log-uniform dt through softplus^-1."""
        std = self.dt_rank**-0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        self.dt_proj.bias.copy_(softplus_inverse_dt(self.d_inner, dt_min, dt_max, dt_init_floor))
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log.copy_(torch.log(A))
        self.D.fill_(1.0)

    def _forward_torch(self, hidden_states: Tensor, want_states: bool = False) -> tuple[Any, Any, Any]:
        # x and z stay views of in_proj's (B, L, 2 d_inner) output; the gate is applied in (B, L, d_inner),
        # the layout the scan returns and out_proj reads. On a CPU the conv kernel reads x in that layout and
        # returns x_conv channels-last too, so the activation, x_proj and the scan take it without copies.
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x = x.transpose(1, 2)  # (B, d_inner, L)
        x_act = self._conv_act(x)
        x_dbl = self.x_proj(x_act.transpose(1, 2))  # (B, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, d_inner, L), bias added in the scan
        A = -torch.exp(self.A_log.float())
        B, C, z_t = B.transpose(1, 2), C.transpose(1, 2), z.transpose(1, 2)  # z_t: (B, d_inner, L), a view
        gate = epilogue_of(self.act_gate)
        fused = (
            gate is not None
            and resolve_impl("auto", x_act, B, C) == "cpu"
            and gate_fits(x_act, dt, z_t, gate)
        )
        res = selective_scan(
            x_act,
            dt,
            A,
            B,
            C,
            self.D.float(),
            z=z_t if fused else None,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=want_states,
            gate=gate if fused else None,
        )
        y, last_state = res if want_states else (res, None)
        out = self.out_proj(y.transpose(1, 2) if fused else y.transpose(1, 2) * self.act_gate(z))
        if not want_states:
            return out, None, None
        return out, self._conv_state(x), last_state.detach()

    def _step_torch(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        dtype = hidden_states.dtype
        x, z = self.in_proj(hidden_states.squeeze(1)).chunk(2, dim=-1)  # (B, d_inner) each
        x = self._conv_step(x, conv_state, dtype)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus((dt @ self.dt_proj.weight.t()).float() + self.dt_proj.bias.float())  # fp32
        A = -torch.exp(self.A_log.float())
        dA = torch.exp(dt[..., None] * A)
        dBx = (dt * x.float())[..., None] * B.float()[:, None, :]
        ssm_state.copy_(ssm_state * dA + dBx)
        y = (ssm_state @ C.float()[..., None]).squeeze(-1) + self.D.float() * x.float()
        y = y.to(dtype) * self.act_gate(z)
        return self.out_proj(y).unsqueeze(1)

    def _settings_repr(self) -> str:
        mode = f"conv_mode={self.conv_mode!r}, " if self.conv_mode != "learned" else ""
        return f"dt_rank={self.dt_rank}, {mode}"
