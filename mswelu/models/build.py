"""Every model the trainer can build, by name: our presets (``small``, ``seed-124m``, ...) and Transformer
baselines sized to one of them (``gpt2:small``, ``pythia:small``; :mod:`mswelu.models.baselines`).

Every model answers ``model(input_ids=...).logits`` and saves with ``save_pretrained``; only ours has
activation shape parameters (``shape_values()``, ``shape_slots()``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mswelu.base.errors import unknown_choice, with_nearest
from mswelu.models.baselines import BASELINES, DEFAULT_REFERENCE, build_baseline
from mswelu.models.configuration import PRESETS, MsweluConfig
from mswelu.modules.mixers import mixer_spec
from mswelu.ops.lm_loss import CHUNK_BYTES, linear_token_losses, next_token_loss

__all__ = [
    "activation_bytes",
    "build_model",
    "check_overrides",
    "config_of",
    "count_parameters",
    "lm_loss",
    "max_context",
    "measure_activation_bytes",
    "parse_model_name",
    "preset_parameter_count",
    "shape_slots",
    "shape_values",
    "token_losses",
    "unwrap",
]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def lm_loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy (nats) of ``model`` (wrapped by DDP / FSDP or not) on aligned
    ``inputs`` / ``targets``: through the fused head + loss for our models (no full logits), from the
    logits for the others. The call goes through ``model`` itself, so that its wrapper's hooks run."""
    from mswelu.models.modeling import MsweluForCausalLM

    if isinstance(unwrap(model), MsweluForCausalLM):
        return model(input_ids=inputs, shift_labels=targets).loss
    return next_token_loss(model(input_ids=inputs).logits, targets)


@torch.no_grad()
def token_losses(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Per-token next-token cross-entropy (nats, fp32, the shape of ``targets``), for the final evaluation's
    per-document sums (:mod:`mswelu.training.evaluation`). Our models: one pass of the backbone, then the
    fused loss's own per-token terms (:func:`~mswelu.ops.lm_loss.linear_token_losses`: the same chunks and
    row kernel as :func:`lm_loss`, so they add up to its mean); others: from their logits, a few rows at a
    time. No gradients."""
    from mswelu.models.modeling import MsweluForCausalLM

    bare = unwrap(model)
    vocab = int(bare.config.vocab_size)
    if isinstance(bare, MsweluForCausalLM):
        with _root_unsharded(bare):  # the backbone and head are called directly, not through forward
            hidden, _ = bare.backbone(input_ids=inputs)
            return linear_token_losses(hidden, bare.lm_head.weight, targets)
    rows = max(1, CHUNK_BYTES // (4 * vocab * max(1, inputs.size(1))))
    out = []
    for i in range(0, inputs.size(0), rows):
        logits = model(input_ids=inputs[i : i + rows]).logits.float()
        out.append(
            F.cross_entropy(
                logits.reshape(-1, vocab), targets[i : i + rows].reshape(-1).long(), reduction="none"
            )
        )
    return torch.cat(out).view(targets.shape)


@contextlib.contextmanager
def _root_unsharded(model: nn.Module) -> Iterator[None]:
    """Under FSDP2, the root's own parameters (embeddings, final norm, dense stack, tied head) gathered while
    its submodules are called directly (the blocks gather themselves in their own hooks); else nothing."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def count_parameters(model: nn.Module) -> int:
    """Unique parameters (a tied LM head counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def parse_model_name(name: str) -> tuple[str, str | None]:
    """``"small"`` -> ("small", None); ``"gpt2:small"`` -> ("gpt2", "small");
    ``"pythia"`` -> ("pythia", "small") (the default reference)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    base, _, ref = name.partition(":")
    if base in BASELINES:
        ref = ref or DEFAULT_REFERENCE
        if ref not in PRESETS:
            raise ValueError(f"{unknown_choice('reference preset', ref, sorted(PRESETS))} (in {name!r})")
        return base, ref
    if ref:
        raise ValueError(f"{unknown_choice('baseline', base, BASELINES)} (in {name!r})")
    if name not in PRESETS:
        known = [*sorted(PRESETS), *BASELINES]
        raise ValueError(
            f"unknown preset {with_nearest([name], known)}: expected one of {', '.join(sorted(PRESETS))} "
            f"or a baseline {', '.join(b + '[:preset]' for b in BASELINES)}"
        )
    return name, None


def check_overrides(preset_or_baseline: str, overrides: dict[str, Any]) -> None:
    """ValueError naming every key of ``overrides`` (a run's ``model`` settings) that the model's config
    does not have, with the nearest known names: a misspelt key must not be ignored."""
    base, ref = parse_model_name(preset_or_baseline)
    if ref is None:
        own = MsweluConfig.__annotations__
        known = {k for k, t in own.items() if "ClassVar" not in str(t)}
    else:
        known = BASELINES[base].config_keys()
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(
            f"unknown model setting(s) {with_nearest(unknown, known)} for {preset_or_baseline!r}"
        )


