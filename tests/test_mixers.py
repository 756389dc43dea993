"""The mixer registry: every registered mixer's closed-form parameter count equals a real build, the model
names no mixer kind, nothing outside the SWELU files names SWELU's internals, and a new mixer is one
registration (a test registers one and trains it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from mswelu.configuration import MambaSWELUConfig
from mswelu.modeling import MambaSWELUForCausalLM, parameter_count
from mswelu.modules.mixers import MIXERS, mixer_spec, register_mixer
from mswelu.modules.mixers.registry import Mixer
from mswelu.modules.mixers.ssm_block import SSMBlock

PACKAGE = Path(__file__).resolve().parents[1] / "mswelu"


def _configs(mixer: str) -> list[MambaSWELUConfig]:
    extra = {"d_state": 8, "headdim": 16} if mixer == "mamba2" else {}
    pattern = "A" if mixer == "attention" else "M"
    base = {"mixer": "mamba1" if mixer == "attention" else mixer, "layer_pattern": pattern, **extra}
    return [
        MambaSWELUConfig.from_preset("tiny", **base),
        MambaSWELUConfig.from_preset("tiny", **base, activation="silu", norm="rmsnorm", proj_bias=True),
        MambaSWELUConfig.from_preset("tiny", **base, mixer_k_sharing="separate", conv_bias=False),
        MambaSWELUConfig.from_preset(
            "tiny", **base, activation="swish", post_mixer_act=False, attn_mlp_expand=0
        ),
    ]


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_closed_form_block_counts_equal_a_real_build(mixer: str) -> None:
    for config in _configs(mixer):
        block = mixer_spec(mixer).block(config, 0)
        assert block.parameter_count(config) == sum(p.numel() for p in block.parameters()), config


def _code(path: Path) -> tuple[set[str], set[str], ast.Module]:
    """(string constants that are not docstrings, identifiers, the tree) of a module: code, not prose."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and ast.get_docstring(node) is not None
    }
    strings = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    }
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    names |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    return strings, names, tree


def test_modeling_names_no_mixer_kind() -> None:
    """No mixer name as a string, no mixer class as a name in ``modeling.py``'s code (prose aside)."""
    strings, names, _ = _code(PACKAGE / "modeling.py")
    for mixer in MIXERS:
        assert not any(re.search(rf"\b{mixer}\b", text) for text in strings), mixer
    for cls in (
        "MambaMixer",
        "Mamba2Mixer",
        "CausalSelfAttention",
        "Mamba1Block",
        "Mamba2Block",
        "AttentionBlock",
    ):
        assert cls not in names, cls


def test_nothing_outside_the_swelu_files_names_its_internals() -> None:
    """SWELU's raw parameter and type are read through the activation registry everywhere else."""
    allowed = {PACKAGE / "modules" / "swelu.py", PACKAGE / "modules" / "activations" / "swelu.py"}
    allowed |= set((PACKAGE / "ops").glob("*swelu*")) | {PACKAGE / "bench" / "swelu.py"}
    for path in sorted(set(PACKAGE.rglob("*.py")) - allowed):
        strings, names, tree = _code(path)
        assert "k_raw" not in names and not any("k_raw" in t for t in strings), path
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "isinstance":
                assert not any(isinstance(n, ast.Name) and n.id == "SWELU" for n in ast.walk(call)), path


class _ConvBlock(SSMBlock):
    """A toy sequence mixer for the test: a causal depthwise conv with a gate (no state-space part)."""

    mixer_name = "toyconv"

    class _Mixer(nn.Module):
        def __init__(self, d: int, act_conv: nn.Module, act_gate: nn.Module) -> None:
            super().__init__()
            self.in_proj = nn.Linear(d, 2 * d, bias=False)
            self.conv = nn.Conv1d(d, d, 3, groups=d, padding=2)
            self.out_proj = nn.Linear(d, d, bias=False)
            self.act_conv, self.act_gate = act_conv, act_gate

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            x, z = self.in_proj(h).chunk(2, -1)
            x = self.conv(x.transpose(1, 2))[..., : h.shape[1]].transpose(1, 2)
            return self.out_proj(self.act_conv(x) * self.act_gate(z))

        def activation_slots(self):
            return [("act_conv", self.act_conv, "conv"), ("act_gate", self.act_gate, "gate")]

    @staticmethod
    def build_mixer(config, layer_idx, act_conv, act_gate):
        return _ConvBlock._Mixer(config.d_model, act_conv, act_gate)

    @staticmethod
    def mixer_parameter_count(config) -> int:
        d = config.d_model
        return 2 * d * d + 3 * d + d + d * d

    @staticmethod
    def mixer_flops_per_token(config, seq_len: int) -> float:
        d = config.d_model
        return float(2 * d * 2 * d + 2 * 3 * d + 2 * d * d)


def test_a_new_mixer_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MIXERS, "toyconv", Mixer("toyconv", "M", _ConvBlock, "test mixer"))
    with pytest.raises(ValueError, match="already registered"):
        register_mixer(MIXERS["toyconv"])
    config = MambaSWELUConfig.from_preset("tiny", mixer="toyconv", mixer_k_sharing="separate")
    model = MambaSWELUForCausalLM(config)
    assert parameter_count(config) == sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 512, (2, 9))
    model(ids, labels=ids).loss.backward()
    slots = [s for s in model.shape_slots() if s.group == "in-mixer"]
    assert [s.slot for s in slots] == ["conv", "gate"] * 2 and {s.mixer for s in slots} == {"toyconv"}
    with pytest.raises(ValueError, match="unknown mixer 'mamba3'"):
        MambaSWELUConfig.from_preset("tiny", mixer="mamba3")
