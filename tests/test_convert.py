"""Weights move between our reference-architecture model, transformers' Mamba and mamba-ssm state dicts."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import MambaConfig, MambaForCausalLM

from mswelu.models.configuration import MsweluConfig
from mswelu.models.convert import from_hf_mamba, from_mamba_ssm, load_mamba_ssm_checkpoint, to_hf_mamba
from mswelu.models.modeling import MsweluForCausalLM


@pytest.fixture
def hf_model() -> MambaForCausalLM:
    cfg = MambaConfig(
        vocab_size=96, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4
    )
    model = MambaForCausalLM(cfg).eval()
    with torch.no_grad():  # move off the init so every tensor matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _ids() -> torch.Tensor:
    return torch.randint(0, 96, (2, 12))


def test_from_hf_mamba_gives_equal_logits(hf_model) -> None:
    ours = from_hf_mamba(hf_model).eval()
    assert ours.config.layer_pattern == "MM" and ours.config.activation == "silu"
    assert ours.num_shape_slots() == 0
    x = _ids()
    torch.testing.assert_close(ours(x).logits, hf_model(x).logits, rtol=1e-5, atol=1e-5)
    # the recurrent paths agree too: HF's cached generation vs ours
    ref = hf_model.generate(x[:, :4], max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    got = ours.generate(x[:, :4], max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ref, got)


def test_to_hf_mamba_round_trip(hf_model) -> None:
    ours = from_hf_mamba(hf_model).eval()
    back = to_hf_mamba(ours).eval()
    x = _ids()
    torch.testing.assert_close(back(x).logits, hf_model(x).logits, rtol=1e-5, atol=1e-5)
    assert back.lm_head.weight is back.backbone.embeddings.weight
    for key, value in hf_model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key


def test_from_state_dict_needs_config(hf_model) -> None:
    ours = from_hf_mamba(hf_model.state_dict(), hf_model.config).eval()
    x = _ids()
    torch.testing.assert_close(ours(x).logits, hf_model(x).logits, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="hf_config"):
        from_hf_mamba(hf_model.state_dict())


def _mamba_ssm_state_dict(hf_model: MambaForCausalLM) -> dict[str, torch.Tensor]:
    """The same weights under mamba-ssm's MambaLMHeadModel names (embedding, not embeddings)."""
    return {
        k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in hf_model.state_dict().items()
    }


def test_mamba_ssm_state_dict_and_checkpoint_folder(hf_model, tmp_path) -> None:
    cfg = {"d_model": 32, "n_layer": 2, "vocab_size": 90, "ssm_cfg": {"d_state": 8}, "rms_norm": True}
    cfg["pad_vocab_size_multiple"] = 8  # 90 -> 96, as state-spaces pads 50277 -> 50280
    sd = _mamba_ssm_state_dict(hf_model)
    ours = from_mamba_ssm(sd, cfg).eval()
    assert ours.config.vocab_size == 96
    x = _ids()
    torch.testing.assert_close(ours(x).logits, hf_model(x).logits, rtol=1e-5, atol=1e-5)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    torch.save(sd, tmp_path / "pytorch_model.bin")
    loaded = load_mamba_ssm_checkpoint(tmp_path).eval()
    torch.testing.assert_close(loaded(x).logits, hf_model(x).logits, rtol=1e-5, atol=1e-5)


def test_bad_conversions(hf_model, tmp_path) -> None:
    cfg = MsweluConfig.from_preset(
        "mamba-130m", activation="swelu", d_model=32, layer_pattern="MM", vocab_size=96
    )
    swelu = MsweluForCausalLM(cfg)
    with pytest.raises(ValueError, match="not the reference Mamba-1 architecture: activation='swelu'"):
        to_hf_mamba(swelu)
    sd = _mamba_ssm_state_dict(hf_model)
    sd.pop("backbone.layers.1.mixer.A_log")
    with pytest.raises(ValueError, match="missing"):
        from_mamba_ssm(sd, {"d_model": 32, "n_layer": 2, "vocab_size": 96, "ssm_cfg": {"d_state": 8}})
    with pytest.raises(ValueError, match="Mamba-1"):
        from_mamba_ssm(sd, {"d_model": 32, "n_layer": 2, "vocab_size": 96, "ssm_cfg": {"layer": "Mamba2"}})
    with pytest.raises(FileNotFoundError):
        load_mamba_ssm_checkpoint(tmp_path)
    gelu = MambaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=1, hidden_act="gelu")
    with pytest.raises(ValueError, match="silu"):
        from_hf_mamba(MambaForCausalLM(gelu))