def preset_parameter_count(preset: str, vocab_size: int, max_seq_len: int, **overrides: Any) -> int:
    """Parameter count of our model for ``preset`` at this vocabulary and context."""
    from mswelu.models.modeling import parameter_count

    return parameter_count(MsweluConfig.for_run(preset, vocab_size, max_seq_len, **overrides))


def build_model(
    preset_or_baseline: str,
    vocab_size: int,
    max_seq_len: int,
    activation: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """Our model for one of our presets; a size-matched Transformer for ``<baseline>[:preset]``."""
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
    from mswelu.models.modeling import MsweluForCausalLM

    return MsweluForCausalLM(MsweluConfig.for_run(base, vocab_size, max_seq_len, activation, **overrides))


def max_context(model: Any) -> int | None:
    """Longest sequence the model accepts (learned positions / a Transformer's context), None if unbounded."""
    cfg = model.config
    if getattr(cfg, "model_type", "") == "mamba_swelu":
        bounded = any(mixer_spec(m).bounded_context for m in cfg.layer_mixers())
        if getattr(cfg, "pos_embedding", "none") == "learned" or bounded:
            return int(cfg.max_position_embeddings)
        return None
    for name in ("n_positions", "max_position_embeddings"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    return None


def config_of(model: nn.Module) -> dict[str, Any] | None:
    """The model's config as plain JSON values (what a checkpoint records to rebuild it), or None."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return None
    return json.loads(json.dumps(config.to_dict(), default=str))


def shape_values(model: nn.Module) -> dict[str, dict[str, float]]:
    """``{param: {slot: value}}`` of every activation shape parameter of one of our models (``k``, ``lambda``,
    ``beta``, ...: the tables the metrics log and the summary record); empty for models without them (the
    Transformer baselines)."""
    values = getattr(unwrap(model), "shape_values", None)
    if not callable(values):
        return {}
    out: dict[str, dict[str, float]] = {}
    for slot, params in values().items():
        for param, value in params.items():
            out.setdefault(param, {})[slot] = float(value)
    return out


def shape_slots(model: nn.Module) -> list[dict[str, Any]]:
    """The model's activation slots with shape parameters as plain records (:class:`ShapeSlot` dicts: name,
    group, layer, slot, activation, params, learnable, mixer), what a run's ``config.json`` keeps."""
    slots = getattr(unwrap(model), "shape_slots", None)
    return [s.to_dict() for s in slots()] if callable(slots) else []


def activation_bytes(
    config: Any, seq_len: int, bf16: bool = True, checkpointing: bool = False
) -> dict[str, float]:
    """Estimated bytes a training step keeps for the backward, per sequence of ``seq_len`` tokens, by part
    (``blocks``, ``dense``, ``head``, ``embedding``, ``total``), for one of our model configs (a baseline's
    is its reference run's plus its full logits: :mod:`mswelu.plan`); each block's share is its own
    declaration (``activation_bytes`` of its mixer's block class). With ``checkpointing`` each block keeps
    only its input, and one block's activations exist again while it is recomputed."""
    s = 2 if bf16 else 4  # bytes of an autocast tensor
    d = config.d_model
    per_block = [mixer_spec(m).block.activation_bytes(config, s) for m in config.layer_mixers()]
    block_tokens = sum(per_block)
    if checkpointing:
        block_tokens = 4 * d * len(per_block) + max(per_block, default=0)
    dense = 0.0
    if config.dense_sizes:
        h1, h2 = config.dense_sizes
        dense = (d + h1 + h2) * s + (h1 + h2 + d) * 4
    head = d * s + 8  # the hidden state the fused loss recomputes from, and the log-sum-exp
    embedding = 4 * d
    out = {"blocks": block_tokens * seq_len, "dense": dense * seq_len, "head": head * seq_len}
    out["embedding"] = embedding * seq_len
    out["total"] = sum(out.values())
    return out


def measure_activation_bytes(
    preset: str, seq_len: int, batch: int = 2, model: dict[str, Any] | None = None, bf16: bool = False
) -> float:
    """Measured bytes per sequence that a training step of ``preset`` keeps for its backward on this
    machine's CPU path: every tensor autograd saves during the forward (``saved_tensors_hooks``, the custom
    kernels' saves included), each storage once, parameters excluded, divided by the batch."""
    from mswelu.ops.lm_loss import split_window

    torch.manual_seed(0)
    net = build_model(preset, 512, seq_len, **(model or {}))
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    x, y = split_window(torch.randint(0, 512, (batch, seq_len + 1)))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        loss = lm_loss(net, x, y)
    loss.backward()
    return sum(seen.values()) / batch
