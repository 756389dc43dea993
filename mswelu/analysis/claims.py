"""A claim is a spec (what it compares, the claimed effect and its test, its scale, premises, treatment and
view); :func:`mswelu.analysis.verdicts.evaluate_claims` turns specs and a study's data into rows, so adding
a claim is one :class:`Claim` in a list. The judgement calls, stated once (each ``note`` repeats its own):

- **Comparable scale**: a claim made at P parameters and T tokens is comparable when the study's models
  have at least :data:`COMPARABLE_FRACTION` of both (a factor of two either way is the same scale in
  scaling-law terms; three orders of magnitude is not).
- **The treatment happened**: a claim about what learning a shape does is judged only if the learnable
  parameter moved, on average over the learnable slots and seeds, by at least :data:`SHAPE_MOVED` = 0.1
  from its initial value: at |k - 1| = 0.1 SWELU's curve differs from k = 1 by at most 0.026, so below it
  the learnable and the fixed model are nearly the same function (the seeds report 0.39).
- **"Comparable to GPT-2"**: two-sided equivalence within +-5% loss (TOST), not a one-sided bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from mswelu.analysis.shapes import SEED_K_RANGES
from mswelu.base.errors import unknown_choice
from mswelu.base.stats import TESTS

__all__ = [
    "CLAIM_SETS",
    "COMPARABLE_FRACTION",
    "COMPUTE_CLAIMS",
    "COUNT_CLAIMS",
    "MEASURES",
    "SEED_CLAIMS",
    "SEED_PARAMETERS",
    "SEED_TOKENS",
    "SHAPE_MOVED",
    "SHAPE_VS_LEARNING",
    "K_ABLATIONS",
    "Claim",
    "claim_set",
    "pair_claims",
    "resolve",
]

#: what the seeds' runs really saw: 757,500 micro-batches x 4 x 1024 tokens (not the 12.4B they state)
SEED_TOKENS = 757_500 * 4 * 1024
#: the seeds' stated model size
SEED_PARAMETERS = 124_000_000
#: a study is at a claim's scale when its models reach this fraction of the claim's tokens and parameters
COMPARABLE_FRACTION = 0.5
#: the smallest mean |value - init| of a learnable shape parameter for its claim to count as tested
SHAPE_MOVED = 0.1
#: what a measure reads: a paired relative gain of ``value`` (``(base - ours) / base``, positive = ours
#: lower), paired convergence (fewer tokens to the baseline's own final loss), ``value`` at a fraction of
#: training, the mean final shape value of a slot group, the mean |shape - init|, or an exact count
MEASURES = ("gain", "convergence", "loss_at", "shape", "shape_moved", "count")


@dataclass(frozen=True)
class Claim:
    """One claim to judge. ``says``: the source's words; ``effect``: a bound, a ``(lo, hi)`` range or an
    equivalence margin, relative for gains and convergence (0.22 = 22%); ``ours``/``base``: roles of the
    study's ``compare`` or variant names; ``view``: equal ``tokens``, wall-clock ``time`` or ``flops``;
    ``param``/``group``: the shape parameter and slot group (``""``: all) of shape measures and of the
    ``moved`` treatment check (0: none); ``scale_*``: where the claim was made (0: any); ``requires``:
    ``(key, text)`` premises on the study's context; ``count``: the counted quantity's key."""

    name: str
    says: str
    measure: str
    test: str
    effect: float | tuple[float, float]
    ours: str = "swelu"
    base: str = ""
    value: str = "val_loss"
    view: str = "tokens"
    fraction: float = 1.0
    param: str = "k"
    group: str = ""
    scale_params: float = 0.0
    scale_tokens: float = 0.0
    moved: float = 0.0
    requires: tuple[tuple[str, str], ...] = ()
    count: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise ValueError(f"{unknown_choice('measure', self.measure, MEASURES)} (claim {self.name!r})")
        if self.test not in TESTS:
            raise ValueError(f"{unknown_choice('test', self.test, TESTS)} (claim {self.name!r})")
        if self.view not in ("tokens", "time", "flops"):
            raise ValueError(
                f"{unknown_choice('view', self.view, ('tokens', 'time', 'flops'))} (claim {self.name!r})"
            )
        if self.measure in ("gain", "convergence") and not self.base:
            raise ValueError(f"claim {self.name!r} compares two variants: give base")
        if isinstance(self.effect, list):
            object.__setattr__(self, "effect", tuple(self.effect))
        object.__setattr__(self, "requires", tuple(tuple(r) for r in self.requires))

    @property
    def relative(self) -> bool:
        """Whether the effect is a relative one (printed in %)."""
        return self.measure in ("gain", "convergence")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effect"] = list(self.effect) if isinstance(self.effect, tuple) else self.effect
        d["requires"] = [list(r) for r in self.requires]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if isinstance(kw.get("effect"), list):
            kw["effect"] = tuple(kw["effect"])
        kw["requires"] = tuple(tuple(r) for r in kw.get("requires") or ())
        return cls(**kw)


def resolve(role: str, compare: Mapping[str, str] | None) -> str:
    """The variant a claim's role names in a study (a name that is no role is a variant name)."""
    return str((compare or {}).get(role, role)) if role else ""


