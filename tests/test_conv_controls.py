"""Mamba-1's conv controls (``conv_mode``: the fixes of "Achilles' heel of Mamba"): ``ones`` is the learned
conv with its weights fixed to one and frozen, ``residual`` is the conv plus its input; both decode as they
run whole sequences; the variants and the config carry them; the default is untouched."""

from __future__ import annotations

import pytest
import torch

from mswelu.models.build import build_model
from mswelu.models.configuration import MsweluConfig
from mswelu.modules.mamba_mixer import MambaMixer
from mswelu.training.optim import build_optimizer
from mswelu.training.variants import variant_overrides

D_MODEL = 16


def mixer(mode: str, seed: int = 0) -> MambaMixer:
    torch.manual_seed(seed)
    return MambaMixer(D_MODEL, d_state=4, d_conv=4, conv_mode=mode, backend="torch")


def test_learned_is_the_default_and_draws_the_same_weights():
    torch.manual_seed(0)
    plain = MambaMixer(D_MODEL, d_state=4, d_conv=4, backend="torch")
    learned = mixer("learned")
    for (name, a), b in zip(plain.state_dict().items(), learned.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert MsweluConfig.from_preset("tiny").conv_mode == "learned"


def test_ones_is_the_learned_conv_with_weights_one_and_frozen():
    ones, learned = mixer("ones"), mixer("learned")
    assert (ones.conv1d.weight == 1).all() and not ones.conv1d.weight.requires_grad
    with torch.no_grad():
        learned.conv1d.weight.fill_(1.0)
    h = torch.randn(2, 9, D_MODEL)
    torch.testing.assert_close(ones(h), learned(h), rtol=0, atol=0)
    # the other weights are drawn as before: the same generator, the same order
    for name, p in ones.named_parameters():
        if name != "conv1d.weight":
            assert torch.equal(p, dict(learned.named_parameters())[name]), name


def test_residual_adds_the_conv_input_before_the_activation():
    residual, learned = mixer("residual"), mixer("learned")
    with torch.no_grad():  # conv(x) + x == a conv whose current-step tap is one larger
        learned.conv1d.weight[:, 0, -1] += 1.0
    h = torch.randn(2, 9, D_MODEL)
    torch.testing.assert_close(residual(h), learned(h), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(residual(h), mixer("learned")(h), atol=1e-3)


@pytest.mark.parametrize("mode", ["ones", "residual"])
def test_decoding_matches_the_whole_sequence(mode):
    m = mixer(mode)
    h = torch.randn(2, 7, D_MODEL)
    full = m(h)
    state: dict = {}  # the model's decoding API: the first token fills the states, the rest continue them
    steps = [m(h[:, t : t + 1], state) for t in range(7)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_ones_stays_one_through_training_steps():
    model = build_model("tiny", 32, 16, "silu", conv_mode="ones")
    opt = build_optimizer(model, "adamw", lr=1e-2, weight_decay=0.1)
    x = torch.randint(0, 32, (2, 16))
    for _ in range(2):
        model(input_ids=x[:, :-1], shift_labels=x[:, 1:]).loss.backward()
        opt.step()
        opt.zero_grad()
    convs = [m.conv1d.weight for m in model.modules() if isinstance(m, MambaMixer)]
    assert convs and all((w == 1).all() for w in convs)


def test_variants_and_config_checks():
    assert variant_overrides("mamba-conv1", "tiny")["model"]["conv_mode"] == "ones"
    assert variant_overrides("mamba-convres", "tiny")["model"]["conv_mode"] == "residual"
    control = dict(variant_overrides("mamba-conv1", "tiny")["model"])
    control.pop("conv_mode")
    assert control == variant_overrides("mamba", "tiny")["model"]
    with pytest.raises(ValueError, match="did you mean 'ones'"):
        MsweluConfig.from_preset("tiny", conv_mode="one")
    with pytest.raises(ValueError, match="Mamba-1 blocks"):
        MsweluConfig.from_preset("mamba2-tiny", conv_mode="residual")


def test_a_control_does_not_convert_to_the_reference_mamba():
    from mswelu.models.convert.common import check_reference
    from mswelu.models.presets import PRESETS

    ref = {**PRESETS["mamba-130m"], "d_model": 32, "layer_pattern": "MM", "vocab_size": 64}
    check_reference(MsweluConfig(**ref), "mamba1")
    with pytest.raises(ValueError, match="conv_mode='ones'"):
        check_reference(MsweluConfig(**ref, conv_mode="ones"), "mamba1")
