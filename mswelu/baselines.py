"""Models the trainer can build: our presets, and Transformer baselines sized to match one of them.

``build_model("small", ...)`` is a :class:`~mswelu.modeling.MambaSWELUForCausalLM`;
``build_model("gpt2:small", ...)`` is a ``transformers.GPT2LMHeadModel`` and ``"pythia:small"`` a
``GPTNeoXForCausalLM``, both built from configs (no Hub access) with the same vocabulary and context as
the run, and a parameter count matched to the reference preset (``small`` when no reference is given).
The width starts at the reference's ``d_model`` (at small sizes the shared embedding table is most of the
weights, so equal width keeps the comparison about the blocks) and the depth is chosen to match the total
count; only when no depth comes within 5% is the width changed. Both baselines tie the LM head to the
input embedding, as our models and GPT-2 do (real Pythia unties it; ``tie_word_embeddings=False``
restores that), and run without dropout. Nothing is tuned worse than ours: the trainer gives every model
the same optimizer routing and schedule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

BASELINES = ("gpt2", "pythia")
DEFAULT_REFERENCE = "small"
_SIZE_KEYS = {
    "gpt2": ("n_embd", "n_layer", "n_head"),
    "pythia": ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"),
}


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a tied LM head counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def parse_model_name(name: str) -> tuple[str, str | None]:
    """``"small"`` -> ("small", None); ``"gpt2:small"`` -> ("gpt2", "small");
    ``"pythia"`` -> ("pythia", "small") (the default reference)."""
    from mswelu.configuration import PRESETS

    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    base, _, ref = name.partition(":")
    if base in BASELINES:
        ref = ref or DEFAULT_REFERENCE
        if ref not in PRESETS:
            raise ValueError(
                f"unknown reference preset {ref!r} in {name!r}: expected one of {sorted(PRESETS)}"
            )
        return base, ref
    if ref:
        raise ValueError(f"unknown baseline {base!r} in {name!r}: expected one of {BASELINES}")
    if name not in PRESETS:
        raise ValueError(
            f"unknown preset {name!r}: expected one of {sorted(PRESETS)} or a baseline "
            f"{[b + '[:preset]' for b in BASELINES]}"
        )
    return name, None


def mswelu_config(
    preset: str, vocab_size: int, max_seq_len: int, activation: str | None = None, **overrides: Any
) -> Any:
    """The MambaSWELUConfig a run of ``preset`` uses: the run's vocabulary, a context of at least
    ``max_seq_len``."""
    from mswelu.configuration import PRESETS, MambaSWELUConfig

    kwargs: dict[str, Any] = {"vocab_size": vocab_size}
    pos = {**PRESETS[preset], **overrides}.get("max_position_embeddings", 1024)
    kwargs["max_position_embeddings"] = max(int(pos), int(max_seq_len))
    if activation is not None:
        kwargs["activation"] = activation
    kwargs.update(overrides)
    cfg = MambaSWELUConfig.from_preset(preset, **kwargs)
    if cfg.pos_embedding == "learned" and cfg.max_position_embeddings < max_seq_len:
        raise ValueError(
            f"max_position_embeddings={cfg.max_position_embeddings} is shorter than seq_len={max_seq_len}"
        )
    return cfg


def preset_parameter_count(preset: str, vocab_size: int, max_seq_len: int, **overrides: Any) -> int:
    """Parameter count of our model for ``preset`` (built on the meta device: no memory, no init cost)."""
    from mswelu.modeling import MambaSWELUForCausalLM

    cfg = mswelu_config(preset, vocab_size, max_seq_len, **overrides)
    with torch.device("meta"):
        model = MambaSWELUForCausalLM(cfg)
    return count_parameters(model)


def transformer_parameter_count(
    kind: str, d: int, n_layer: int, vocab_size: int, n_ctx: int, tied: bool = True
) -> int:
    """Closed form for GPT-2 / GPT-NeoX blocks (4x MLP, biases, two LayerNorms): 12 d^2 + 13 d per block,
    plus token embedding, a learned position table (GPT-2 only; NeoX is rotary), a final norm and the LM
    head when untied. Checked against real builds in the tests."""
    n = vocab_size * d + n_layer * (12 * d * d + 13 * d) + 2 * d
    if kind == "gpt2":
        n += n_ctx * d
    if not tied:
        n += vocab_size * d
    return n


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
            err = (
                abs(transformer_parameter_count(kind, w, n_layer, vocab_size, n_ctx, tied) - target) / target
            )
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
    """A GPT-2 or GPT-NeoX (Pythia-style) model matched in size to our ``reference`` preset."""
    from transformers import GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM

    from mswelu.configuration import MambaSWELUConfig

    ref_cfg = MambaSWELUConfig.from_preset(reference)
    tied = bool(overrides.get("tie_word_embeddings", True))
    if any(k in overrides for k in _SIZE_KEYS[kind]):
        width = overrides.get("n_embd", overrides.get("hidden_size", ref_cfg.d_model))
        depth = overrides.get("n_layer", overrides.get("num_hidden_layers", 4))
        target = None
    else:
        target = preset_parameter_count(reference, vocab_size, max_seq_len)
        width, depth = match_transformer_size(kind, target, vocab_size, max_seq_len, ref_cfg.d_model, tied)
    heads = _n_head(width, ref_cfg.n_head)
    if kind == "gpt2":
        kwargs: dict[str, Any] = dict(
            vocab_size=vocab_size,
            n_positions=max_seq_len,
            n_embd=width,
            n_layer=depth,
            n_head=heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            bos_token_id=vocab_size - 1,
            eos_token_id=vocab_size - 1,
        )
        kwargs.update(overrides)
        model = GPT2LMHeadModel(GPT2Config(**kwargs))
    else:
        kwargs = dict(
            vocab_size=vocab_size,
            hidden_size=width,
            num_hidden_layers=depth,
            num_attention_heads=heads,
            intermediate_size=4 * width,
            max_position_embeddings=max_seq_len,
            rotary_pct=0.25,
            use_parallel_residual=True,
            hidden_dropout=0.0,
            attention_dropout=0.0,
            tie_word_embeddings=True,
            bos_token_id=vocab_size - 1,
            eos_token_id=vocab_size - 1,
        )
        kwargs.update(overrides)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(**kwargs))
    model.baseline_info = {  # read by the trainer's summary
        "kind": kind,
        "reference": reference,
        "reference_parameters": target,
        "parameters": count_parameters(model),
        "width": width,
        "depth": depth,
        "heads": heads,
        "relative_size": None if not target else count_parameters(model) / target,
    }
    return model


def build_model(
    preset_or_baseline: str,
    vocab_size: int,
    max_seq_len: int,
    activation: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Our model for one of our presets; a size-matched Transformer for ``gpt2[:ref]`` / ``pythia[:ref]``.
    Every model answers ``model(input_ids).logits``; only ours has ``swelu_values()``."""
    if not isinstance(vocab_size, int) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if not isinstance(max_seq_len, int) or max_seq_len <= 0:
        raise ValueError(f"max_seq_len must be a positive integer, got {max_seq_len!r}")
    base, ref = parse_model_name(preset_or_baseline)
    if ref is not None:
        if activation is not None:
            raise ValueError(
                f"activation={activation!r} applies to mswelu presets only; the {base} baseline keeps its own"
            )
        return build_baseline(base, ref, vocab_size, max_seq_len, **overrides)
    from mswelu.modeling import MambaSWELUForCausalLM

    return MambaSWELUForCausalLM(mswelu_config(base, vocab_size, max_seq_len, activation, **overrides))


