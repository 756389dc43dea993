"""The two activation slots a Mamba mixer has (after the causal conv, ``act_conv``; on the gate,
``act_gate``), as every Mamba mixer reports and saves them."""

from __future__ import annotations

from torch import nn

__all__ = ["InMixerActivations"]


class InMixerActivations:
    """Mixin for a mixer with ``act_conv`` / ``act_gate`` modules (one shared object, or two)."""

    act_conv: nn.Module
    act_gate: nn.Module

    def activation_slots(self) -> list[tuple[str, nn.Module, str]]:
        """``[(name, module, slot)]`` of the in-mixer activations: one ``act`` when a single module serves
        both slots, else ``act_conv`` (slot ``conv``) and ``act_gate`` (slot ``gate``)."""
        if self.act_conv is self.act_gate:
            return [("act", self.act_conv, "")]
        return [("act_conv", self.act_conv, "conv"), ("act_gate", self.act_gate, "gate")]

    def tied_activation_keys(self) -> dict[str, str]:
        """``act_gate.* -> act_conv.*`` for each parameter both slots hold (one module serving both, or a
        ``shared`` shape parameter of two): saved once, sharing restored."""
        conv = dict(self.act_conv.named_parameters())
        return {
            f"act_gate.{n}": f"act_conv.{n}" for n, p in self.act_gate.named_parameters() if conv.get(n) is p
        }
