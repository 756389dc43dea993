"""The base of every state-space mixer (Mamba-1's :class:`~mswelu.modules.mamba_mixer.MambaMixer`, Mamba-2's
:class:`~mswelu.modules.mamba2_mixer.Mamba2Mixer`, or a new one): what they share around their own math.

A state-space mixer maps (B, L, d_model) -> (B, L, d_model) with a causal depthwise conv, two activation slots
(``act_conv`` after the conv, ``act_gate`` on the gate: one shared module or two) and a recurrent state. The
base holds the settings checks, ``in_proj``, the conv, the slots, ``out_proj``, the input check, the one
decoding API and the dispatch between the PyTorch path and a kernel path. A subclass declares its settings
(``d_state_default``, ``own_defaults``) and writes its parameters and its math:

- ``build(**own)``: its own parameters (built after the conv and before ``out_proj``, the order every Mamba
  registers them in); ``reset_ssm_parameters(dt_min, dt_max, dt_init_floor)``: their init, run last;
- ``_forward_torch(hidden_states, want_states)`` -> ``(out, conv_state, ssm_state)`` (states None unless
  ``want_states``; they continue exactly where :meth:`step` would have left them after the same tokens);
- ``_step_torch(hidden_states, conv_state, ssm_state)``: one token, both states updated in place;
- for a kernel path (optional): ``kernels``, a module with ``kernels_available()``, ``mixer_fn(hidden_states,
  weights, (act_conv, act_gate), return_states)``, ``step_fn(hidden_states, conv_state, ssm_state, weights,
  (act_conv, act_gate))`` and ``Weights``, the named tuple of tensors they take (:meth:`weights` fills it).

Decoding (what :class:`~mswelu.modules.mixers.ssm_block.SSMBlock` and the model's cache use): ``forward(h,
state)`` with a dict ``state``: empty, it runs the prompt and fills ``state["conv"]`` and ``state["ssm"]``;
filled, it continues one token at a time from them (O(1) per token).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.modules.activations import epilogue_of
from mswelu.ops.backends import resolve_backend
from mswelu.ops.causal_conv import causal_conv1d, causal_conv1d_act, epilogue_fits

__all__ = ["SSMMixer", "check_positive_ints", "softplus_inverse_dt"]


def check_positive_ints(**values: Any) -> None:
    """Each value an integer >= 1 (a bool is not), else a ValueError naming it."""
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@torch.no_grad()
def softplus_inverse_dt(n: int, dt_min: float, dt_max: float, dt_init_floor: float) -> Tensor:
    """``n`` initial timesteps, log-uniform in [dt_min, dt_max] and floored, through softplus^-1 (the dt bias
    of both Mamba inits: ``softplus(result) == dt``)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(
        min=dt_init_floor
    )
    return dt + torch.log(-torch.expm1(-dt))


