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
:func:`import_mamba2_kernels`; tests bind the packages' pure-PyTorch references (same signatures) to them
to run exactly this code on CPU. :class:`Mamba2Weights` names a mixer's tensors and the settings their
shapes do not determine; :class:`mswelu.modules.mamba2_mixer.Mamba2Mixer` passes its own.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.ops.gated_norm import gated_rms_norm
from mswelu.ops.ssd import discretize_dt

# The five kernel entry points. ``None`` = resolve from the installed packages on first use;
# tests assign reference functions here.
causal_conv1d_fn: Any = None
causal_conv1d_update: Any = None
mamba_chunk_scan_combined: Any = None
selective_state_update: Any = None
rmsnorm_fn: Any = None

#: dtypes the kernels are built for (fp32, fp16, bf16).
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: An activation: a callable on tensors, or ``"silu"`` for the kernels' fused SiLU.
Activation = Callable[[Tensor], Tensor] | str

# entry point -> (module, attribute, compiled extension that module needs at call time or None)
_SOURCES = {
    "causal_conv1d_fn": ("causal_conv1d", "causal_conv1d_fn", "causal_conv1d_cuda"),
    "causal_conv1d_update": ("causal_conv1d", "causal_conv1d_update", "causal_conv1d_cuda"),
    "mamba_chunk_scan_combined": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined", None),
    "selective_state_update": ("mamba_ssm.ops.triton.selective_state_update", "selective_state_update", None),
    "rmsnorm_fn": ("mamba_ssm.ops.triton.layernorm_gated", "rmsnorm_fn", None),
}
_package_fns: set[int] = set()  # ids of entry points loaded from the packages (they need GPU tensors)


class Mamba2Weights(NamedTuple):
    """The tensors of one Mamba-2 mixer (mamba-ssm / transformers names and shapes; biases may be None)
    and the settings their shapes do not determine."""

    in_proj_weight: Tensor  # (2 d_inner + 2 n_groups N + nheads, d_model): [z, x, B, C, dt]
    in_proj_bias: Tensor | None
    conv_weight: Tensor  # (d_inner + 2 n_groups N, 1, d_conv)
    conv_bias: Tensor | None
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


def import_mamba2_kernels() -> dict[str, Any]:
    """The five entry points by name, from the installed packages; a RuntimeError naming each one that
    does not import, and why, otherwise."""
    found, missing = {}, []
    for name, (module, attr, compiled) in _SOURCES.items():
        try:
            if compiled is not None:
                importlib.import_module(compiled)  # the wrappers import without it and fail only when called
            found[name] = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # ImportError, or an undefined-symbol OSError from a mismatched build
            missing.append(f"{name} (from {module}: {type(exc).__name__}: {exc})")
    if missing:
        raise RuntimeError(
            "the Mamba-2 kernel path needs the mamba-ssm and causal-conv1d kernels; these do not import: "
            + "; ".join(missing)
            + ". Install them (README, 'GPU') or use backend='torch'"
        )
    return found


@functools.lru_cache(maxsize=1)
def kernels_available() -> tuple[bool, str]:
    """(True, "") when the Mamba-2 kernel path can import everything it calls, else (False, why); probed
    once (what :func:`mswelu.ops.backends.resolve_backend` asks for a Mamba-2 mixer)."""
    try:
        import_mamba2_kernels()
    except RuntimeError as exc:
        return False, str(exc)
    return True, ""


def _kernels() -> SimpleNamespace:
    """The five entry points; imports the packages for the ones not already bound."""
    if any(globals()[name] is None for name in _SOURCES):
        found = import_mamba2_kernels()
        for name in _SOURCES:
            if globals()[name] is None:
                globals()[name] = found[name]
        _package_fns.update(map(id, found.values()))
    return SimpleNamespace(**{name: globals()[name] for name in _SOURCES})


def check_kernel_support(w: Mamba2Weights, hidden_states: Tensor) -> None:
    """Raise a ``ValueError`` naming the problem if the kernels cannot run these weights on this input.
    (The activations must be elementwise: the caller checks that.)"""
    d_model = w.in_proj_weight.shape[1]
    if hidden_states.dim() != 3 or hidden_states.shape[-1] != d_model:
        raise ValueError(
            f"hidden_states must be (batch, seqlen, d_model={d_model}), got {tuple(hidden_states.shape)}"
        )
    for what, dtype in (("input", hidden_states.dtype), ("parameter", w.in_proj_weight.dtype)):
        if dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"the mamba-ssm / causal-conv1d kernels do not support {what} dtype {dtype} "
                f"(supported: float32, float16, bfloat16); use backend='torch'"
            )
    if (
        not torch.is_autocast_enabled(hidden_states.device.type)
        and hidden_states.dtype != w.in_proj_weight.dtype
    ):
        raise ValueError(
            f"hidden_states dtype {hidden_states.dtype} differs from the mixer's parameter dtype "
            f"{w.in_proj_weight.dtype}: cast one of them or run under torch.autocast"
        )
    d_conv = w.conv_weight.shape[-1]
    if not 2 <= d_conv <= 4:
        raise ValueError(f"causal_conv1d supports d_conv between 2 and 4, got {d_conv}; use backend='torch'")
    k = _kernels()
    if not hidden_states.is_cuda and any(id(fn) in _package_fns for fn in vars(k).values()):
        raise ValueError(
            f"the Mamba-2 kernels need tensors on a GPU, got hidden_states on {hidden_states.device}; "
            "move the model to 'cuda' or use backend='torch'"
        )