_SCALE = {"scale_params": SEED_PARAMETERS, "scale_tokens": SEED_TOKENS}
_MOVED_NOTE = (
    f"judged only if the learnable k moved >= {SHAPE_MOVED} from init on average (the seeds report 0.39)"
)
_K_CLAIMS = tuple(
    Claim(
        f"{g} k end at {lo:.2f}-{hi:.2f}",
        f"final {g} k {lo:.2f}-{hi:.2f} (over layers)",
        "shape",
        "range",
        (lo, hi),
        ours="shapes",
        group=g,
        moved=SHAPE_MOVED,
        note=_MOVED_NOTE + "; the range is the seeds' table's, over layers",
        **_SCALE,
    )
    for g, (lo, hi) in SEED_K_RANGES.items()
)

#: the seed documents' claims about trained models, as specs
SEED_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "SWELU 22% better than SiLU",
        "22% lower loss",
        "gain",
        "at_least",
        0.22,
        ours="swelu",
        base="silu",
        **_SCALE,
    ),
    Claim(
        "learnable k 17% better than fixed k",
        "17% lower loss",
        "gain",
        "at_least",
        0.17,
        ours="swelu",
        base="fixed",
        moved=SHAPE_MOVED,
        note=_MOVED_NOTE,
        **_SCALE,
    ),
    Claim(
        'loss 4.6 "at 20%" of training',
        "train loss 4.6 at 20% (SlimPajama, GPT-2 tokenizer)",
        "loss_at",
        "at_most",
        4.6,
        ours="swelu",
        fraction=0.2,
        requires=(("data", "slimpajama"), ("tokenizer", "gpt2")),
        note="a loss compares only on the same data and tokenizer",
        **_SCALE,
    ),
    Claim(
        "30-40% faster convergence than SiLU",
        "30%-40% fewer tokens to a given loss",
        "convergence",
        "range",
        (0.30, 0.40),
        ours="swelu",
        base="silu",
        note="the target is each seed's own SiLU run's final loss, at the scope of that evaluation",
        **_SCALE,
    ),
    Claim(
        "comparable to GPT-2",
        "on par with a GPT-2 of the same size",
        "gain",
        "equivalent",
        0.05,
        ours="swelu",
        base="transformer",
        note="read as: within +-5% loss of GPT-2, two-sided (TOST); better by more than 5% is not 'on par'",
        **_SCALE,
    ),
    *_K_CLAIMS,
    Claim(
        "k move 0.39 from init on average",
        "mean |k - 1| = 0.39",
        "shape_moved",
        "range",
        (0.39 * 0.75, 0.39 * 1.25),
        ours="shapes",
        note="'0.39' judged as 0.29-0.49 (+-25%)",
        **_SCALE,
    ),
)

#: the seeds' counts, checked on the architecture they specify (no training, no interval)
COUNT_CLAIMS: tuple[Claim, ...] = (
    Claim(
        "124M parameters",
        "124M parameters",
        "count",
        "range",
        (SEED_PARAMETERS * 0.99, SEED_PARAMETERS * 1.01),
        count="parameters",
        note="within 1% of the stated count",
    ),
    Claim("15 learnable k", "15 learnable k", "count", "range", (15.0, 15.0), count="learnable_k"),
)


def _any_gain(prefix: str, says: str, swelu: str, silu: str) -> tuple[Claim, ...]:
    """SWELU better than SiLU by any amount at equal tokens, wall-clock time and FLOPs."""
    note = "any improvement counts; the row's MDE says what the study could resolve"
    return tuple(
        Claim(
            f"{prefix}SWELU better than SiLU at equal {what}",
            says,
            "gain",
            "at_least",
            0.0,
            ours=swelu,
            base=silu,
            view=view,
            note=note,
        )
        for view, what in (("tokens", "tokens"), ("time", "wall-clock time"), ("flops", "model FLOPs"))
    )


#: the main pair at all, at equal tokens, time and model FLOPs
COMPUTE_CLAIMS = _any_gain("", "(not a seed claim: the same pair at equal compute)", "swelu", "silu")


