"""Optimizer routing (AdamW / Muon hybrid), group behaviour, and the learning-rate schedules."""

from __future__ import annotations

import copy
import math
import re
from typing import Any

import pytest
import torch
from torch import nn

from mswelu.modules.activations import make_activation
from mswelu.training.optim import (
    HybridOptimizer,
    build_optimizer,
    route_parameters,
    set_hyperparameters,
)
from mswelu.training.schedule import LRSchedule, lr_factor

# Where every parameter kind of the seed architecture must go: (optimizer under "muon", decays?).
SEED_124M_ROUTES = {
    "backbone.embeddings.weight": ("adamw", False),
    "backbone.pos_embeddings.weight": ("adamw", False),
    "backbone.blocks.N.norm.weight": ("adamw", False),
    "backbone.blocks.N.norm.bias": ("adamw", False),
    "backbone.blocks.N.mixer.A_log": ("adamw", False),
    "backbone.blocks.N.mixer.D": ("adamw", False),
    "backbone.blocks.N.mixer.in_proj.weight": ("muon", True),
    "backbone.blocks.N.mixer.conv1d.weight": ("adamw", True),
    "backbone.blocks.N.mixer.conv1d.bias": ("adamw", False),
    "backbone.blocks.N.mixer.act_conv.k_raw": ("adamw", False),
    "backbone.blocks.N.mixer.x_proj.weight": ("muon", True),
    "backbone.blocks.N.mixer.dt_proj.weight": ("adamw", True),
    "backbone.blocks.N.mixer.dt_proj.bias": ("adamw", False),
    "backbone.blocks.N.mixer.out_proj.weight": ("muon", True),
    "backbone.blocks.N.post_act.k_raw": ("adamw", False),
    "backbone.norm_f.weight": ("adamw", False),
    "backbone.norm_f.bias": ("adamw", False),
    "backbone.dense.N.fc.weight": ("muon", True),
    "backbone.dense.N.fc.bias": ("adamw", False),
    "backbone.dense.N.act.k_raw": ("adamw", False),
}


def param_groups_report(
    model: nn.Module, optimizer: str, weight_decay: float
) -> list[tuple[str, str, float]]:
    """``(parameter name, optimizer, effective weight decay)`` of every trainable parameter, as routed."""
    decayed = ("decay", "muon")
    routes = route_parameters(model, optimizer)
    return [(r.name, r.optimizer, weight_decay if r.group in decayed else 0.0) for r in routes]


def lr_curve(total_steps: int, **kwargs: Any) -> torch.Tensor:
    """The schedule's factors for steps 0..total_steps-1."""
    return torch.tensor(
        [lr_factor(s, total_steps, **kwargs) for s in range(total_steps)], dtype=torch.float64
    )


def _generic(name: str) -> str:
    return re.sub(r"\.\d+\.", ".N.", name)


@pytest.fixture(scope="module")
def seed_model() -> nn.Module:
    from mswelu.models.configuration import MsweluConfig
    from mswelu.models.modeling import MsweluForCausalLM

    with torch.device("meta"):  # full seed-124m structure, no memory and no init cost
        return MsweluForCausalLM(MsweluConfig.from_preset("seed-124m"))


@pytest.mark.parametrize("opt", ["adamw", "muon"])
def test_seed_124m_routing_lists_every_parameter(seed_model: nn.Module, opt: str) -> None:
    report = param_groups_report(seed_model, opt, weight_decay=0.1)
    names = [n for n, _ in seed_model.named_parameters()]
    assert [r[0] for r in report] == names  # every trainable parameter, once, in order
    seen = set()
    for name, optimizer, wd in report:
        generic = _generic(name)
        assert generic in SEED_124M_ROUTES, f"unexpected parameter {name}"
        want_opt, decays = SEED_124M_ROUTES[generic]
        assert optimizer == (want_opt if opt == "muon" else "adamw"), name
        assert wd == (0.1 if decays else 0.0), name
        seen.add(generic)
    assert seen == set(SEED_124M_ROUTES)
    if opt == "muon":  # the hybrid only sends 2-D matrices to Muon
        params = dict(seed_model.named_parameters())
        assert all(params[n].ndim == 2 for n, o, _ in report if o == "muon")


