"""What the state-space mixers' kernel paths share (:mod:`mswelu.ops.mamba_kernels` for Mamba-1,
:mod:`mswelu.ops.mamba2_kernels` for Mamba-2): binding their entry points, the checks before a kernel runs,
and the causal conv with an activation slot after it, in the forward and in the decoding step.

A kernel module keeps its entry points as module-level names (``None`` until first use) through a
:class:`KernelPath`, which fills the unset ones from the installed packages
(:func:`mswelu.ops.backends.import_kernels`, the one probe), so tests can bind the packages' pure-PyTorch
references to the same names and run the same code on CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mswelu.ops import backends

__all__ = [
    "KERNEL_DTYPES",
    "SILU",
    "Activation",
    "Activations",
    "KernelPath",
    "Output",
    "apply_activation",
    "check_step",
    "conv_forward",
    "conv_step",
    "with_states",
]

#: dtypes the kernels are built for (mamba-ssm and causal-conv1d: fp32, fp16, bf16)
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

#: An activation: a callable on tensors, or ``"silu"`` for the kernels' fused SiLU.
Activation = Callable[[Tensor], Tensor] | str
#: the two slots' activations, ``(act_conv, act_gate)``
Activations = tuple[Activation, Activation]
#: both slots SiLU, fused into the kernels
SILU: Activations = ("silu", "silu")
#: a kernel forward's result: the output, or with its states ``(out, conv_state, ssm_state)``
Output = Tensor | tuple[Tensor, Tensor, Tensor]


class KernelPath:
    """The entry points of kernel path ``path`` (``backends.KERNEL_SOURCES[path]``), held as module-level
    names of its kernel module (``namespace``: that module's globals), None until first use."""

    def __init__(self, path: str, namespace: dict[str, Any]) -> None:
        self.path = path
        self.namespace = namespace
        self.package_fns: set[int] = set()  # ids of entry points loaded from the packages (need GPU tensors)
        namespace.update(dict.fromkeys(backends.KERNEL_SOURCES[path]))

    def available(self) -> tuple[bool, str]:
        """Whether this path can import what it calls: ``(ok, why)``, probed once."""
        return backends.kernels_available(self.path)

    def bind(self, hidden_states: Tensor, weight: Tensor, d_conv: int) -> SimpleNamespace:
        """The entry points (the unset ones imported from the packages), once the kernels are known to run a
        mixer whose ``in_proj`` weight is ``weight`` on this input: a ``ValueError`` naming the problem (its
        shape, the dtypes, mixed dtypes without autocast, the conv width, CPU tensors for entry points from
        the packages) otherwise. The activations must be elementwise: the mixer checks that."""
        names = backends.KERNEL_SOURCES[self.path]
        if any(self.namespace[name] is None for name in names):
            found = backends.import_kernels(self.path)
            for name in names:
                if self.namespace[name] is None:
                    self.namespace[name] = found[name]
            self.package_fns.update(map(id, found.values()))
        k = SimpleNamespace(**{name: self.namespace[name] for name in names})
        _check_support(hidden_states, weight, d_conv)
        if not hidden_states.is_cuda and any(id(fn) in self.package_fns for fn in vars(k).values()):
            raise ValueError(
                f"the kernels need tensors on a GPU, got hidden_states on {hidden_states.device}; "
                "move the model to 'cuda' or use backend='torch'"
            )
        return k


def _check_support(hidden_states: Tensor, weight: Tensor, d_conv: int) -> None:
    d_model = weight.shape[1]
    if hidden_states.dim() != 3 or hidden_states.shape[-1] != d_model:
        raise ValueError(
            f"hidden_states must be (batch, seqlen, d_model={d_model}), got {tuple(hidden_states.shape)}"
        )
    for what, dtype in (("input", hidden_states.dtype), ("parameter", weight.dtype)):
        if dtype not in KERNEL_DTYPES:
            raise ValueError(
                f"the mamba-ssm / causal-conv1d kernels do not support {what} dtype {dtype} "
                f"(supported: float32, float16, bfloat16); use backend='torch'"
            )
    if not torch.is_autocast_enabled(hidden_states.device.type) and hidden_states.dtype != weight.dtype:
        raise ValueError(
            f"hidden_states dtype {hidden_states.dtype} differs from the mixer's parameter dtype "
            f"{weight.dtype}: cast one of them or run under torch.autocast"
        )
    if not 2 <= d_conv <= 4:
        raise ValueError(f"causal_conv1d supports d_conv between 2 and 4, got {d_conv}; use backend='torch'")


def check_step(hidden_states: Tensor, states: dict[str, tuple[Tensor, tuple[int, ...]]]) -> None:
    """One token, each state of its expected shape (``{name: (state, shape)}``), a conv state the update
    kernel supports."""
    if hidden_states.shape[1] != 1:
        raise ValueError(f"step decodes one token at a time, got seqlen {hidden_states.shape[1]}")
    for name, (state, shape) in states.items():
        if state.shape != shape:
            raise ValueError(f"{name} has shape {tuple(state.shape)}, expected {shape}")
    conv_state = states["conv_state"][0]
    if conv_state.dtype not in KERNEL_DTYPES:
        raise ValueError(f"conv_state dtype {conv_state.dtype} is not supported by causal_conv1d_update")


def apply_activation(act: Activation, x: Tensor) -> Tensor:
    """Apply an activation and keep x's dtype (one that upcasts under autocast is cast back: the scan
    kernels read their inputs in one dtype)."""
    out = act(x)  # type: ignore[operator]
    return out if out.dtype == x.dtype else out.to(x.dtype)


def conv_forward(
    k: SimpleNamespace, x: Tensor, weight: Tensor, bias: Tensor | None, act: Activation, return_state: bool
) -> tuple[Tensor, Tensor | None]:
    """``act(causal_conv1d(x))`` on x (B, channels, L), and with ``return_state`` the conv state after the
    last token (the last d_conv inputs, zero-padded on the left when the prompt is shorter)."""
    d_conv, seqlen = weight.shape[-1], x.shape[-1]
    state = F.pad(x.detach(), (d_conv - seqlen, 0)).contiguous() if return_state else None
    silu = act == "silu"
    out = k.causal_conv1d_fn(x, weight.squeeze(1), bias, activation="silu" if silu else None)
    return (out if silu else apply_activation(act, out)), state


def conv_step(
    k: SimpleNamespace, x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None, act: Activation
) -> Tensor:
    """One token (B, channels) through the conv's update kernel (``conv_state`` updated in place) and ``act``;
    the result in x's dtype."""
    silu = act == "silu"
    out = k.causal_conv1d_update(  # the kernel wants x in the conv state's dtype
        x.to(conv_state.dtype), conv_state, weight.squeeze(1), bias, "silu" if silu else None
    ).to(x.dtype)
    return out if silu else apply_activation(act, out)


def with_states(out: Tensor, conv_state: Tensor | None, ssm_state: Tensor | None) -> Output:
    """A kernel forward's result: ``out``, or with the prefill's states ``(out, conv_state, ssm_state fp32)``
    when it kept them (``ssm_state`` not None)."""
    return out if ssm_state is None else (out, conv_state, ssm_state.detach().float())
