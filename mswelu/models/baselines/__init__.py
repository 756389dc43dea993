"""Transformer baselines sized to one of our presets: one module per family (its build and its closed-form
parameter count), registered in :data:`BASELINES`.

``build_baseline("gpt2", "small", vocab, seq_len)`` is a ``transformers.GPT2LMHeadModel`` built from a
config (no Hub access) with the run's vocabulary and context and a parameter count matched to ``small``.
The width starts at the reference's ``d_model`` (at small sizes the shared embedding table is most of the
weights, so equal width keeps the comparison about the blocks) and the depth is chosen to match the total
count; only when no depth comes within 5% is the width changed. Every family ties the LM head to the input
embedding, as our models and GPT-2 do, and runs without dropout. Nothing is tuned worse than ours: the
trainer gives every model the same optimizer routing and schedule.

Adding a family: a module here with ``SIZE_KEYS``, ``parameter_count`` and ``build``, and its name below.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from torch import nn

from mswelu.base.errors import check_choice
from mswelu.models.baselines import gpt2, pythia

__all__ = [
    "BASELINES",
    "DEFAULT_REFERENCE",
    "build_baseline",
    "match_transformer_size",
    "transformer_parameter_count",
]

BASELINES: dict[str, ModuleType] = {"gpt2": gpt2, "pythia": pythia}
DEFAULT_REFERENCE = "small"


def _family(kind: str) -> ModuleType:
    check_choice("baseline", kind, BASELINES)
    return BASELINES[kind]


def transformer_parameter_count(
    kind: str, d: int, n_layer: int, vocab_size: int, n_ctx: int, tied: bool = True
) -> int:
    """The closed-form parameter count of family ``kind`` at width ``d`` and depth ``n_layer``."""
    return _family(kind).parameter_count(d, n_layer, vocab_size, n_ctx, tied)


def match_transformer_size(
    kind: str,
    target: int,
    vocab_size: int,
    n_ctx: int,
    ref_width: int,
    tied: bool = True,
    tolerance: float = 0.05,
) -> tuple[int, int]:
    """(width, depth) whose count is closest to ``target``: the reference width first, then widths in
    multiples of 64 by distance from it, until one is within ``tolerance``."""
    widths = sorted({ref_width, *range(64, 4097, 64)}, key=lambda w: (abs(w - ref_width), w))
    best: tuple[float, int, int] | None = None
    for w in widths:
        for n_layer in range(1, 97):
            count = transformer_parameter_count(kind, w, n_layer, vocab_size, n_ctx, tied)
            err = abs(count - target) / target
            if best is None or err < best[0]:
                best = (err, w, n_layer)
        if best[0] <= tolerance:
            break
    assert best is not None
    return best[1], best[2]


def _n_head(width: int, ref_heads: int) -> int:
    if width % ref_heads == 0 and width // ref_heads >= 16:
        return ref_heads
    return max(1, width // 64) if width % 64 == 0 else 1


def build_baseline(
    kind: str, reference: str, vocab_size: int, max_seq_len: int, **overrides: Any
) -> nn.Module:
    """A ``kind`` Transformer matched in size to our ``reference`` preset (or sized by explicit
    ``SIZE_KEYS`` overrides). ``model.baseline_info`` records the sizes and the match."""
    from mswelu.models.configuration import MsweluConfig
    from mswelu.models.modeling import parameter_count

    family = _family(kind)
    ref_cfg = MsweluConfig.from_preset(reference)
    tied = bool(overrides.get("tie_word_embeddings", True))
    if any(k in overrides for k in family.SIZE_KEYS):
        width = overrides.get(family.SIZE_KEYS[0], ref_cfg.d_model)
        depth = overrides.get(family.SIZE_KEYS[1], 4)
        target = None
    else:
        ref_run = MsweluConfig.for_run(reference, vocab_size, max_seq_len, eos_token_id=vocab_size - 1)
        target = parameter_count(ref_run)  # (its end-of-text id only keeps the config valid: counts only)
        width, depth = match_transformer_size(kind, target, vocab_size, max_seq_len, ref_cfg.d_model, tied)
    heads = _n_head(width, ref_cfg.n_head)
    model = family.build(vocab_size, max_seq_len, width, depth, heads, **overrides)
    n = sum(p.numel() for p in model.parameters())  # unique: a tied head counts once
    model.baseline_info = {  # read by the trainer's summary
        "kind": kind,
        "reference": reference,
        "reference_parameters": target,
        "parameters": n,
        "width": width,
        "depth": depth,
        "heads": heads,
        "relative_size": None if not target else n / target,
    }
    return model
