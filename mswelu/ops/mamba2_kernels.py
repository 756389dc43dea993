"""The Mamba-2 mixer on the mamba-ssm / causal-conv1d GPU kernels, as functions of tensors, with any
elementwise activation in its two activation slots (Mamba-2's counterpart of :mod:`mswelu.ops.mamba_kernels`).

mamba-ssm's fused ``mamba_split_conv1d_scan_combined`` hard-codes SiLU, so a learnable SWELU cannot go
through it. These functions use the separate kernels instead:

    in_proj -> [z, xBC, dt] -> causal_conv1d_fn(xBC, activation=None) -> act_conv (on x, B and C)
    -> mamba_chunk_scan_combined(x, dt, A, B, C, D=D, z=None, dt_bias, dt_softplus=True, dt_limit)
    -> weight * rmsnorm_groups(y * act_gate(z)) (fp32, PyTorch) -> out_proj

and for decoding ``causal_conv1d_update(activation=None)`` and ``selective_state_update`` on per-head states
(B, nheads, headdim, N), with A / D repeated to (nheads, headdim[, N]) as mamba-ssm's ``Mamba2.step`` does.
An activation passed as the string ``"silu"`` takes the kernels' fused SiLU instead: the conv's
``activation="silu"`` and, for the gate, mamba-ssm's Triton ``rmsnorm_fn`` (``norm_before_gate=False``).

The decoding step clamps dt to ``dt_limit`` as the forward does (mamba-ssm's ``Mamba2.step`` and
transformers' decoding skip the clamp, so their decoding differs from their forward when a limit is set):
dt is discretised here in fp32 and handed to the kernel with a zero bias and no softplus.

The five entry points are module-level names, resolved from the installed packages on first use by
:func:`mswelu.ops.backends.import_kernels` (the one probe; what this module shares with Mamba-1's is
:mod:`mswelu.ops.ssm_kernels`); tests bind the packages' pure-PyTorch references (same signatures) to them
to run exactly this code on CPU. :class:`Weights` names a mixer's tensors and the settings their
shapes do not determine; :class:`mswelu.modules.mamba2_mixer.Mamba2Mixer` passes its own.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.ops import ssm_kernels
from mswelu.ops.gated_norm import gated_rms_norm
from mswelu.ops.ssd import discretize_dt
from mswelu.ops.ssm_kernels import SILU, Activation, Activations, Output

#: the five entry points of ``backends.KERNEL_SOURCES["Mamba-2"]``, module-level names that are None until the
#: first call binds them from the packages (tests bind the packages' references to them instead)
KERNELS = ssm_kernels.KernelPath("Mamba-2", globals())
#: whether this kernel path can import what it calls (``() -> (ok, why)``, probed once)
kernels_available = KERNELS.available


class Weights(NamedTuple):
    """The tensors of one Mamba-2 mixer (mamba-ssm / transformers names and shapes; biases may be None)
    and the settings their shapes do not determine."""

    in_proj_weight: Tensor  # (2 d_inner + 2 n_groups N + nheads, d_model): [z, x, B, C, dt]
    in_proj_bias: Tensor | None
    conv1d_weight: Tensor  # (d_inner + 2 n_groups N, 1, d_conv)
    conv1d_bias: Tensor | None
    dt_bias: Tensor  # (nheads,)
    A_log: Tensor  # (nheads,)
    D: Tensor  # (nheads,)
    norm_weight: Tensor  # (d_inner,)
    out_proj_weight: Tensor  # (d_model, d_inner)
    out_proj_bias: Tensor | None
    n_groups: int
    chunk_size: int
    dt_limit: tuple[float, float]
    norm_eps: float


def _sizes(w: Weights) -> tuple[int, int, int, int]:
    """(d_inner, nheads, headdim, d_state) from the tensors' shapes and ``n_groups``."""
    d_inner = w.out_proj_weight.shape[1]
    nheads = w.A_log.shape[0]
    d_state = (w.conv1d_weight.shape[0] - d_inner) // (2 * w.n_groups)
    return d_inner, nheads, d_inner // nheads, d_state


def _gate_and_project(k: SimpleNamespace, w: Weights, y: Tensor, z: Tensor, act_gate: Activation) -> Tensor:
    """out_proj(weight * rmsnorm_groups(y * act_gate(z))), with the fused Triton norm for ``"silu"``."""
    group_size = y.shape[-1] // w.n_groups
    if act_gate == "silu":
        y = k.rmsnorm_fn(
            y, w.norm_weight, None, z=z, eps=w.norm_eps, group_size=group_size, norm_before_gate=False
        )
    else:
        y = gated_rms_norm(y, z, w.norm_weight, group_size, w.norm_eps, act_gate)  # type: ignore[arg-type]
    return F.linear(y, w.out_proj_weight, w.out_proj_bias)