def test_tied_lm_head_counts_once_and_is_not_decayed(seed_model: nn.Module) -> None:
    head = seed_model.get_output_embeddings().weight
    routes = [r for r in route_parameters(seed_model, "muon") if r.param is head]
    assert len(routes) == 1 and routes[0].optimizer == "adamw" and routes[0].group == "no_decay"


class _Toy(nn.Module):
    """Stand-in with every kind of parameter the rules distinguish."""

    def __init__(self, shape: dict | None = None) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 6)
        self.proj = nn.Linear(6, 6, bias=True)
        self.norm = nn.LayerNorm(6)
        self.conv = nn.Conv1d(6, 6, 3, groups=6)
        self.A_log = nn.Parameter(torch.zeros(6, 4))
        self.head = nn.Linear(6, 11, bias=False)  # untied
        # its k_raw: an activation shape parameter
        self.act = make_activation("swelu", {"k": {"init": 0.5}, **(shape or {})})

    def get_output_embeddings(self) -> nn.Module:
        return self.head


def test_untied_head_stays_on_adamw_and_groups() -> None:
    toy = _Toy()
    rep = {n: (o, wd) for n, o, wd in param_groups_report(toy, "muon", 0.1)}
    assert rep == {
        "emb.weight": ("adamw", 0.0),
        "proj.weight": ("muon", 0.1),
        "proj.bias": ("adamw", 0.0),
        "norm.weight": ("adamw", 0.0),
        "norm.bias": ("adamw", 0.0),
        "conv.weight": ("adamw", 0.1),
        "conv.bias": ("adamw", 0.0),
        "A_log": ("adamw", 0.0),
        "head.weight": ("adamw", 0.1),
        "act.k_raw": ("adamw", 0.0),
    }


def test_weight_decay_applies_only_to_decay_groups() -> None:
    """With zero gradients, AdamW's update is pure decoupled decay: p <- p (1 - lr wd). Groups without
    decay must not move at all; k gets its own lr (its lr_scale setting) and no decay."""
    torch.manual_seed(0)
    toy = _Toy({"k": {"init": 0.5, "lr_scale": 3.0}})
    opt = build_optimizer(toy, "adamw", lr=0.1, weight_decay=0.5)
    names = {g["name"] for g in opt.param_groups}
    assert names == {"decay", "no_decay", "shape"}
    swelu = next(g for g in opt.param_groups if g["name"] == "shape")
    assert swelu["lr"] == pytest.approx(0.3) and swelu["weight_decay"] == 0.0
    before = {n: p.detach().clone() for n, p in toy.named_parameters()}
    for p in toy.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in toy.named_parameters():
        decays = n in ("proj.weight", "conv.weight", "head.weight")
        expected = before[n] * (1 - 0.1 * 0.5) if decays else before[n]
        torch.testing.assert_close(p.detach(), expected, msg=n)


def test_muon_hybrid_uses_match_rms_adamw_and_orthogonalises() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(32, 16, bias=False)
    opt = build_optimizer(lin, "muon", lr=0.01, weight_decay=0.0)
    muon = [o for o in opt.optimizers if isinstance(o, torch.optim.Muon)]
    assert len(muon) == 1 and muon[0].param_groups[0]["adjust_lr_fn"] == "match_rms_adamw"
    before = lin.weight.detach().clone()
    lin.weight.grad = torch.randn_like(lin.weight)
    opt.step()
    update = (before - lin.weight.detach()) / 0.01
    # match_rms_adamw scales the orthogonalised update by 0.2 sqrt(max(A, B)): the RMS of an
    # orthogonal (16 x 32) matrix is 1/sqrt(32), so the update RMS is close to 0.2 (Newton-Schulz
    # with 5 steps is an approximate orthogonalisation: singular values land in about [0.7, 1.2]).
    rms = update.pow(2).mean().sqrt().item()
    assert 0.12 < rms < 0.26
    s = torch.linalg.svdvals(update / (0.2 * math.sqrt(32)))
    assert s.min() > 0.5 and s.max() < 1.3