class SSMMixer(nn.Module):
    """A state-space mixer: the shared part (see the module docstring)."""

    #: the kernel module of its kernel path (None: PyTorch only)
    kernels: ClassVar[ModuleType | None] = None
    act_conv: nn.Module
    act_gate: nn.Module
    #: what the causal conv is (:data:`CONV_MODES`); a mixer that supports the controls sets it
    conv_mode: str = "learned"
    #: ``d_state`` where none is given
    d_state_default: ClassVar[int] = 16
    #: the subclass's own settings (the keyword arguments of :meth:`build`) with their defaults
    own_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        d_model: int,
        d_state: int | None = None,
        d_conv: int = 4,
        expand: float = 2,
        *,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        act_conv: nn.Module | None = None,
        act_gate: nn.Module | None = None,
        backend: str = "auto",
        layer_idx: int | None = None,
        **own: Any,
    ) -> None:
        """The settings (``own``: the subclass's), checked (:meth:`check_settings`); then ``in_proj``
        (d_model -> in_width), the depthwise causal ``conv1d`` over the conv's channels
        (:meth:`input_widths`), the two activation slots (SiLU, Mamba's own, where None), the subclass's
        parameters (:meth:`build`), ``out_proj`` and the subclass's init (:meth:`reset_ssm_parameters`)."""
        super().__init__()
        d_state = self.d_state_default if d_state is None else d_state
        own = {**self.own_defaults, **own}
        sizes = {"d_model": d_model, "d_state": d_state, "d_conv": d_conv, "expand": expand, **own}
        self.dt_init = {"dt_min": dt_min, "dt_max": dt_max, "dt_init_floor": dt_init_floor}
        self.check_settings(**sizes, **self.dt_init)
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.backend = backend
        self.layer_idx = layer_idx
        in_width, channels = self.input_widths(**sizes)
        self.in_proj = nn.Linear(d_model, in_width, bias=bias)
        self.conv1d = nn.Conv1d(
            channels, channels, kernel_size=d_conv, groups=channels, padding=d_conv - 1, bias=conv_bias
        )
        self.act_conv = act_conv if act_conv is not None else nn.SiLU()
        self.act_gate = act_gate if act_gate is not None else nn.SiLU()
        self.build(**own)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        self.reset_ssm_parameters(**self.dt_init)

    @classmethod
    def check_settings(
        cls,
        *,
        d_model: int,
        d_state: int,
        d_conv: int,
        expand: float,
        dt_min: float,
        dt_max: float,
        dt_init_floor: float,
        **own: Any,
    ) -> None:
        """A ValueError naming the first bad setting; a subclass checks its own settings (``own``) too. The
        one validation of a mixer's settings: the mixer calls it, and so does the config, through the
        mixer's registration (:meth:`~mswelu.modules.mixers.ssm_block.SSMBlock.check_config`)."""
        check_positive_ints(d_model=d_model, d_state=d_state, d_conv=d_conv)
        if not (isinstance(expand, (int, float)) and expand > 0) or int(expand * d_model) < 1:
            raise ValueError(f"expand must be > 0 (d_inner = expand * d_model >= 1), got {expand!r}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if dt_init_floor < 0:
            raise ValueError(f"dt_init_floor must be >= 0, got {dt_init_floor}")

    @classmethod
    def input_widths(cls, **settings: Any) -> tuple[int, int]:
        """``(in_width, conv_channels)`` for these settings: ``in_proj``'s output rows, the conv's (and
        ``act_conv``'s) channels."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the subclass's parameters and math
    def build(self, **own: Any) -> None:
        """Its own parameters, from its own settings (:attr:`own_defaults` filled in)."""

    def reset_ssm_parameters(self, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """Its own parameters' init (the dt init settings are the shared ones)."""

    def _forward_torch(self, hidden_states: Tensor, want_states: bool = False) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def _step_torch(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        raise NotImplementedError

    def weights(self) -> Any:
        """This mixer's tensors and settings as its kernel functions take them (``kernels.Weights``): each
        field read off the mixer by name, an attribute (``A_log``, ``n_groups``) or a submodule's
        (``in_proj_weight``: ``in_proj.weight``, ``norm_eps``: ``norm.eps``)."""
        fields = []
        for name in self.kernels.Weights._fields:
            if hasattr(self, name):
                fields.append(getattr(self, name))
            else:
                module, attr = name.rsplit("_", 1)
                fields.append(getattr(getattr(self, module), attr))
        return self.kernels.Weights(*fields)

    # ------------------------------------------------------------------ forward and decoding
    def forward(self, hidden_states: Tensor, state: dict[str, Tensor] | None = None) -> Tensor:
        """(B, L, d_model) -> (B, L, d_model); ``state``: None (no decoding), an empty dict (the prompt:
        filled with ``conv`` and ``ssm``) or a filled one (continued a token at a time, updated in place)."""
        self._check_input(hidden_states)
        if state is None:
            if self._on_kernels(hidden_states):
                return self.forward_cuda(hidden_states)
            return self._forward_torch(hidden_states)[0]
        if not state:
            out, state["conv"], state["ssm"] = self.forward_with_states(hidden_states)
            return out
        conv, ssm = state["conv"], state["ssm"]
        return torch.cat(
            [self.step(hidden_states[:, t : t + 1], conv, ssm) for t in range(hidden_states.shape[1])], 1
        )

    def forward_with_states(self, hidden_states: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Prefill: ``(out, conv_state, ssm_state)`` after the last token (ssm_state in fp32)."""
        self._check_input(hidden_states)
        if self._on_kernels(hidden_states):
            return self.forward_cuda(hidden_states, return_states=True)
        return self._forward_torch(hidden_states, want_states=True)

    def step(self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One token: (B, 1, d_model) -> (B, 1, d_model); updates ``conv_state``, ``ssm_state`` in place."""
        self._check_input(hidden_states)
        if hidden_states.shape[1] != 1:
            raise ValueError(f"step takes one token at a time, got length {hidden_states.shape[1]}")
        if self._on_kernels(hidden_states):
            return self.step_cuda(hidden_states, conv_state, ssm_state)
        return self._step_torch(hidden_states, conv_state, ssm_state)

    def _conv_act(self, x: Tensor) -> Tensor:
        """``act_conv(conv1d(x))`` for x (B, channels, L), in that layout (a view of a channels-last tensor on
        the CPU kernels): in one kernel pass where the activation registers a kernel form (the conv's
        epilogue, the same bits as the two apart), else the conv, then the activation module."""
        weight, bias = self.conv1d.weight.squeeze(1), self.conv1d.bias
        if self.conv_mode != "residual":
            epilogue = epilogue_of(self.act_conv)
            if epilogue is not None and epilogue_fits(x, weight, epilogue):
                return causal_conv1d_act(x, weight, bias, epilogue)
        x_conv = causal_conv1d(x, weight, bias)
        if self.conv_mode == "residual":
            x_conv = x_conv + x
        return self.act_conv(x_conv.transpose(1, 2)).transpose(1, 2)  # elementwise, in x_conv's layout

    def _conv_state(self, x: Tensor) -> Tensor:
        """The conv state after a prompt whose conv inputs are x (B, channels, L): the last d_conv inputs,
        zero-padded on the left."""
        return F.pad(x, (self.d_conv - x.shape[-1], 0)).detach().clone()

    def _conv_step(self, x: Tensor, conv_state: Tensor, dtype: torch.dtype) -> Tensor:
        """One token's conv input x (B, channels) into ``conv_state`` (in place), and ``act_conv`` of the
        conv's output, in ``dtype``."""
        conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
        conv_state[:, :, -1] = x.to(conv_state.dtype)
        out = (conv_state * self.conv1d.weight.squeeze(1).to(conv_state.dtype)).sum(-1)
        if self.conv1d.bias is not None:
            out = out + self.conv1d.bias.to(out.dtype)
        if self.conv_mode == "residual":
            out = out + conv_state[:, :, -1]  # the current token's conv input
        return self.act_conv(out.to(dtype))

    # ------------------------------------------------------------------ the kernel path
    def _on_kernels(self, hidden_states: Tensor) -> bool:
        """Whether this call runs on the CUDA kernels (``conv_mode="residual"`` has none: PyTorch ops)."""
        if self.conv_mode == "residual":
            return False
        probe = self.kernels.kernels_available if self.kernels is not None else lambda: (False, "no kernels")
        return resolve_backend(self.backend, hidden_states, probe) == "cuda"

    def _kernel_acts(self, fuse_silu: bool) -> tuple[Any, Any]:
        """The two activations for the kernel path: ``"silu"`` (the kernels' fused SiLU) for an ``nn.SiLU``
        when ``fuse_silu``, else the module; only registered elementwise activations pass (the kernels apply
        them on their own layouts)."""
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
        """The forward (or, with ``return_states``, the prefill) on the CUDA kernels; ``fuse_silu=False`` runs
        SiLU as a separate module (tests check both routes)."""
        return self.kernels.mixer_fn(
            hidden_states, self.weights(), self._kernel_acts(fuse_silu), return_states
        )

    def step_cuda(
        self, hidden_states: Tensor, conv_state: Tensor, ssm_state: Tensor, fuse_silu: bool = True
    ) -> Tensor:
        """One decoding step on the CUDA kernels; updates both states in place."""
        acts = self._kernel_acts(fuse_silu)
        return self.kernels.step_fn(hidden_states, conv_state, ssm_state, self.weights(), acts)

    # ------------------------------------------------------------------ slots, checks, repr
    def activation_slots(self) -> list[tuple[str, nn.Module, str]]:
        """``[(name, module, slot)]`` of the in-mixer activations: one ``act`` when a single module serves
        both slots, else ``act_conv`` (slot ``conv``) and ``act_gate`` (slot ``gate``)."""
        if self.act_conv is self.act_gate:
            return [("act", self.act_conv, "")]
        return [("act_conv", self.act_conv, "conv"), ("act_gate", self.act_gate, "gate")]

    def _check_input(self, hidden_states: Tensor) -> None:
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(
                f"hidden_states must be (batch, length, d_model={self.d_model}), "
                f"got {tuple(hidden_states.shape)}"
            )
        if hidden_states.shape[1] < 1:
            raise ValueError("hidden_states must hold at least one token")

    def _settings_repr(self) -> str:
        """The subclass's own settings for :meth:`extra_repr` (``"name=value, "`` each)."""
        return ""

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_inner={self.d_inner}, d_state={self.d_state}, d_conv={self.d_conv}, "
            f"{self._settings_repr()}shared_act={self.act_conv is self.act_gate}, backend={self.backend!r}"
        )
