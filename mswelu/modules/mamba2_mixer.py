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
(:class:`mswelu.modules.mamba_mixer.MambaMixer`): ``act_conv`` after the causal conv, on x, B and C together
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
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.modules.gated_rms_norm import GatedRMSNorm
from mswelu.modules.mixer_slots import InMixerActivations
from mswelu.ops import mamba2_kernels
from mswelu.ops.backends import resolve_backend
from mswelu.ops.causal_conv import causal_conv1d
from mswelu.ops.mamba2_kernels import Mamba2Weights
from mswelu.ops.ssd import discretize_dt, ssd_chunk_scan

__all__ = ["Mamba2Mixer"]


class Mamba2Mixer(InMixerActivations, nn.Module):
    """Mamba-2 mixer: (B, L, d_model) -> (B, L, d_model); see the module docstring for the layout."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        n_groups: int = 1,
        chunk_size: int = 256,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        dt_limit: tuple[float, float] = (0.0, math.inf),
        conv_bias: bool = True,
        bias: bool = False,
        norm_eps: float = 1e-5,
        act_conv: nn.Module | None = None,
        act_gate: nn.Module | None = None,
        backend: str = "auto",
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("d_model", d_model),
            ("d_state", d_state),
            ("d_conv", d_conv),
            ("headdim", headdim),
            ("n_groups", n_groups),
            ("chunk_size", chunk_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(expand, (int, float)) and expand > 0) or int(expand * d_model) < 1:
            raise ValueError(f"expand must be > 0 (d_inner = expand * d_model >= 1), got {expand!r}")
        d_inner = int(expand * d_model)
        if d_inner % headdim != 0:
            raise ValueError(f"headdim ({headdim}) must divide d_inner = expand * d_model = {d_inner}")
        nheads = d_inner // headdim
        if nheads % n_groups != 0:
            raise ValueError(f"n_groups ({n_groups}) must divide nheads = d_inner / headdim = {nheads}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init_floor < 0:
            raise ValueError(f"dt_init_floor must be >= 0, got {dt_init_floor}")
        if len(dt_limit) != 2 or not 0 <= dt_limit[0] < dt_limit[1]:
            raise ValueError(f"dt_limit must be (low, high) with 0 <= low < high, got {dt_limit!r}")
        if not norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {norm_eps!r}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = d_inner
        self.headdim = headdim
        self.nheads = nheads
        self.n_groups = n_groups
        self.chunk_size = chunk_size
        self.dt_limit = (float(dt_limit[0]), float(dt_limit[1]))
        self.conv_dim = d_inner + 2 * n_groups * d_state
        self._xbc_sizes = [d_inner, n_groups * d_state, n_groups * d_state]  # x, B, C within xBC
        self.backend = backend
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, d_inner + self.conv_dim + nheads, bias=bias)
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            kernel_size=d_conv,
            groups=self.conv_dim,
            padding=d_conv - 1,
            bias=conv_bias,
        )
        self.act_conv = act_conv if act_conv is not None else nn.SiLU()
        self.act_gate = act_gate if act_gate is not None else nn.SiLU()
        self.dt_bias = nn.Parameter(torch.empty(nheads))
        self.A_log = nn.Parameter(torch.empty(nheads))
        self.D = nn.Parameter(torch.empty(nheads))
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // n_groups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)
        for p in (self.dt_bias, self.A_log, self.D):
            p._no_weight_decay = True
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(
        self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4
    ) -> None:
        """Mamba-2 init as transformers does it: A = 1..nheads, D = 1, dt log-uniform in [dt_min, dt_max]
        (floored), stored through softplus^-1 in ``dt_bias``. (mamba-ssm draws A uniformly in [1, 16].)"""
        dt = torch.exp(
            torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) == dt
        self.A_log.copy_(torch.log(torch.arange(1, self.nheads + 1, dtype=torch.float32)))
        self.D.fill_(1.0)

    # ------------------------------------------------------------------ full sequence
    def forward(self, hidden_states: Tensor, inference_params: Any = None) -> Tensor:
        """(B, L, d_model) -> (B, L, d_model).

        ``inference_params`` follows mamba_ssm: an object with ``key_value_memory_dict`` (dict) and
        ``seqlen_offset``; states are kept under ``layer_idx``. None means a plain forward.
        """
        self._check_input(hidden_states)
        if inference_params is not None:
            return self._forward_cached(hidden_states, inference_params)
        if resolve_backend(self.backend, hidden_states, mamba2_kernels.kernels_available) == "cuda":
            return self.forward_cuda(hidden_states)
        return self._forward_torch(hidden_states)[0]

    def forward_with_states(self, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prefill: (out, conv_state (B, conv_dim, d_conv), ssm_state (B, nheads, headdim, N) fp32) after the
        end. The states continue exactly where :meth:`step` would have left them after the same tokens."""
        self._check_input(hidden_states)
        if resolve_backend(self.backend, hidden_states, mamba2_kernels.kernels_available) == "cuda":
            return self.forward_cuda(hidden_states, return_states=True)
        return self._forward_torch(hidden_states, want_states=True)

    def _forward_torch(self, hidden_states: Tensor, want_states: bool = False):
        batch, seqlen, _ = hidden_states.shape
        # z, xBC and dt stay views of in_proj's (B, L, .) output. On a CPU the conv kernel reads xBC in that
        # layout and returns it channels-last, as the activation and the SSD read it (no transposing copy).
        z, xBC, dt = torch.split(
            self.in_proj(hidden_states), [self.d_inner, self.conv_dim, self.nheads], dim=-1
        )
        xBC = xBC.transpose(1, 2)  # (B, conv_dim, L)
        x_conv = causal_conv1d(xBC, self.conv1d.weight.squeeze(1), self.conv1d.bias)
        xBC_act = self.act_conv(x_conv.transpose(1, 2))  # (B, L, conv_dim), elementwise
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
        conv_state = F.pad(xBC, (self.d_conv - seqlen, 0))  # last d_conv inputs, zero-padded on the left
        return out, conv_state.detach().clone(), last_state.detach().float()

    # ------------------------------------------------------------------ decoding
    def allocate_inference_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Zero states for :meth:`step`: conv (B, conv_dim, d_conv) in ``dtype``, ssm (B, nheads, headdim, N)
        in fp32."""
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype if dtype is not None else self.conv1d.weight.dtype
        conv_state = torch.zeros(batch_size, self.conv_dim, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(
            batch_size, self.nheads, self.headdim, self.d_state, device=device, dtype=torch.float32
        )
        return conv_state, ssm_state

    def step(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One token: (B, 1, d_model) -> (B, 1, d_model); updates ``conv_state``, ``ssm_state`` in place."""
        self._check_input(hidden_states)
        if hidden_states.shape[1] != 1:
            raise ValueError(f"step takes one token at a time, got length {hidden_states.shape[1]}")
        if resolve_backend(self.backend, hidden_states, mamba2_kernels.kernels_available) == "cuda":
            return self.step_cuda(hidden_states, conv_state, ssm_state)
        dtype = hidden_states.dtype
        batch = hidden_states.shape[0]
        z, xBC, dt = torch.split(
            self.in_proj(hidden_states.squeeze(1)), [self.d_inner, self.conv_dim, self.nheads], dim=-1
        )
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = xBC.to(conv_state.dtype)
        xBC = (conv_state * self.conv1d.weight.squeeze(1).to(conv_state.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            xBC = xBC + self.conv1d.bias.to(xBC.dtype)
        xBC = self.act_conv(xBC.to(dtype))
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

    def _forward_cached(self, hidden_states: Tensor, inference_params: Any) -> Tensor:
        cache = inference_params.key_value_memory_dict
        if inference_params.seqlen_offset > 0 and self.layer_idx in cache:
            if hidden_states.shape[1] != 1:
                raise ValueError("with seqlen_offset > 0, feed one token at a time")
            conv_state, ssm_state = cache[self.layer_idx]
            return self.step(hidden_states, conv_state, ssm_state)
        out, conv_state, ssm_state = self.forward_with_states(hidden_states)
        cache[self.layer_idx] = (conv_state, ssm_state)
        return out

    # ------------------------------------------------------------------ GPU kernel path
    def weights(self) -> Mamba2Weights:
        """This mixer's tensors and settings, as :mod:`mswelu.ops.mamba2_kernels` takes them."""
        return Mamba2Weights(
            self.in_proj.weight,
            self.in_proj.bias,
            self.conv1d.weight,
            self.conv1d.bias,
            self.dt_bias,
            self.A_log,
            self.D,
            self.norm.weight,
            self.out_proj.weight,
            self.out_proj.bias,
            n_groups=self.n_groups,
            chunk_size=self.chunk_size,
            dt_limit=self.dt_limit,
            norm_eps=self.norm.eps,
        )

    def _kernel_acts(self, fuse_silu: bool) -> tuple[Any, Any]:
        """The two activations for the kernel path: ``"silu"`` (the kernels' fused SiLU) for an ``nn.SiLU``
        when ``fuse_silu``, else the module; only registered elementwise activations pass."""
        from mswelu.modules.activations import spec_of

        acts = []
        for slot in ("act_conv", "act_gate"):
            act = getattr(self, slot)
            spec = spec_of(act)
            if spec is None or not spec.elementwise:
                raise ValueError(
                    f"the GPU kernel path supports only elementwise activations of mswelu.ACTIVATIONS, but "
                    f"mixer.{slot} is {type(act).__name__}; use backend='torch' for others"
                )
            acts.append("silu" if fuse_silu and type(act) is nn.SiLU else act)
        return acts[0], acts[1]

    def forward_cuda(self, hidden_states: Tensor, fuse_silu: bool = True, return_states: bool = False) -> Any:
        """The forward (or, with ``return_states``, the prefill) on the GPU kernels; ``fuse_silu=False``
        runs SiLU as a separate module (tests check both routes)."""
        act_conv, act_gate = self._kernel_acts(fuse_silu)
        return mamba2_kernels.mamba2_mixer_fn(
            hidden_states, self.weights(), act_conv, act_gate, return_states
        )

    def step_cuda(
        self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor, fuse_silu: bool = True
    ) -> Tensor:
        """One decoding step on the GPU kernels; updates both states in place."""
        act_conv, act_gate = self._kernel_acts(fuse_silu)
        return mamba2_kernels.mamba2_step_fn(
            hidden_states, conv_state, ssm_state, self.weights(), act_conv, act_gate
        )

    # ------------------------------------------------------------------ helpers
    def _check_input(self, hidden_states: Tensor) -> None:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"hidden_states must be (batch, length, d_model={self.d_model}), "
                f"got {tuple(hidden_states.shape)}"
            )
        if hidden_states.shape[1] < 1:
            raise ValueError("hidden_states must hold at least one token")

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
            f"nheads={self.nheads}, headdim={self.headdim}, n_groups={self.n_groups}, "
            f"chunk_size={self.chunk_size}, dt_limit={self.dt_limit}, "
            f"shared_act={self.act_conv is self.act_gate}, backend={self.backend!r}"
        )
