"""Every preset's true parameter count: a real build (on the meta device) equals the figure the presets
module states (each block's own closed form is held to its build in tests/test_mixers.py); the seeds' large
shapes are among them."""

from __future__ import annotations

import re

import pytest

from mswelu.models import presets
from mswelu.models.configuration import PRESETS, MsweluConfig
from mswelu.models.modeling import parameter_count

STATED = {
    m.group(1): int(m.group(2).replace(",", ""))
    for m in re.finditer(r"^\s{4}(\S+)\s+([\d,]+)\s+\d+", presets.__doc__, re.M)
}


@pytest.mark.parametrize("name", list(PRESETS))
def test_count_is_stated(name: str) -> None:
    built = parameter_count(MsweluConfig.from_preset(name))
    assert STATED[name] == built, f"presets.py states {STATED.get(name)} for {name}, the build has {built}"


def test_the_seeds_large_shapes() -> None:
    big = MsweluConfig.from_preset("mamba-1.4b")
    assert (big.d_model, big.n_layer, big.vocab_size) == (2048, 48, 50280)
    hybrid = MsweluConfig.from_preset("seed004-hybrid")
    assert (
        hybrid.layer_mixers() == ["attention", "mamba1"] * 8 and hybrid.d_state == 48 and hybrid.n_head == 16
    )
    assert parameter_count(hybrid) < 0.25e9  # the seed's "~1B" does not follow from its shape
    two = MsweluConfig.from_preset("mamba2-1.3b")
    assert set(two.layer_mixers()) == {"mamba2"} and two.d_inner // two.headdim == 64
