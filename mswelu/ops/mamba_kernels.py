"""The Mamba-1 mixer on the mamba-ssm / causal-conv1d CUDA kernels, as functions of tensors (in the manner
of mamba-ssm's ``mamba_inner_fn``), with any elementwise activation in the two activation slots.

The fused ``mamba_inner_fn`` hard-codes SiLU twice (after the causal conv and on the gate), so a learnable
SWELU cannot go through it. These functions use the unfused kernels instead:

    in_proj -> causal_conv1d_fn(activation=None) -> act_conv -> x_proj -> dt_proj (weight only)
    -> selective_scan_fn(z=None, delta_bias=dt_proj.bias, delta_softplus=True) -> y * act_gate(z)
    -> out_proj

and for decoding ``causal_conv1d_update(activation=None)`` and ``selective_state_update(z=None)``. An
activation passed as the string ``"silu"`` goes into the kernels' own fused SiLU option instead (the same
function, one memory pass less; rounded once rather than twice in bf16). :class:`Weights` names the
tensors; :class:`mswelu.modules.mamba_mixer.MambaMixer` passes its own.

The kernel packages are imported on first use (:func:`mswelu.ops.backends.import_kernels`, the one
probe; what this module shares with Mamba-2's is :mod:`mswelu.ops.ssm_kernels`). Tests bind the packages'
pure-PyTorch reference functions (same signatures) to the module-level names below to run exactly this code
on CPU.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.ops import ssm_kernels
from mswelu.ops.ssm_kernels import SILU, Activations, Output

#: the four entry points of ``backends.KERNEL_SOURCES["Mamba-1"]``, module-level names that are None until the
#: first call binds them from the packages (tests bind the packages' references to them instead)
KERNELS = ssm_kernels.KernelPath("Mamba-1", globals())
#: whether this kernel path can import what it calls (``() -> (ok, why)``, probed once)
kernels_available = KERNELS.available


class Weights(NamedTuple):
    """The tensors of one Mamba-1 mixer (mamba-ssm names and shapes; biases may be None)."""

    in_proj_weight: Tensor  # (2 d_inner, d_model)
    in_proj_bias: Tensor | None
    conv1d_weight: Tensor  # (d_inner, 1, d_conv)
    conv1d_bias: Tensor | None
    x_proj_weight: Tensor  # (dt_rank + 2 N, d_inner)
    dt_proj_weight: Tensor  # (d_inner, dt_rank)
    dt_proj_bias: Tensor  # (d_inner,)
    A_log: Tensor  # (d_inner, N)
    D: Tensor  # (d_inner,)
    out_proj_weight: Tensor  # (d_model, d_inner)
    out_proj_bias: Tensor | None


def _kernels(w: Weights, hidden_states: Tensor) -> Any:
    """The entry points, once the kernels are known to support these weights on this input (a ValueError
    naming the problem otherwise)."""
    k = KERNELS.bind(hidden_states, w.in_proj_weight, w.conv1d_weight.shape[-1])
    if w.A_log.shape[1] > 256:
        raise ValueError(
            f"selective_scan supports d_state <= 256, got {w.A_log.shape[1]}; use backend='torch'"
        )
    return k


def _scan_inputs(w: Weights, x: Tensor, seqlen: int) -> tuple[Tensor, Tensor, Tensor]:
    """x_proj and dt_proj (weight only: the bias goes into the kernel's fp32 softplus)."""
    dt_rank, d_state = w.dt_proj_weight.shape[1], w.A_log.shape[1]
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), w.x_proj_weight, None)  # (B*L, dt_rank + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    # (d_inner, B*L) -> (B, d_inner, L) with L fastest, the layout the scan kernel reads
    dt = (w.dt_proj_weight @ dt.t()).view(-1, x.shape[0], seqlen).transpose(0, 1)
    B = B.view(x.shape[0], seqlen, d_state).transpose(1, 2).contiguous()
    C = C.view(x.shape[0], seqlen, d_state).transpose(1, 2).contiguous()
    return dt, B, C


def mixer_fn(
    hidden_states: Tensor, w: Weights, acts: Activations = SILU, return_states: bool = False
) -> Output:
    """Mixer forward ``(B, L, d_model) -> (B, L, d_model)`` on the CUDA kernels. With ``return_states``
    (prefill): ``(out, conv_state (B, d_inner, d_conv), ssm_state (B, d_inner, N) fp32)`` after the last
    token, ready for :func:`step_fn`."""
    act_conv, act_gate = acts
    k = _kernels(w, hidden_states)
    batch, seqlen, d_model = hidden_states.shape
    # One matmul for x and z, written as (B, 2*d_inner, L) with L fastest (as mamba-ssm does).
    xz = w.in_proj_weight @ hidden_states.reshape(-1, d_model).t()
    xz = xz.view(-1, batch, seqlen).transpose(0, 1)
    if w.in_proj_bias is not None:
        xz = xz + w.in_proj_bias.to(xz.dtype)[:, None]
    x, z = xz.chunk(2, dim=1)
    x, conv_state = ssm_kernels.conv_forward(k, x, w.conv1d_weight, w.conv1d_bias, act_conv, return_states)
    dt, B, C = _scan_inputs(w, x, seqlen)
    A = -torch.exp(w.A_log.float())  # (d_inner, N), fp32
    gate_silu = act_gate == "silu"
    y = k.selective_scan_fn(
        x,
        dt,
        A,
        B,
        C,
        w.D.float(),
        z=z if gate_silu else None,
        delta_bias=w.dt_proj_bias.float(),
        delta_softplus=True,
        return_last_state=return_states,
    )
    y, ssm_state = y if return_states else (y, None)
    if not gate_silu:
        y = y * ssm_kernels.apply_activation(act_gate, z)
    return ssm_kernels.with_states(
        F.linear(y.transpose(1, 2), w.out_proj_weight, w.out_proj_bias), conv_state, ssm_state
    )


def step_fn(
    hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor, w: Weights, acts: Activations = SILU
) -> Tensor:
    """One decoding step ``(B, 1, d_model) -> (B, 1, d_model)``; updates both states in place."""
    k = _kernels(w, hidden_states)
    act_conv, act_gate = acts
    batch, d_inner = hidden_states.shape[0], w.in_proj_weight.shape[0] // 2
    ssm_kernels.check_step(
        hidden_states,
        {
            "conv_state": (conv_state, (batch, d_inner, w.conv1d_weight.shape[-1])),
            "ssm_state": (ssm_state, (batch, d_inner, w.A_log.shape[1])),
        },
    )
    x, z = F.linear(hidden_states.squeeze(1), w.in_proj_weight, w.in_proj_bias).chunk(2, dim=-1)
    x = ssm_kernels.conv_step(k, x, conv_state, w.conv1d_weight, w.conv1d_bias, act_conv)
    dt_rank, d_state = w.dt_proj_weight.shape[1], w.A_log.shape[1]
    dt, B, C = torch.split(F.linear(x, w.x_proj_weight, None), [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, w.dt_proj_weight)  # bias added inside the kernel, in fp32
    A = -torch.exp(w.A_log.float())
    gate_silu = act_gate == "silu"
    y = k.selective_state_update(
        ssm_state,
        x,
        dt,
        A,
        B,
        C,
        w.D.float(),
        z=z if gate_silu else None,
        dt_bias=w.dt_proj_bias.float(),
        dt_softplus=True,
    )
    if not gate_silu:
        y = y * ssm_kernels.apply_activation(act_gate, z)
    return F.linear(y, w.out_proj_weight, w.out_proj_bias).unsqueeze(1)
