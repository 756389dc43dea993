"""The Mamba-1 mixer on the mamba-ssm / causal-conv1d CUDA kernels, as functions of tensors (in the manner
of mamba-ssm's ``mamba_inner_fn``), with any elementwise activation in the two activation slots.

The fused ``mamba_inner_fn`` hard-codes SiLU twice (after the causal conv and on the gate), so a learnable
SWELU cannot go through it. These functions use the unfused kernels instead:

    in_proj -> causal_conv1d_fn(activation=None) -> act_conv -> x_proj -> dt_proj (weight only)
    -> selective_scan_fn(z=None, delta_bias=dt_proj.bias, delta_softplus=True) -> y * act_gate(z)
    -> out_proj

and for decoding ``causal_conv1d_update(activation=None)`` and ``selective_state_update(z=None)``. An
activation passed as the string ``"silu"`` goes into the kernels' own fused SiLU option instead (the same
function, one memory pass less; rounded once rather than twice in bf16). :class:`MixerWeights` names the
tensors; :class:`mswelu.modules.mamba_mixer.MambaMixer` passes its own.

The kernel packages are imported on first use (:func:`mswelu.ops.backends.import_kernels`, the one
probe). Tests bind the packages' pure-PyTorch reference functions (same signatures) to the module-level
names below to run exactly this code on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# The four kernel entry points. ``None`` = resolve from the installed packages on first use;
# tests assign the upstream reference functions here.
selective_scan_fn: Any = None
causal_conv1d_fn: Any = None
causal_conv1d_update: Any = None
selective_state_update: Any = None

#: dtypes the CUDA kernels are compiled for (mamba-ssm and causal-conv1d: fp32, fp16, bf16).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: An activation: a callable on tensors, or ``"silu"`` for the kernels' fused SiLU.
Activation = Callable[[Tensor], Tensor] | str

_ENTRY_POINTS = ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update")
_package_fns: set[int] = set()  # ids of entry points loaded from the packages (they need GPU tensors)


class MixerWeights(NamedTuple):
    """The tensors of one Mamba-1 mixer (mamba-ssm names and shapes; biases may be None)."""

    in_proj_weight: Tensor  # (2 d_inner, d_model)
    in_proj_bias: Tensor | None
    conv_weight: Tensor  # (d_inner, 1, d_conv)
    conv_bias: Tensor | None
    x_proj_weight: Tensor  # (dt_rank + 2 N, d_inner)
    dt_proj_weight: Tensor  # (d_inner, dt_rank)
    dt_proj_bias: Tensor  # (d_inner,)
    A_log: Tensor  # (d_inner, N)
    D: Tensor  # (d_inner,)
    out_proj_weight: Tensor  # (d_model, d_inner)
    out_proj_bias: Tensor | None


def _kernels() -> SimpleNamespace:
    """The four kernel entry points; imports the packages for the ones not already bound."""
    if any(globals()[name] is None for name in _ENTRY_POINTS):
        from mswelu.ops.backends import import_kernels

        found = import_kernels()
        for name in _ENTRY_POINTS:
            if globals()[name] is None:
                globals()[name] = found[name]
        _package_fns.update(map(id, found.values()))
    return SimpleNamespace(**{name: globals()[name] for name in _ENTRY_POINTS})


def _check_device(k: SimpleNamespace, hidden_states: Tensor) -> None:
    """The compiled kernels need GPU tensors (bound references, in tests, run on CPU)."""
    if not hidden_states.is_cuda and any(id(fn) in _package_fns for fn in vars(k).values()):
        raise ValueError(
            f"the CUDA kernels need tensors on a GPU, got hidden_states on {hidden_states.device}; "
            "move the model to 'cuda' or use backend='torch'"
        )


def check_kernel_support(w: MixerWeights, hidden_states: Tensor) -> None:
    """Raise a ``ValueError`` naming the problem if the kernels cannot run these weights on this input.
    (The activations must be elementwise: the caller checks that.)"""
    if hidden_states.dim() != 3:
        raise ValueError(
            f"hidden_states must be (batch, seqlen, d_model), got shape {tuple(hidden_states.shape)}"
        )
    d_model = w.in_proj_weight.shape[1]
    if hidden_states.shape[-1] != d_model:
        raise ValueError(
            f"hidden_states has {hidden_states.shape[-1]} features, the mixer expects d_model={d_model}"
        )
    for what, dtype in (("input", hidden_states.dtype), ("parameter", w.in_proj_weight.dtype)):
        if dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"the mamba-ssm / causal-conv1d kernels do not support {what} dtype {dtype} "
                f"(supported: float32, float16, bfloat16); use backend='torch'"
            )
    autocast = torch.is_autocast_enabled(hidden_states.device.type)
    if not autocast and hidden_states.dtype != w.in_proj_weight.dtype:
        raise ValueError(
            f"hidden_states dtype {hidden_states.dtype} differs from the mixer's parameter dtype "
            f"{w.in_proj_weight.dtype}: cast one of them or run under torch.autocast"
        )
    d_conv, d_state = w.conv_weight.shape[-1], w.A_log.shape[1]
    if not 2 <= d_conv <= 4:
        raise ValueError(f"causal_conv1d supports d_conv between 2 and 4, got {d_conv}; use backend='torch'")
    if d_state > 256:
        raise ValueError(f"selective_scan supports d_state <= 256, got {d_state}; use backend='torch'")


def _apply(act: Activation, x: Tensor) -> Tensor:
    """Apply an activation and keep x's dtype (a module that upcasts under autocast is cast back:
    the scan kernel needs u, delta, B and C in one dtype)."""
    out = act(x)  # type: ignore[operator]
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _scan_inputs(w: MixerWeights, x: Tensor, seqlen: int) -> tuple[Tensor, Tensor, Tensor]:
    """x_proj and dt_proj (weight only: the bias goes into the kernel's fp32 softplus)."""
    dt_rank, d_state = w.dt_proj_weight.shape[1], w.A_log.shape[1]
    x_dbl = F.linear(x.transpose(1, 2).reshape(-1, x.shape[1]), w.x_proj_weight, None)  # (B*L, dt_rank + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    # (d_inner, B*L) -> (B, d_inner, L) with L fastest, the layout the scan kernel reads
    dt = (w.dt_proj_weight @ dt.t()).view(-1, x.shape[0], seqlen).transpose(0, 1)
    B = B.view(x.shape[0], seqlen, d_state).transpose(1, 2).contiguous()
    C = C.view(x.shape[0], seqlen, d_state).transpose(1, 2).contiguous()
    return dt, B, C


def mamba_mixer_fn(
    hidden_states: Tensor,
    w: MixerWeights,
    act_conv: Activation = "silu",
    act_gate: Activation = "silu",
    return_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Mixer forward ``(B, L, d_model) -> (B, L, d_model)`` on the CUDA kernels. With ``return_states``
    (prefill): ``(out, conv_state (B, d_inner, d_conv), ssm_state (B, d_inner, N) fp32)`` after the last
    token, ready for :func:`mamba_step_fn`."""
    check_kernel_support(w, hidden_states)
    k = _kernels()
    _check_device(k, hidden_states)
    batch, seqlen, d_model = hidden_states.shape
    d_conv = w.conv_weight.shape[-1]
    # One matmul for x and z, written as (B, 2*d_inner, L) with L fastest (as mamba-ssm does).
    xz = w.in_proj_weight @ hidden_states.reshape(-1, d_model).t()
    xz = xz.view(-1, batch, seqlen).transpose(0, 1)
    if w.in_proj_bias is not None:
        xz = xz + w.in_proj_bias.to(xz.dtype)[:, None]
    x, z = xz.chunk(2, dim=1)

    conv_state = None
    if return_states:  # the last d_conv inputs of the conv (zero-padded when the prompt is shorter)
        conv_state = F.pad(x.detach(), (d_conv - seqlen, 0)).contiguous()
    conv_silu = act_conv == "silu"
    x = k.causal_conv1d_fn(x, w.conv_weight.squeeze(1), w.conv_bias, activation="silu" if conv_silu else None)
    if not conv_silu:
        x = _apply(act_conv, x)

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
    ssm_state = None
    if return_states:
        y, ssm_state = y
    if not gate_silu:
        y = y * _apply(act_gate, z)
    out = F.linear(y.transpose(1, 2), w.out_proj_weight, w.out_proj_bias)
    if return_states:
        return out, conv_state, ssm_state.detach().float()
    return out


def mamba_step_fn(
    hidden_states: Tensor,
    conv_state: Tensor,
    ssm_state: Tensor,
    w: MixerWeights,
    act_conv: Activation = "silu",
    act_gate: Activation = "silu",
) -> Tensor:
    """One decoding step ``(B, 1, d_model) -> (B, 1, d_model)``; updates both states in place."""
    check_kernel_support(w, hidden_states)
    if hidden_states.shape[1] != 1:
        raise ValueError(f"step decodes one token at a time, got seqlen {hidden_states.shape[1]}")
    k = _kernels()
    _check_device(k, hidden_states)
    d_inner = w.in_proj_weight.shape[0] // 2
    expected = {
        "conv_state": (conv_state, w.conv_weight.shape[-1]),
        "ssm_state": (ssm_state, w.A_log.shape[1]),
    }
    for name, (state, last) in expected.items():
        if state.shape != (hidden_states.shape[0], d_inner, last):
            raise ValueError(
                f"{name} has shape {tuple(state.shape)}, expected {(hidden_states.shape[0], d_inner, last)}"
            )
    if conv_state.dtype not in KERNEL_DTYPES:
        raise ValueError(f"conv_state dtype {conv_state.dtype} is not supported by causal_conv1d_update")
    xz = F.linear(hidden_states.squeeze(1), w.in_proj_weight, w.in_proj_bias)  # (B, 2*d_inner)
    x, z = xz.chunk(2, dim=-1)
    conv_silu = act_conv == "silu"
    x = k.causal_conv1d_update(  # the kernel wants x in the conv state's dtype
        x.to(conv_state.dtype),
        conv_state,
        w.conv_weight.squeeze(1),
        w.conv_bias,
        "silu" if conv_silu else None,
    ).to(xz.dtype)
    if not conv_silu:
        x = _apply(act_conv, x)
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
        y = y * _apply(act_gate, z)
    return F.linear(y, w.out_proj_weight, w.out_proj_bias).unsqueeze(1)