def _apply(act: Activation, x: Tensor) -> Tensor:
    """Apply an activation and keep x's dtype (an activation that upcasts under autocast is cast back:
    the scan kernel reads x, B and C in one dtype)."""
    out = act(x)  # type: ignore[operator]
    return out if out.dtype == x.dtype else out.to(x.dtype)


def _sizes(w: Mamba2Weights) -> tuple[int, int, int, int]:
    """(d_inner, nheads, headdim, d_state) from the tensors' shapes and ``n_groups``."""
    d_inner = w.out_proj_weight.shape[1]
    nheads = w.A_log.shape[0]
    d_state = (w.conv_weight.shape[0] - d_inner) // (2 * w.n_groups)
    return d_inner, nheads, d_inner // nheads, d_state


def _gate_and_project(
    k: SimpleNamespace, w: Mamba2Weights, y: Tensor, z: Tensor, act_gate: Activation
) -> Tensor:
    """out_proj(weight * rmsnorm_groups(y * act_gate(z))), with the fused Triton norm for ``"silu"``."""
    group_size = y.shape[-1] // w.n_groups
    if act_gate == "silu":
        y = k.rmsnorm_fn(
            y, w.norm_weight, None, z=z, eps=w.norm_eps, group_size=group_size, norm_before_gate=False
        )
    else:
        y = gated_rms_norm(y, z, w.norm_weight, group_size, w.norm_eps, act_gate)  # type: ignore[arg-type]
    return F.linear(y, w.out_proj_weight, w.out_proj_bias)


def mamba2_mixer_fn(
    hidden_states: Tensor,
    w: Mamba2Weights,
    act_conv: Activation = "silu",
    act_gate: Activation = "silu",
    return_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Mixer forward ``(B, L, d_model) -> (B, L, d_model)`` on the kernels. With ``return_states`` (prefill):
    ``(out, conv_state (B, conv_dim, d_conv), ssm_state (B, nheads, headdim, N) fp32)`` after the last token,
    ready for :func:`mamba2_step_fn`."""
    check_kernel_support(w, hidden_states)
    k = _kernels()
    batch, seqlen, _ = hidden_states.shape
    d_inner, nheads, headdim, d_state = _sizes(w)
    conv_dim, d_conv = w.conv_weight.shape[0], w.conv_weight.shape[-1]
    zxbcdt = F.linear(hidden_states, w.in_proj_weight, w.in_proj_bias)
    z, xBC, dt = torch.split(zxbcdt, [d_inner, conv_dim, nheads], dim=-1)
    # (B, conv_dim, L), channels-last. causal_conv1d reads that layout in place only when the channel count
    # and the strides are multiples of 8 (its TORCH_CHECKs); otherwise it needs L contiguous.
    xBC = xBC.transpose(1, 2)
    if not (conv_dim % 8 == 0 and xBC.stride(0) % 8 == 0 and xBC.stride(2) % 8 == 0):
        xBC = xBC.contiguous()
    conv_state = None
    if return_states:  # the last d_conv inputs of the conv (zero-padded when the prompt is shorter)
        conv_state = F.pad(xBC.detach(), (d_conv - seqlen, 0)).contiguous()
    conv_silu = act_conv == "silu"
    xBC = k.causal_conv1d_fn(
        xBC, w.conv_weight.squeeze(1), w.conv_bias, activation="silu" if conv_silu else None
    ).transpose(1, 2)
    if not conv_silu:
        xBC = _apply(act_conv, xBC)
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
    ssm_state = None
    if return_states:
        y, ssm_state = y
    out = _gate_and_project(k, w, y.reshape(batch, seqlen, d_inner), z, act_gate)
    if return_states:
        return out, conv_state, ssm_state.detach().float()
    return out


def mamba2_step_fn(
    hidden_states: Tensor,
    conv_state: Tensor,
    ssm_state: Tensor,
    w: Mamba2Weights,
    act_conv: Activation = "silu",
    act_gate: Activation = "silu",
) -> Tensor:
    """One decoding step ``(B, 1, d_model) -> (B, 1, d_model)``; updates both states in place."""
    check_kernel_support(w, hidden_states)
    if hidden_states.shape[1] != 1:
        raise ValueError(f"step decodes one token at a time, got seqlen {hidden_states.shape[1]}")
    k = _kernels()
    batch = hidden_states.shape[0]
    d_inner, nheads, headdim, d_state = _sizes(w)
    conv_dim, d_conv = w.conv_weight.shape[0], w.conv_weight.shape[-1]
    for name, state, shape in (
        ("conv_state", conv_state, (batch, conv_dim, d_conv)),
        ("ssm_state", ssm_state, (batch, nheads, headdim, d_state)),
    ):
        if state.shape != shape:
            raise ValueError(f"{name} has shape {tuple(state.shape)}, expected {shape}")
    if conv_state.dtype not in KERNEL_DTYPES:
        raise ValueError(f"conv_state dtype {conv_state.dtype} is not supported by causal_conv1d_update")
    zxbcdt = F.linear(hidden_states.squeeze(1), w.in_proj_weight, w.in_proj_bias)  # (B, d_in_proj)
    z, xBC, dt = torch.split(zxbcdt, [d_inner, conv_dim, nheads], dim=-1)
    conv_silu = act_conv == "silu"
    xBC = k.causal_conv1d_update(  # the kernel wants x in the conv state's dtype
        xBC.to(conv_state.dtype),
        conv_state,
        w.conv_weight.squeeze(1),
        w.conv_bias,
        "silu" if conv_silu else None,
    ).to(zxbcdt.dtype)
    if not conv_silu:
        xBC = _apply(act_conv, xBC)
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
