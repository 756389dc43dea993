"""The mixer registry: every registered mixer's closed-form parameter count equals a real build, its settings
are checked by its registration (the mixer's own checks, through the config), the model and the memory plan
name no mixer kind, nothing outside the SWELU files names SWELU's internals. A new mixer defined and
registered inside a test: ``tests/test_mixer_recipe.py``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mswelu.models.configuration import MsweluConfig
from mswelu.modules.mixers import MIXERS, mixer_spec

PACKAGE = Path(__file__).resolve().parents[1] / "mswelu"


def _configs(mixer: str) -> list[MsweluConfig]:
    extra = {"d_state": 8, "headdim": 16} if mixer == "mamba2" else {}
    pattern = "A" if mixer == "attention" else "M"
    base = {"mixer": "mamba1" if mixer == "attention" else mixer, "layer_pattern": pattern, **extra}
    return [
        MsweluConfig.from_preset("tiny", **base),
        MsweluConfig.from_preset("tiny", **base, activation="silu", norm="rmsnorm", proj_bias=True),
        MsweluConfig.from_preset("tiny", **base, mixer_k_sharing="separate", conv_bias=False),
        MsweluConfig.from_preset("tiny", **base, activation="swish", post_mixer_act=False, attn_mlp_expand=0),
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


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mixer": "mamba2", "headdim": 48}, r"headdim \(48\) must divide d_inner"),
        ({"mixer": "mamba2", "headdim": 16, "n_groups": 3}, r"n_groups \(3\) must divide nheads"),
        ({"mixer": "mamba2", "dt_limit": (1.0, 0.5)}, "dt_limit must be"),
        ({"mixer": "mamba1", "dt_rank": 0}, "dt_rank must be 'auto' or an integer >= 1"),
        ({"mixer": "mamba1", "d_state": 0}, "d_state must be an integer >= 1"),
        ({"mixer": "mamba1", "dt_min": 0.5, "dt_max": 0.1}, "need 0 < dt_min <= dt_max"),
        ({"layer_pattern": "MA", "n_head": 5}, r"divisible by n_head \(5\)"),
    ],
)
def test_a_mixers_settings_are_checked_by_its_registration(settings: dict, message: str) -> None:
    """The config asks each mixer it uses (``check_config``), which runs the mixer's own checks."""
    with pytest.raises(ValueError, match=message):
        MsweluConfig.from_preset("tiny", **settings)
    unused = {k: v for k, v in settings.items() if k not in ("mixer", "layer_pattern")}
    if "headdim" in unused or "dt_limit" in unused:  # Mamba-2's settings mean nothing to a Mamba-1 model
        MsweluConfig.from_preset("tiny", mixer="mamba1", **unused)


@pytest.mark.parametrize("module", ["models/modeling.py", "plan.py"])
def test_model_and_plan_name_no_mixer_kind(module: str) -> None:
    """No mixer name as a string, no mixer class as a name in the module's code (prose aside)."""
    strings, names, _ = _code(PACKAGE / module)
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