def test_hybrid_state_dict_roundtrip() -> None:
    torch.manual_seed(0)
    toy = _Toy()
    opt = build_optimizer(toy, "muon", lr=0.01)
    for p in toy.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    state = copy.deepcopy(opt.state_dict())  # a live load would share state tensors: copy, as a file does
    toy2 = _Toy()
    toy2.load_state_dict(toy.state_dict())
    opt2 = build_optimizer(toy2, "muon", lr=0.01)
    opt2.load_state_dict(state)
    for p, q in zip(toy.parameters(), toy2.parameters(), strict=True):
        g = torch.randn_like(p)
        p.grad, q.grad = g, g.clone()
    opt.step()
    opt2.step()
    for p, q in zip(toy.parameters(), toy2.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="optimizer state"):
        build_optimizer(_Toy(), "adamw").load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "sgd"}, "unknown optimizer"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_build_optimizer_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_optimizer(_Toy(), **kwargs)


def test_each_shape_parameter_gets_its_lr_scale_and_keeps_it_after_a_resume() -> None:
    """Two shape parameters with different lr scales: one ``shape`` group each, at lr x scale; after a
    checkpoint's groups are loaded (as a resume does), set_hyperparameters gives each its scale again."""
    toy = _Toy({"k": {"init": 0.5, "lr_scale": 2.0}, "lambda": {"learnable": True, "lr_scale": 0.25}})
    opt = build_optimizer(toy, "adamw", lr=0.1)
    shape = {g["name"]: g for g in opt.param_groups if g["name"].startswith("shape")}
    assert {n: (g["base_lr"], len(g["params"])) for n, g in shape.items()} == {
        "shape x2": (pytest.approx(0.2), 1),
        "shape x0.25": (pytest.approx(0.025), 1),
    }
    assert shape["shape x2"]["params"][0] is toy.act.k_raw
    state = copy.deepcopy(opt.state_dict())
    opt2 = build_optimizer(toy, "adamw", lr=0.1)
    opt2.load_state_dict(state)
    set_hyperparameters(opt2, lr=1.0, weight_decay=0.0)
    got = {g["name"]: g["base_lr"] for g in opt2.param_groups}
    assert got == {"decay": 1.0, "no_decay": 1.0, "shape x2": 2.0, "shape x0.25": 0.25}


# ----------------------------------------------------------------------------------------- schedules
def test_cosine_schedule_formula() -> None:
    total, warm, floor = 100, 10, 0.1
    f = lr_curve(total, warmup=warm, schedule="cosine", min_lr_ratio=floor)
    assert f[0] == pytest.approx(1 / warm) and f[warm - 1] == pytest.approx(1.0)
    for s in (10, 37, 55, 99):
        progress = (s - warm) / (total - warm)
        assert f[s] == pytest.approx(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
    assert lr_factor(total, total, warm, "cosine", floor) == pytest.approx(floor)
    assert lr_factor(10 * total, total, warm, "cosine", floor) == pytest.approx(floor)
    assert bool((f[warm:-1] >= f[warm + 1 :]).all())  # monotone after warmup


def test_wsd_schedule_formula() -> None:
    total, warm, floor = 100, 10, 0.0
    f = lr_curve(total, warmup=warm, schedule="wsd", min_lr_ratio=floor, decay_fraction=0.2)
    # decay over the last round(0.2 * 90) = 18 steps, starting at step 82
    assert torch.all(f[warm:82] == 1.0)
    assert f[82] == pytest.approx(1.0) and f[91] == pytest.approx(1 - 9 / 18)
    assert lr_factor(100, total, warm, "wsd", floor, 0.2) == pytest.approx(0.0)


def test_schedule_applies_to_every_group_with_own_base_lr() -> None:
    toy = _Toy({"k": {"init": 0.5, "lr_scale": 0.5}})
    opt = build_optimizer(toy, "muon", lr=1.0)
    sched = LRSchedule(opt, total_steps=20, warmup=4, schedule="cosine", min_lr_ratio=0.1)
    lrs = sched.apply(1)
    for g, lr in zip(opt.param_groups, lrs, strict=True):
        assert lr == pytest.approx(g["base_lr"] * 0.5)
    assert isinstance(opt, HybridOptimizer)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "linear"}, "unknown schedule"),
        ({"total_steps": 0}, "total_steps"),
        ({"warmup": -1}, "warmup"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
    ],
)
def test_schedule_rejects_bad_values(kwargs: dict, match: str) -> None:
    args = {"step": 0, "total_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        lr_factor(**args)
