"""Where a model's activations with shape parameters sit: one :class:`ShapeSlot` record per slot.

The model builds these records (``MsweluForCausalLM.shape_slots()``); the trainer writes them into the
run's ``config.json`` (``_shape_slots``) and logs the slots' values under their ``name``; analysis, plots and
claims read the group, layer and slot from the records, never from the name. :func:`legacy_slot` reads the
names of runs written before the records existed (it inverts the naming of that time, in one place).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["GROUPS", "ShapeSlot", "legacy_slot", "slot_records"]

#: slot groups, in display order: inside a sequence mixer, after it (before the residual add), in the dense
#: stack, in an attention block's MLP
GROUPS = ("in-mixer", "post-mixer", "dense", "attention", "other")


@dataclass(frozen=True)
class ShapeSlot:
    """One activation slot with shape parameters.

    Attributes:
        name: its key in logs and tables (``blocks.0.mixer.act``, ``dense.2.act``).
        group: one of :data:`GROUPS`.
        layer: the block (or dense layer) index; None where there is none.
        slot: which slot of a group with several (``conv``, ``gate``), ``""`` otherwise.
        activation: the registered activation kind (``swelu``, ``swish``, ...).
        params: its shape parameter names; ``learnable`` those that train.
        mixer: the sequence mixer of the block it sits in (``mamba1``, ``mamba2``, ``attention``), or ``""``.
        module: the module itself (not serialised).
    """

    name: str
    group: str
    layer: int | None
    slot: str = ""
    activation: str = ""
    params: tuple[str, ...] = ()
    learnable: tuple[str, ...] = ()
    mixer: str = ""
    module: nn.Module | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "layer": self.layer,
            "slot": self.slot,
            "activation": self.activation,
            "params": list(self.params),
            "learnable": list(self.learnable),
            "mixer": self.mixer,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShapeSlot:
        return cls(
            name=str(d["name"]),
            group=str(d.get("group", "other")),
            layer=None if d.get("layer") is None else int(d["layer"]),
            slot=str(d.get("slot") or ""),
            activation=str(d.get("activation") or ""),
            params=tuple(d.get("params") or ()),
            learnable=tuple(d.get("learnable") or ()),
            mixer=str(d.get("mixer") or ""),
        )


_LEGACY = re.compile(
    r"^(?:blocks\.(?P<block>\d+)\.(?P<tail>mixer\.act(?:_conv|_gate)?|post_act|mlp\.act)|dense\.(?P<dense>\d+)\.act)$"
)


def legacy_slot(name: str) -> ShapeSlot:
    """The record of a slot named by a run written before ``_shape_slots`` existed (SWELU slots of Mamba-1
    and attention blocks and the dense stack); a name it does not know gets group ``other``."""
    m = _LEGACY.match(name)
    if m is None:
        return ShapeSlot(name, "other", None, activation="swelu", params=("k",))
    if m["dense"] is not None:
        return ShapeSlot(name, "dense", int(m["dense"]), activation="swelu", params=("k",))
    layer, tail = int(m["block"]), m["tail"]
    if tail.startswith("mixer"):
        slot = {"mixer.act_conv": "conv", "mixer.act_gate": "gate"}.get(tail, "")
        return ShapeSlot(name, "in-mixer", layer, slot, "swelu", ("k",), mixer="mamba1")
    group = "post-mixer" if tail == "post_act" else "attention"
    return ShapeSlot(
        name, group, layer, "", "swelu", ("k",), mixer="mamba1" if group == "post-mixer" else "attention"
    )


def slot_records(records: Any, names: Any = ()) -> dict[str, ShapeSlot]:
    """``{name: ShapeSlot}`` from a run's ``_shape_slots`` list (dicts), with :func:`legacy_slot` for any of
    ``names`` it lacks (a run from before the records, or a name logged without one)."""
    out = {d["name"]: ShapeSlot.from_dict(d) for d in (records or []) if isinstance(d, dict) and "name" in d}
    for name in names:
        if str(name) not in out:
            out[str(name)] = legacy_slot(str(name))
    return out