def pair_claims(label: str, swelu: str, silu: str, fixed: str = "") -> tuple[Claim, ...]:
    """The seeds' claims about SWELU vs SiLU (and learnable vs fixed k) asked of another pair of variants,
    e.g. the Mamba-2 pair, each row's name prefixed with ``[label]``; plus whether SWELU is better at all
    (any amount: the question the 22% claim overstates), at equal tokens, time and FLOPs."""
    rows = [
        Claim(
            f"[{label}] SWELU 22% better than SiLU",
            "22% lower loss",
            "gain",
            "at_least",
            0.22,
            ours=swelu,
            base=silu,
            **_SCALE,
        ),
        Claim(
            f"[{label}] 30-40% faster convergence than SiLU",
            "30%-40% fewer tokens to a given loss",
            "convergence",
            "range",
            (0.30, 0.40),
            ours=swelu,
            base=silu,
            note="the target is each seed's own SiLU run's final loss",
            **_SCALE,
        ),
    ]
    if fixed:
        rows.append(
            Claim(
                f"[{label}] learnable k 17% better than fixed k",
                "17% lower loss",
                "gain",
                "at_least",
                0.17,
                ours=swelu,
                base=fixed,
                moved=SHAPE_MOVED,
                note=_MOVED_NOTE,
                **_SCALE,
            )
        )
    return (*rows, *_any_gain(f"[{label}] ", "(not a seed claim: any improvement)", swelu, silu))


#: shape or learning? Two rows on the reference Mamba-1: does learning a SiLU-like shape help (learnable
#: Swish-beta, which starts as SiLU), and does SWELU's bounded shape help without learning (k fixed at 1)?
SHAPE_VS_LEARNING: tuple[Claim, ...] = (
    Claim(
        "learning a shape helps: Swish-beta (learnable, SiLU at init) better than SiLU",
        "(the workbook's question: is it learning a shape?)",
        "gain",
        "at_least",
        0.0,
        ours="mamba-swish",
        base="mamba",
        moved=SHAPE_MOVED,
        param="beta",
        note=f"judged only if beta moved >= {SHAPE_MOVED} from 1 on average; any improvement counts",
    ),
    Claim(
        "SWELU's shape helps without learning: SWELU at k = 1 (fixed) better than SiLU",
        "(the workbook's question: is it SWELU's shape?)",
        "gain",
        "at_least",
        0.0,
        ours="mamba-swelu-fixed",
        base="mamba",
        note="any improvement counts",
    ),
)

#: learnable k against its ablations, any amount: learnable vs fixed at 1 (Mamba-1 and Mamba-2), and SWELU
#: frozen at the k the same seed's learnable run ended at (``-as-learned``): the end shape alone, and learning
#: k beyond the shape it ends at
K_ABLATIONS: tuple[Claim, ...] = (
    *(
        Claim(
            f"{prefix}learnable k better than fixed k (any amount)",
            "(the 17% claim's question without its size)",
            "gain",
            "at_least",
            0.0,
            ours=ours,
            base=f"{ours}-fixed",
            moved=SHAPE_MOVED,
            note=_MOVED_NOTE,
        )
        for prefix, ours in (("", "mamba-swelu"), ("[Mamba-2] ", "mamba2-swelu"))
    ),
    Claim(
        "the learned shape without learning: SWELU frozen at the learned k better than SiLU",
        "(the workbook's question: is it the shape SWELU ends at?)",
        "gain",
        "at_least",
        0.0,
        ours="mamba-swelu-as-learned",
        base="mamba",
        note="each seed frozen at its own mamba-swelu run's final k; any improvement counts",
    ),
    Claim(
        "learning k helps beyond its end shape: learnable SWELU better than SWELU frozen at the learned k",
        "(the workbook's question: is it learning k, not where k ends?)",
        "gain",
        "at_least",
        0.0,
        ours="mamba-swelu",
        base="mamba-swelu-as-learned",
        moved=SHAPE_MOVED,
        note=_MOVED_NOTE,
    ),
)

#: the claim sets a study names in its parameter file (``claims: [seed, compute, ...]``)
CLAIM_SETS: dict[str, tuple[Claim, ...]] = {
    "seed": SEED_CLAIMS,
    "compute": COMPUTE_CLAIMS,
    "mamba1": pair_claims("Mamba-1", "mamba-swelu", "mamba", "mamba-swelu-fixed"),
    "mamba2": pair_claims("Mamba-2", "mamba2-swelu", "mamba2", "mamba2-swelu-fixed"),
    "shape-vs-learning": SHAPE_VS_LEARNING,
    "k-ablations": K_ABLATIONS,
}


def claim_set(names: list[str] | tuple[str, ...]) -> tuple[Claim, ...]:
    """The claims of the named sets (:data:`CLAIM_SETS`), in order, each once."""
    out: dict[str, Claim] = {}
    for name in names:
        if name not in CLAIM_SETS:
            raise ValueError(unknown_choice("claim set", name, CLAIM_SETS))
        out.update({c.name: c for c in CLAIM_SETS[name]})
    return tuple(out.values())