def mixer_fn(
    hidden_states: Tensor, w: Weights, acts: Activations = SILU, return_states: bool = False
) -> Output:
    """Mixer forward ``(B, L, d_model) -> (B, L, d_model)`` on the kernels. With ``return_states`` (prefill):
    ``(out, conv_state (B, conv_dim, d_conv), ssm_state (B, nheads, headdim, N) fp32)`` after the last token,
    ready for :func:`step_fn`."""
    act_conv, act_gate = acts
    k = KERNELS.bind(hidden_states, w.in_proj_weight, w.conv1d_weight.shape[-1])
    batch, seqlen, _ = hidden_states.shape
    d_inner, nheads, headdim, d_state = _sizes(w)
    conv_dim = w.conv1d_weight.shape[0]
    zxbcdt = F.linear(hidden_states, w.in_proj_weight, w.in_proj_bias)
    z, xBC, dt = torch.split(zxbcdt, [d_inner, conv_dim, nheads], dim=-1)
    # (B, conv_dim, L), channels-last. causal_conv1d reads that layout in place only when the channel count
    # and the strides are multiples of 8 (its TORCH_CHECKs); otherwise it needs L contiguous.
    xBC = xBC.transpose(1, 2)
    if not (conv_dim % 8 == 0 and xBC.stride(0) % 8 == 0 and xBC.stride(2) % 8 == 0):
        xBC = xBC.contiguous()
    xBC, conv_state = ssm_kernels.conv_forward(
        k, xBC, w.conv1d_weight, w.conv1d_bias, act_conv, return_states
    )
    xBC = xBC.transpose(1, 2)
    x, B, C = torch.split(xBC, [d_inner, w.n_groups * d_state, w.n_groups * d_state], dim=-1)
    y = k.mamba_chunk_scan_combined(
        x.reshape(batch, seqlen, nheads, headdim),
        dt,
        -torch.exp(w.A_log.float()),
        B.reshape(batch, seqlen, w.n_groups, d_state),
        C.reshape(batch, seqlen, w.n_groups, d_state),
        w.chunk_size,
        D=w.D,
        z=None,
        dt_bias=w.dt_bias,
        dt_softplus=True,
        dt_limit=w.dt_limit,
        return_final_states=return_states,
    )
    y, ssm_state = y if return_states else (y, None)
    out = _gate_and_project(k, w, y.reshape(batch, seqlen, d_inner), z, act_gate)
    return ssm_kernels.with_states(out, conv_state, ssm_state)


def step_fn(
    hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor, w: Weights, acts: Activations = SILU
) -> Tensor:
    """One decoding step ``(B, 1, d_model) -> (B, 1, d_model)``; updates both states in place."""
    k = KERNELS.bind(hidden_states, w.in_proj_weight, w.conv1d_weight.shape[-1])
    act_conv, act_gate = acts
    batch = hidden_states.shape[0]
    d_inner, nheads, headdim, d_state = _sizes(w)
    conv_dim = w.conv1d_weight.shape[0]
    ssm_kernels.check_step(
        hidden_states,
        {
            "conv_state": (conv_state, (batch, conv_dim, w.conv1d_weight.shape[-1])),
            "ssm_state": (ssm_state, (batch, nheads, headdim, d_state)),
        },
    )
    z, xBC, dt = torch.split(
        F.linear(hidden_states.squeeze(1), w.in_proj_weight, w.in_proj_bias),
        [d_inner, conv_dim, nheads],
        dim=-1,
    )
    xBC = ssm_kernels.conv_step(k, xBC, conv_state, w.conv1d_weight, w.conv1d_bias, act_conv)
    x, B, C = torch.split(xBC, [d_inner, w.n_groups * d_state, w.n_groups * d_state], dim=-1)
    dt = discretize_dt(dt, w.dt_bias, True, w.dt_limit)  # fp32, clamped as in the forward
    y = k.selective_state_update(
        ssm_state,
        x.reshape(batch, nheads, headdim),
        dt[:, :, None].expand(batch, nheads, headdim),
        (-torch.exp(w.A_log.float()))[:, None, None].expand(nheads, headdim, d_state),
        B.reshape(batch, w.n_groups, d_state),
        C.reshape(batch, w.n_groups, d_state),
        w.D.float()[:, None].expand(nheads, headdim),
        z=None,
        dt_bias=dt.new_zeros(()).expand(nheads, headdim),  # not None: mamba-ssm 2.3.2 reads its strides
        dt_softplus=False,
    )
    out = _gate_and_project(k, w, y.reshape(batch, d_inner), z, act_gate)
    return out.unsqueeze(1)
