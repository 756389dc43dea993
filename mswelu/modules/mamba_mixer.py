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
Because a custom gate activation cannot go through the scan's built-in SiLU gate, the scan always
runs with ``z=None`` and the gate is applied afterwards: ``y * act_gate(z)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.errors import check_choice
from mswelu.modules.mixer_slots import InMixerActivations
from mswelu.ops import mamba_kernels
from mswelu.ops.backends import resolve_backend
from mswelu.ops.causal_conv import causal_conv1d
from mswelu.ops.mamba_kernels import MixerWeights
from mswelu.ops.selective_scan import selective_scan

__all__ = ["MambaMixer"]


#: what Mamba-1's causal conv is (the controls of "Achilles' heel of Mamba", Chen et al. 2025): ``learned``
#: (Mamba's), ``ones`` (weights fixed to one and frozen), ``residual`` (``conv(x) + x``, before the
#: activation)
CONV_MODES = ("learned", "ones", "residual")


class MambaMixer(InMixerActivations, nn.Module):
    """Mamba-1 mixer: (B, L, d_model) -> (B, L, d_model); see the module docstring for the layout."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        act_conv: nn.Module | None = None,
        act_gate: nn.Module | None = None,
        backend: str = "auto",
        layer_idx: int | None = None,
        conv_mode: str = "learned",
    ) -> None:
        super().__init__()
        check_choice("conv_mode", conv_mode, CONV_MODES)
        for name, value, low in (("d_model", d_model, 1), ("d_state", d_state, 1), ("d_conv", d_conv, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(expand, (int, float)) and expand > 0) or int(expand * d_model) < 1:
            raise ValueError(f"expand must be > 0 (d_inner = expand * d_model >= 1), got {expand!r}")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or isinstance(dt_rank, bool) or dt_rank < 1:
            raise ValueError(f"dt_rank must be 'auto' or an integer >= 1, got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init_floor < 0:
            raise ValueError(f"dt_init_floor must be >= 0, got {dt_init_floor}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = dt_rank
        self.backend = backend
        self.layer_idx = layer_idx

        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner,
            self.d_inner,
            kernel_size=d_conv,
            groups=self.d_inner,
            padding=d_conv - 1,
            bias=conv_bias,
        )
        self.conv_mode = conv_mode
        if conv_mode == "ones":  # a fixed, order-blind sum of the last d_conv tokens (the bias still learns)
            self.conv1d.weight.data.fill_(1.0)
            self.conv1d.weight.requires_grad_(False)
        self.act_conv = act_conv if act_conv is not None else nn.SiLU()
        self.act_gate = act_gate if act_gate is not None else nn.SiLU()
        self.x_proj = nn.Linear(self.d_inner, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.dt_proj.bias._no_reinit = True
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor)

    @torch.no_grad()
    def reset_ssm_parameters(
        self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0
    ) -> None:
        """Mamba-1 init ("random" dt init): S4D-real A, D = 1, log-uniform dt through softplus^-1."""
        std = self.dt_rank**-0.5 * dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(
            torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=dt_init_floor)
        inv_dt = dt + torch.log(-torch.expm1(-dt))  # softplus(inv_dt) == dt
        self.dt_proj.bias.copy_(inv_dt)
        A = torch.arange(1, self.d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log.copy_(torch.log(A))
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
        if self._kernel_path(hidden_states):
            return self.forward_cuda(hidden_states)
        return self._forward_torch(hidden_states)[0]

    def _kernel_path(self, hidden_states: Tensor) -> bool:
        """Whether this call runs on the CUDA kernels (``conv_mode="residual"`` has none: PyTorch ops)."""
        return self.conv_mode != "residual" and resolve_backend(self.backend, hidden_states) == "cuda"

    def forward_with_states(self, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prefill: (out, conv_state (B, d_inner, d_conv), ssm_state (B, d_inner, N) fp32) after the end.

        The states continue exactly where :meth:`step` would have left them after the same tokens.
        """
        self._check_input(hidden_states)
        if self._kernel_path(hidden_states):
            return self.forward_cuda(hidden_states, return_states=True)
        return self._forward_torch(hidden_states, want_states=True)

    def _forward_torch(self, hidden_states: Tensor, want_states: bool = False):
        seqlen = hidden_states.shape[1]
        # x and z stay views of in_proj's (B, L, 2 d_inner) output; the gate is applied in (B, L, d_inner),
        # the layout the scan returns and out_proj reads. On a CPU the conv kernel reads x in that layout and
        # returns x_conv channels-last too, so the activation, x_proj and the scan take it without copies.
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x = x.transpose(1, 2)  # (B, d_inner, L)
        x_conv = causal_conv1d(x, self.conv1d.weight.squeeze(1), self.conv1d.bias)
        if self.conv_mode == "residual":
            x_conv = x_conv + x
        x_act = self.act_conv(x_conv.transpose(1, 2)).transpose(1, 2)  # elementwise, in x_conv's layout
        x_dbl = self.x_proj(x_act.transpose(1, 2))  # (B, L, dt_rank + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = (dt @ self.dt_proj.weight.t()).transpose(1, 2)  # (B, d_inner, L), bias added in the scan
        A = -torch.exp(self.A_log.float())
        res = selective_scan(
            x_act,
            dt,
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            self.D.float(),
            z=None,
            delta_bias=self.dt_proj.bias.float(),
            delta_softplus=True,
            return_last_state=want_states,
        )
        y, last_state = res if want_states else (res, None)
        out = self.out_proj(y.transpose(1, 2) * self.act_gate(z))
        if not want_states:
            return out, None, None
        conv_state = F.pad(x, (self.d_conv - seqlen, 0))  # last d_conv inputs, zero-padded on the left
        return out, conv_state.detach().clone(), last_state.detach()

    # ------------------------------------------------------------------ decoding
    def allocate_inference_cache(
        self, batch_size: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Zero states for :meth:`step`: conv (B, d_inner, d_conv) in ``dtype``, ssm (B, d_inner, N) fp32."""
        device = device if device is not None else self.in_proj.weight.device
        dtype = dtype if dtype is not None else self.conv1d.weight.dtype
        conv_state = torch.zeros(batch_size, self.d_inner, self.d_conv, device=device, dtype=dtype)
        ssm_state = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=torch.float32)
        return conv_state, ssm_state

    def step(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One token: (B, 1, d_model) -> (B, 1, d_model); updates ``conv_state``, ``ssm_state`` in place."""
        self._check_input(hidden_states)
        if hidden_states.shape[1] != 1:
            raise ValueError(f"step takes one token at a time, got length {hidden_states.shape[1]}")
        if self._kernel_path(hidden_states):
            return self.step_cuda(hidden_states, conv_state, ssm_state)
        dtype = hidden_states.dtype
        xz = self.in_proj(hidden_states.squeeze(1))  # (B, 2 d_inner)
        x, z = xz.chunk(2, dim=-1)
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = x.to(conv_state.dtype)
        x = (conv_state * self.conv1d.weight.squeeze(1).to(conv_state.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            x = x + self.conv1d.bias.to(x.dtype)
        if self.conv_mode == "residual":
            x = x + conv_state[:, :, -1]  # the current token's conv input
        x = self.act_conv(x.to(dtype))
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus((dt @ self.dt_proj.weight.t()).float() + self.dt_proj.bias.float())  # fp32
        A = -torch.exp(self.A_log.float())
        dA = torch.exp(dt[..., None] * A)
        dBx = (dt * x.float())[..., None] * B.float()[:, None, :]
        ssm_state.copy_(ssm_state * dA + dBx)
        y = (ssm_state @ C.float()[..., None]).squeeze(-1) + self.D.float() * x.float()
        y = y.to(dtype) * self.act_gate(z)
        return self.out_proj(y).unsqueeze(1)

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

    # ------------------------------------------------------------------ CUDA kernel path
    def weights(self) -> MixerWeights:
        """This mixer's tensors, as the kernel functions of :mod:`mswelu.ops.mamba_kernels` take them."""
        return MixerWeights(
            self.in_proj.weight,
            self.in_proj.bias,
            self.conv1d.weight,
            self.conv1d.bias,
            self.x_proj.weight,
            self.dt_proj.weight,
            self.dt_proj.bias,
            self.A_log,
            self.D,
            self.out_proj.weight,
            self.out_proj.bias,
        )

    def _kernel_acts(self, fuse_silu: bool) -> tuple[Any, Any]:
        """The two activations for the kernel path: ``"silu"`` (the kernels' fused SiLU) for an
        ``nn.SiLU`` when ``fuse_silu``, else the module; only registered elementwise activations pass
        (the kernels apply them on a (B, d_inner, L) layout)."""
        from mswelu.modules.activations import spec_of

        acts = []
        for slot in ("act_conv", "act_gate"):
            act = getattr(self, slot)
            spec = spec_of(act)
            if spec is None or not spec.elementwise:
                raise ValueError(
                    f"the CUDA kernel path supports only elementwise activations of mswelu.ACTIVATIONS, but "
                    f"mixer.{slot} is {type(act).__name__}; use backend='torch' for others"
                )
            acts.append("silu" if fuse_silu and type(act) is nn.SiLU else act)
        return acts[0], acts[1]

    def forward_cuda(self, hidden_states: Tensor, fuse_silu: bool = True, return_states: bool = False) -> Any:
        """The forward (or, with ``return_states``, the prefill) on the CUDA kernels; ``fuse_silu=False``
        runs SiLU as a separate module (tests check both routes)."""
        act_conv, act_gate = self._kernel_acts(fuse_silu)
        return mamba_kernels.mamba_mixer_fn(hidden_states, self.weights(), act_conv, act_gate, return_states)

    def step_cuda(
        self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor, fuse_silu: bool = True
    ) -> Tensor:
        """One decoding step on the CUDA kernels; updates both states in place."""
        act_conv, act_gate = self._kernel_acts(fuse_silu)
        return mamba_kernels.mamba_step_fn(
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
            f"dt_rank={self.dt_rank}, shared_act={self.act_conv is self.act_gate}, backend={self.backend!r}"
            + (f", conv_mode={self.conv_mode!r}" if self.conv_mode != "learned" else "")
        )
