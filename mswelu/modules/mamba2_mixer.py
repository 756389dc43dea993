"""Mamba-2 mixer (SSD block) with configurable activations, in pure PyTorch.

Parameter names, shapes and initialisation follow mamba-ssm's ``Mamba2`` and transformers' ``Mamba2Mixer``,
so weights move between this CPU path, the GPU kernels and other Mamba-2 code
(d_inner = expand * d_model, nheads = d_inner / headdim, conv_dim = d_inner + 2 n_groups N):

    in_proj.weight (d_inner + conv_dim + nheads, d_model): [z, xBC = (x, B, C), dt]
    conv1d.weight (conv_dim, 1, d_conv), conv1d.bias    dt_bias, A_log, D (nheads,)
    norm.weight (d_inner,)                              out_proj.weight (d_model, d_inner)

    xBC <- act_conv(conv1d(xBC))                 x (b, l, nheads, headdim); B, C (b, l, n_groups, N)
    y    = SSD(x, dt, A = -exp(A_log), B, C) + D x    dt = clamp(softplus(dt + dt_bias), *dt_limit)
    out  = out_proj(norm.weight * rmsnorm_groups(y * act_gate(z)))      groups of d_inner / n_groups

The two activations Mamba-2 hard-codes as SiLU are modules passed in, as for Mamba-1
(:class:`mswelu.modules.mamba_mixer.MambaMixer`; the shared part of both is
:class:`~mswelu.modules.ssm_mixer.SSMMixer`): ``act_conv`` after the causal conv, on x, B and C together
(so an activation bounded to (-1, 1), like SWELU, bounds B and C too), and ``act_gate`` on the gate z inside
the gated norm. Their state-dict keys are ``act_conv.*`` and ``act_gate.*``; when one module object is
passed for both (one shared k), both attributes point to it, ``named_parameters()`` lists it once (under
``act_conv``) and ``state_dict()`` holds its tensors under both prefixes (same storage), so the keys do not
depend on the sharing choice.

On a CPU the SSD runs as :func:`mswelu.ops.ssd.ssd_chunk_scan` at its own chunk size (the result does not
depend on it); ``chunk_size`` is the GPU kernel's (and transformers') setting, kept for interchange.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mswelu.modules.gated_rms_norm import GatedRMSNorm
from mswelu.modules.ssm_mixer import SSMMixer, check_positive_ints, softplus_inverse_dt
from mswelu.ops import mamba2_kernels
from mswelu.ops.ssd import discretize_dt, ssd_chunk_scan

__all__ = ["Mamba2Mixer"]


class Mamba2Mixer(SSMMixer):
    """Mamba-2 mixer: (B, L, d_model) -> (B, L, d_model); see the module docstring for the layout."""

    kernels = mamba2_kernels
    d_state_default = 128
    own_defaults = {
        "headdim": 64,
        "n_groups": 1,
        "chunk_size": 256,
        "dt_limit": (0.0, math.inf),
        "norm_eps": 1e-5,
    }

    def build(
        self, *, headdim: int, n_groups: int, chunk_size: int, dt_limit: tuple[float, float], norm_eps: float
    ) -> None:
        d_inner = self.d_inner
        self.headdim = headdim
        self.nheads = nheads = d_inner // headdim
        self.n_groups = n_groups
        self.chunk_size = chunk_size
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        self.conv_dim = d_inner + 2 * n_groups * self.d_state
        self._xbc_sizes = [d_inner, n_groups * self.d_state, n_groups * self.d_state]  # x, B, C within xBC
        self.dt_bias = nn.Parameter(torch.empty(nheads))
        self.A_log = nn.Parameter(torch.empty(nheads))
        self.D = nn.Parameter(torch.empty(nheads))
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // n_groups, eps=norm_eps)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True

    @classmethod
    def input_widths(
        cls, *, d_model: int, d_state: int, expand: float, headdim: int, n_groups: int, **_: Any
    ) -> tuple[int, int]:
        d_inner = int(expand * d_model)
        conv_dim = d_inner + 2 * n_groups * d_state  # x, B, C
        return d_inner + conv_dim + d_inner // headdim, conv_dim  # in_proj: z, xBC, dt

    @classmethod
    def check_settings(
        cls,
        *,
        headdim: int,
        n_groups: int,
        chunk_size: int,
        dt_limit: tuple[float, float],
        norm_eps: float,
        **shared: Any,
    ) -> None:
        super().check_settings(**shared)
        check_positive_ints(headdim=headdim, n_groups=n_groups, chunk_size=chunk_size)
        d_inner = int(shared["expand"] * shared["d_model"])
        if d_inner % headdim != 0:
            raise ValueError(f"headdim ({headdim}) must divide d_inner = expand * d_model = {d_inner}")
        nheads = d_inner // headdim
        if nheads % n_groups != 0:
            raise ValueError(f"n_groups ({n_groups}) must divide nheads = d_inner / headdim = {nheads}")
        if len(dt_limit) != 2 or not 0 <= dt_limit[0] < dt_limit[1]:
            raise ValueError(f"dt_limit must be (low, high) with 0 <= low < high, got {dt_limit!r}")
        if not norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {norm_eps!r}")

    @torch.no_grad()
    def reset_ssm_parameters(
        self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4
    ) -> None:
        """Mamba-2 init as transformers does it: A = 1..nheads, D = 1, dt log-uniform in [dt_min, dt_max]
        (floored), stored through softplus^-1 in ``dt_bias``. (mamba-ssm draws A uniformly in [1, 16].)"""
        self.dt_bias.copy_(softplus_inverse_dt(self.nheads, dt_min, dt_max, dt_init_floor))
        self.A_log.copy_(torch.log(torch.arange(1, self.nheads + 1, dtype=torch.float32)))
        self.D.fill_(1.0)

    def _forward_torch(self, hidden_states: Tensor, want_states: bool = False) -> tuple[Any, Any, Any]:
        # z, xBC and dt stay views of in_proj's (B, L, .) output. On a CPU the conv kernel reads xBC in that
        # layout and returns it channels-last, as the activation and the SSD read it (no transposing copy).
        z, xBC, dt = torch.split(
            self.in_proj(hidden_states), [self.d_inner, self.conv_dim, self.nheads], dim=-1
        )
        xBC = xBC.transpose(1, 2)  # (B, conv_dim, L)
        xBC_act = self._conv_act(xBC).transpose(1, 2)  # (B, L, conv_dim)
        x, B, C = torch.split(xBC_act, self._xbc_sizes, dim=-1)
        res = ssd_chunk_scan(
            x.unflatten(-1, (self.nheads, self.headdim)),
            dt,
            -torch.exp(self.A_log.float()),
            B.unflatten(-1, (self.n_groups, self.d_state)),
            C.unflatten(-1, (self.n_groups, self.d_state)),
            D=self.D,
            dt_bias=self.dt_bias,
            dt_softplus=True,
            dt_limit=self.dt_limit,
            return_final_states=want_states,
        )
        y, last_state = res if want_states else (res, None)
        out = self.out_proj(self.norm(y.flatten(-2), z, self.act_gate))
        if not want_states:
            return out, None, None
        return out, self._conv_state(xBC), last_state.detach().float()

    def _step_torch(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        batch = hidden_states.shape[0]
        z, xBC, dt = torch.split(
            self.in_proj(hidden_states.squeeze(1)), [self.d_inner, self.conv_dim, self.nheads], dim=-1
        )
        xBC = self._conv_step(xBC, conv_state, hidden_states.dtype)
        x, B, C = torch.split(xBC, self._xbc_sizes, dim=-1)
        x = x.float().view(batch, self.nheads, self.headdim)
        heads_per_group = self.nheads // self.n_groups
        B = B.float().view(batch, self.n_groups, self.d_state).repeat_interleave(heads_per_group, dim=1)
        C = C.float().view(batch, self.n_groups, self.d_state).repeat_interleave(heads_per_group, dim=1)
        dt = discretize_dt(dt, self.dt_bias, True, self.dt_limit)  # (B, nheads) fp32
        decay = torch.exp(dt * -torch.exp(self.A_log.float()))
        ssm_state.mul_(decay[..., None, None]).add_((dt[..., None] * x)[..., None] * B[:, :, None, :])
        y = (ssm_state @ C[..., None]).squeeze(-1) + self.D.float()[:, None] * x  # (B, nheads, headdim)
        y = y.to(xBC.dtype).view(batch, self.d_inner)
        return self.out_proj(self.norm(y, z, self.act_gate)).unsqueeze(1)

    def _settings_repr(self) -> str:
        return (
            f"nheads={self.nheads}, headdim={self.headdim}, n_groups={self.n_groups}, "
            f"chunk_size={self.chunk_size}, dt_limit={self.dt_limit}, "
        )