def describe(preset_or_baseline: str, vocab_size: int = 50257, max_seq_len: int = 256) -> dict[str, Any]:
    """Sizes of a model and of its reference (for notebooks: "are the baselines comparable?")."""
    base, ref = parse_model_name(preset_or_baseline)
    if ref is None:
        n = preset_parameter_count(base, vocab_size, max_seq_len)
        return {"name": preset_or_baseline, "parameters": n}
    with torch.device("meta"):
        model = build_baseline(base, ref, vocab_size, max_seq_len)
    return {
        "name": preset_or_baseline,
        **model.baseline_info,
        "log10_parameters": math.log10(model.baseline_info["parameters"]),
    }


def max_context(model: Any) -> int | None:
    """Longest sequence the model accepts (learned positions / a Transformer's context), None if unbounded."""
    cfg = model.config
    if getattr(cfg, "model_type", "") == "mamba_swelu":
        if getattr(cfg, "pos_embedding", "none") == "learned" or "A" in getattr(cfg, "layer_pattern", ""):
            return int(cfg.max_position_embeddings)
        return None
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    return None


def config_of(model: nn.Module) -> dict[str, Any] | None:
    """The model's config as plain JSON values (what a checkpoint records to rebuild it), or None."""
    import json

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    return json.loads(json.dumps(config.to_dict(), default=str))


def shape_values(model: nn.Module) -> tuple[dict[str, float], dict[str, float]]:
    """({slot: k}, {slot: lambda}) of every SWELU of one of our models (``swelu_values``); empty for
    models without activation shape parameters (the Transformer baselines)."""
    from mswelu.checkpoint import unwrap

    values = getattr(unwrap(model), "swelu_values", None)
    if not callable(values):
        return {}, {}
    v = values()
    return {n: float(x["k"]) for n, x in v.items()}, {n: float(x.get("lambda", 1.0)) for n, x in v.items()}
