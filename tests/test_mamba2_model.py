"""Mamba-2 in the model: equal to transformers' ``Mamba2ForCausalLM`` through ``from_hf_mamba2`` (logits,
loss, every gradient, the round trip, greedy ``generate``), with ``n_groups`` > 1 and a length that is not a
multiple of ``chunk_size``; O(1) decoding through ``generate()`` for Mamba-2 and a Mamba-2 / attention
hybrid; every activation in its slots."""

from __future__ import annotations

import pytest
import torch
from transformers import Mamba2Config, Mamba2ForCausalLM

from mswelu.base.hf_compat import output_cache
from mswelu.models.configuration import MsweluConfig
from mswelu.models.convert import from_hf_mamba2, to_hf_mamba2
from mswelu.models.convert.mamba2 import hf_norm_is_grouped
from mswelu.models.modeling import MsweluForCausalLM

VOCAB = 96


@pytest.fixture(params=[1, 2], ids=["groups1", "groups2"])
def hf_model(request) -> Mamba2ForCausalLM:
    cfg = Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        head_dim=16,
        num_heads=4,
        n_groups=request.param,
        chunk_size=8,
        conv_kernel=4,
        tie_word_embeddings=True,
        eos_token_id=0,
        pad_token_id=0,
        bos_token_id=0,
    )
    if request.param > 1 and not hf_norm_is_grouped():  # transformers 5.4: one norm over all groups
        with pytest.raises(ValueError, match="normalises the gated output over all groups at once"):
            from_hf_mamba2(Mamba2ForCausalLM(cfg))
        pytest.skip("this transformers' Mamba2 normalises over all groups at once (refused: checked above)")
    torch.manual_seed(0)
    model = Mamba2ForCausalLM(cfg).eval()
    with torch.no_grad():  # off the init, so a dropped D, a swapped group or a wrong dt_bias shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _ids(length: int = 19) -> torch.Tensor:  # 19: not a multiple of chunk_size 8
    return torch.randint(1, VOCAB, (2, length), generator=torch.Generator().manual_seed(3))


def test_logits_loss_and_every_gradient_equal_transformers(hf_model) -> None:
    ours = from_hf_mamba2(hf_model).eval()
    assert set(ours.config.layer_mixers()) == {"mamba2"} and ours.num_shape_slots() == 0
    x = _ids()
    want, got = hf_model(x, labels=x), ours(x, labels=x)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-5, atol=1e-5)
    want.loss.backward()
    got.loss.backward()
    theirs = dict(hf_model.named_parameters())
    for name, p in ours.named_parameters():
        ref = theirs[name.replace("backbone.blocks.", "backbone.layers.")]
        scale = ref.grad.abs().max().clamp_min(1e-12)
        torch.testing.assert_close(p.grad / scale, ref.grad / scale, rtol=1e-3, atol=1e-3, msg=name)


def test_round_trip_and_greedy_generate(hf_model) -> None:
    ours = from_hf_mamba2(hf_model).eval()
    back = to_hf_mamba2(ours).eval()
    x = _ids()
    torch.testing.assert_close(back(x).logits, hf_model(x).logits, rtol=1e-5, atol=1e-5)
    for key, value in hf_model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    kw = {"max_new_tokens": 8, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    assert torch.equal(ours.generate(x[:, :5], **kw), hf_model.generate(x[:, :5], **kw))


def test_only_the_reference_arrangement_converts() -> None:
    model = MsweluForCausalLM(MsweluConfig.from_preset("tiny", mixer="mamba2", headdim=32))
    with pytest.raises(ValueError, match="not the reference Mamba-2"):
        to_hf_mamba2(model)


def _tiny(**kw) -> MsweluForCausalLM:
    torch.manual_seed(0)
    cfg = MsweluConfig.from_preset("tiny", mixer="mamba2", d_state=16, headdim=32, chunk_size=8, **kw)
    return MsweluForCausalLM(cfg).eval()


@pytest.mark.parametrize("pattern", ["MM", "MA"], ids=["mamba2", "mamba2-hybrid"])
def test_generate_decodes_one_token_per_step_and_equals_recomputation(pattern: str) -> None:
    """The O(1) guard through ``generate()``: one prefill, then forwards of length 1; and the recurrent
    path gives the logits a full recomputation gives."""
    model = _tiny(layer_pattern=pattern)
    lengths = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    x = torch.randint(1, 512, (1, 5))
    try:
        out = model.generate(x, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    finally:
        hook.remove()
    assert lengths == [5] + [1] * 5
    full = model(out).logits
    step = model(out[:, :5], use_cache=True)
    parts = [step.logits]
    for t in range(5, out.shape[1]):
        step = model(out[:, t : t + 1], cache=output_cache(step), use_cache=True)
        parts.append(step.logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-4, atol=1e-5)
    sizes = [tuple(v.shape) for st in output_cache(step).states for v in st.values()]
    assert all(len(s) > 1 for s in sizes)


@pytest.mark.parametrize("activation", ["swelu", "swelu-fixed", "swish", "silu"])
@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_every_activation_in_the_mamba2_slots_trains(activation: str, sharing: str) -> None:
    model = _tiny(
        activation=activation, mixer_k_sharing=sharing, post_mixer_act=False, dense_sizes=()
    ).train()
    x = torch.randint(0, 512, (2, 17))
    model(x, labels=x).loss.backward()
    slots = model.shape_slots()
    want = 0 if activation == "silu" else (1 if sharing == "shared" else 2) * 2
    assert len(slots) == want and all(s.group == "in-mixer" and s.mixer == "mamba2" for s in slots)
    for s in slots:
        for p in s.module.parameters():
            assert (p.grad is not None and torch.isfinite(p.grad).all()) == p.requires_grad
