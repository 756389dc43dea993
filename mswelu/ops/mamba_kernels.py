"""The Mamba-1 mixer on the mamba-ssm / causal-conv1d CUDA kernels, with SiLU or SWELU activations.

The fused ``mamba_inner_fn`` of mamba-ssm hard-codes SiLU twice (after the causal conv and on the
gate), so a learnable SWELU cannot go through it. This path uses the unfused kernels instead:

    in_proj -> causal_conv1d_fn(activation=None) -> act_conv -> x_proj -> dt_proj (weight only)
    -> selective_scan_fn(z=None, delta_bias=dt_proj.bias, delta_softplus=True) -> y * act_gate(z)
    -> out_proj

and for decoding ``causal_conv1d_update(activation=None)`` and ``selective_state_update(z=None)``.
Activations that are exactly ``nn.SiLU`` go into the kernels' own fused SiLU options instead (the
same function, one memory pass less; rounded once rather than twice in bf16).

Nothing here imports the kernel packages at module import time: :func:`_kernels` resolves the four
entry points on first use. Tests bind the packages' pure-PyTorch reference functions (same
signatures) to the module-level names below to run exactly this code on CPU.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# The four kernel entry points. ``None`` = resolve from the installed packages on first use;
# tests assign the upstream reference functions here.
selective_scan_fn: Any = None
causal_conv1d_fn: Any = None
causal_conv1d_update: Any = None
selective_state_update: Any = None

#: dtypes the CUDA kernels are compiled for (mamba-ssm and causal-conv1d: fp32, fp16, bf16).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_ENTRY_POINTS = ("selective_scan_fn", "causal_conv1d_fn", "causal_conv1d_update", "selective_state_update")
_package_fns: set[int] = set()  # ids of entry points loaded from the packages (they need GPU tensors)


def _kernels() -> SimpleNamespace:
    """The four kernel entry points; imports the packages for the ones not already bound."""
    global selective_scan_fn, causal_conv1d_fn, causal_conv1d_update, selective_state_update
    if any(globals()[name] is None for name in _ENTRY_POINTS):
        try:
            import causal_conv1d_cuda  # noqa: F401  (the compiled modules: without them the
            import selective_scan_cuda  # noqa: F401  Python wrappers fail only when called)
            from causal_conv1d import causal_conv1d_fn as conv_fn
            from causal_conv1d import causal_conv1d_update as conv_update
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as scan_fn
            from mamba_ssm.ops.triton.selective_state_update import selective_state_update as state_update
        except Exception as exc:  # ImportError, or an undefined-symbol error from a mismatched build
            raise RuntimeError(
                "the CUDA kernel path needs the mamba-ssm and causal-conv1d kernels "
                f"(selective_scan_cuda, causal_conv1d_cuda), which do not import: {type(exc).__name__}: "
                f"{exc}. Install them (README, 'GPU') or use backend='torch'"
            ) from exc
        selective_scan_fn = selective_scan_fn or scan_fn
        causal_conv1d_fn = causal_conv1d_fn or conv_fn
        causal_conv1d_update = causal_conv1d_update or conv_update
        selective_state_update = selective_state_update or state_update
        _package_fns.update(map(id, (scan_fn, conv_fn, conv_update, state_update)))
    return SimpleNamespace(**{name: globals()[name] for name in _ENTRY_POINTS})


def _check_device(k: SimpleNamespace, hidden_states: Tensor) -> None:
    """The compiled kernels need GPU tensors (bound references, in tests, run on CPU)."""
    if not hidden_states.is_cuda and any(id(fn) in _package_fns for fn in vars(k).values()):
        raise ValueError(
            f"the CUDA kernels need tensors on a GPU, got hidden_states on {hidden_states.device}; "
            "move the model to 'cuda' or use backend='torch'"
        )


def check_kernel_support(mixer: nn.Module, hidden_states: Tensor) -> None:
    """Raise a ``ValueError`` naming the problem if the kernels cannot run this mixer on this input.

    The activations must be elementwise (they run on a ``(B, d_inner, L)`` layout, not the usual
    ``(B, L, d_inner)``); the mixer checks that before it calls this path.
    """
    if hidden_states.dim() != 3:
        raise ValueError(
            f"hidden_states must be (batch, seqlen, d_model), got shape {tuple(hidden_states.shape)}"
        )
    d_model = mixer.in_proj.weight.shape[1]
    if hidden_states.shape[-1] != d_model:
        raise ValueError(
            f"hidden_states has {hidden_states.shape[-1]} features, the mixer expects d_model={d_model}"
        )
    for what, dtype in (("input", hidden_states.dtype), ("parameter", mixer.in_proj.weight.dtype)):
        if dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"the mamba-ssm / causal-conv1d kernels do not support {what} dtype {dtype} "
                f"(supported: float32, float16, bfloat16); use backend='torch'"
            )
    autocast = torch.is_autocast_enabled(hidden_states.device.type)
    if not autocast and hidden_states.dtype != mixer.in_proj.weight.dtype:
        raise ValueError(
            f"hidden_states dtype {hidden_states.dtype} differs from the mixer's parameter dtype "
            f"{mixer.in_proj.weight.dtype}: cast one of them or run under torch.autocast"
        )
    d_conv, d_state = mixer.conv1d.weight.shape[-1], mixer.A_log.shape[1]
    if not 2 <= d_conv <= 4:
        raise ValueError(f"causal_conv1d supports d_conv between 2 and 4, got {d_conv}; use backend='torch'")
    if d_state > 256:
        raise ValueError(f"selective_scan supports d_state <= 256, got {d_state}; use backend='torch'")


def _is_silu(act: nn.Module) -> bool:
    return type(act) is nn.SiLU


def _apply(act: nn.Module, x: Tensor) -> Tensor:
    """Apply an activation and keep x's dtype (a module that upcasts under autocast is cast back:
    the scan kernel needs u, delta, B and C in one dtype)."""
    out = act(x)
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _scan_inputs(mixer: nn.Module, x: Tensor, seqlen: int) -> tuple[Tensor, Tensor, Tensor]:
    """x_proj and dt_proj (weight only: the bias goes into the kernel's fp32 softplus)."""
    dt_rank = mixer.dt_proj.weight.shape[1]
    d_state = mixer.A_log.shape[1]
    x_dbl = mixer.x_proj(x.transpose(1, 2).reshape(-1, x.shape[1]))  # (B*L, dt_rank + 2N)
    dt, B, C = torch.split(x_dbl, [dt_rank, d_state, d_state], dim=-1)
    # (d_inner, B*L) -> (B, d_inner, L) with L fastest, the layout the scan kernel reads
    dt = (mixer.dt_proj.weight @ dt.t()).view(-1, x.shape[0], seqlen).transpose(0, 1)
    B = B.view(x.shape[0], seqlen, d_state).transpose(1, 2).contiguous()
    C = C.view(x.shape[0], seqlen, d_state).transpose(1, 2).contiguous()
    return dt, B, C


def _forward(
    mixer: nn.Module, hidden_states: Tensor, return_states: bool, fuse_silu: bool
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    check_kernel_support(mixer, hidden_states)
    k = _kernels()
    _check_device(k, hidden_states)
    batch, seqlen, d_model = hidden_states.shape
    d_conv = mixer.conv1d.weight.shape[-1]
    # One matmul for x and z, written as (B, 2*d_inner, L) with L fastest (as mamba-ssm does).
    xz = mixer.in_proj.weight @ hidden_states.reshape(-1, d_model).t()
    xz = xz.view(-1, batch, seqlen).transpose(0, 1)
    if mixer.in_proj.bias is not None:
        xz = xz + mixer.in_proj.bias.to(xz.dtype)[:, None]
    x, z = xz.chunk(2, dim=1)

    conv_state = None
    if return_states:
        # the last d_conv inputs of the conv (zero-padded when the prompt is shorter)
        conv_state = F.pad(x.detach(), (d_conv - seqlen, 0)).contiguous()

    conv_silu = fuse_silu and _is_silu(mixer.act_conv)
    x = k.causal_conv1d_fn(
        x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation="silu" if conv_silu else None
    )
    if not conv_silu:
        x = _apply(mixer.act_conv, x)

    dt, B, C = _scan_inputs(mixer, x, seqlen)
    A = -torch.exp(mixer.A_log.float())  # (d_inner, N), fp32
    gate_silu = fuse_silu and _is_silu(mixer.act_gate)
    y = k.selective_scan_fn(
        x,
        dt,
        A,
        B,
        C,
        mixer.D.float(),
        z=z if gate_silu else None,
        delta_bias=mixer.dt_proj.bias.float(),
        delta_softplus=True,
        return_last_state=return_states,
    )
    ssm_state = None
    if return_states:
        y, ssm_state = y
    if not gate_silu:
        y = y * _apply(mixer.act_gate, z)
    out = mixer.out_proj(y.transpose(1, 2))
    if return_states:
        return out, conv_state, ssm_state.detach().float()
    return out


def mixer_forward_cuda(mixer: nn.Module, hidden_states: Tensor, *, fuse_silu: bool = True) -> Tensor:
    """Mixer forward ``(B, L, d_model) -> (B, L, d_model)`` on the CUDA kernels.

    ``fuse_silu=False`` runs SiLU as a separate module too (used by tests to check both routes).
    """
    return _forward(mixer, hidden_states, return_states=False, fuse_silu=fuse_silu)


def mixer_forward_with_states_cuda(
    mixer: nn.Module, hidden_states: Tensor, *, fuse_silu: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Prefill: ``(out, conv_state (B, d_inner, d_conv), ssm_state (B, d_inner, N) fp32)`` after the
    last token, ready for :func:`mixer_step_cuda`."""
    return _forward(mixer, hidden_states, return_states=True, fuse_silu=fuse_silu)


def mixer_step_cuda(
    mixer: nn.Module, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor, *, fuse_silu: bool = True
) -> Tensor:
    """One decoding step ``(B, 1, d_model) -> (B, 1, d_model)``; updates both states in place."""
    check_kernel_support(mixer, hidden_states)
    if hidden_states.shape[1] != 1:
        raise ValueError(f"step decodes one token at a time, got seqlen {hidden_states.shape[1]}")
    k = _kernels()
    _check_device(k, hidden_states)
    d_inner = mixer.in_proj.weight.shape[0] // 2
    expected = {
        "conv_state": (conv_state, mixer.conv1d.weight.shape[-1]),
        "ssm_state": (ssm_state, mixer.A_log.shape[1]),
    }
    for name, (state, last) in expected.items():
        if state.shape != (hidden_states.shape[0], d_inner, last):
            raise ValueError(
                f"{name} has shape {tuple(state.shape)}, expected {(hidden_states.shape[0], d_inner, last)}"
            )
    if conv_state.dtype not in KERNEL_DTYPES:
        raise ValueError(f"conv_state dtype {conv_state.dtype} is not supported by causal_conv1d_update")
    xz = mixer.in_proj(hidden_states.squeeze(1))  # (B, 2*d_inner)
    x, z = xz.chunk(2, dim=-1)
    conv_silu = fuse_silu and _is_silu(mixer.act_conv)
    x = k.causal_conv1d_update(  # the kernel wants x in the conv state's dtype
        x.to(conv_state.dtype),
        conv_state,
        mixer.conv1d.weight.squeeze(1),
        mixer.conv1d.bias,
        "silu" if conv_silu else None,
    ).to(xz.dtype)
    if not conv_silu:
        x = _apply(mixer.act_conv, x)
    dt_rank = mixer.dt_proj.weight.shape[1]
    d_state = mixer.A_log.shape[1]
    dt, B, C = torch.split(mixer.x_proj(x), [dt_rank, d_state, d_state], dim=-1)
    dt = F.linear(dt, mixer.dt_proj.weight)  # bias added inside the kernel, in fp32
    A = -torch.exp(mixer.A_log.float())
    gate_silu = fuse_silu and _is_silu(mixer.act_gate)
    y = k.selective_state_update(
        ssm_state,
        x,
        dt,
        A,
        B,
        C,
        mixer.D.float(),
        z=z if gate_silu else None,
        dt_bias=mixer.dt_proj.bias.float(),
        dt_softplus=True,
    )
    if not gate_silu:
        y = y * _apply(mixer.act_gate, z)
    return mixer.out_proj(y).unsqueeze(1)
