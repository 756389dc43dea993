"""Which settings of a run may differ from another's, and how: what a resume may change (and which of
those change the numbers from there on), which settings say only how and where a run runs (a notebook
reuses a finished run that differs in those alone), the one comparison of recorded settings with wanted
ones (read in today's names: the one migration of older settings), and the one merge of a variant's overrides
into a base config."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any

from mswelu.models.baselines import BASELINES
from mswelu.models.configuration import MsweluConfig
from mswelu.models.presets import PRESETS
from mswelu.modules.activations import OLD_SHAPE_SETTINGS, migrate_shape_settings

__all__ = [
    "NUMERIC_CHANGES",
    "RESUMABLE_CHANGES",
    "RUNTIME_SETTINGS",
    "changed_settings",
    "merge_overrides",
    "migrate_train_settings",
    "run_activation",
]

# Fields whose change on resume alters the numbers from here on (allowed, reported as a warning).
NUMERIC_CHANGES = (
    "lr",
    "min_lr_ratio",
    "weight_decay",
    "betas",
    "eps",
    "grad_clip",
    "schedule",
    "warmup",
    "decay_fraction",
    "muon_momentum",
    "dtype",
    "fsdp_param_dtype",
    "max_steps",
    "max_tokens",
)
# Fields that may change between a run and its resumption (they do not change what was computed so far,
# nor what the checkpoint holds). Every other field must match the checkpoint's config.
RESUMABLE_CHANGES = frozenset(NUMERIC_CHANGES) | {
    "eval_every",
    "eval_batches",
    "eval_fractions",
    "log_every",
    "ckpt_every",
    "keep_checkpoints",
    "resume",
    "overwrite",
    "progress",
    "tensorboard",
    "trackers",
    "monitor_every",
    "max_consecutive_nonfinite",
    "device",
    "compile",
    "parallel",
    "cpu_offload",
    "activation_checkpointing",
    "run_name",
    "out",
    "data",
}
# Fields that say how and where a run runs, not what it computes: a finished run that differs from a
# config only in these is that config's run (notebooks reuse it).
RUNTIME_SETTINGS = frozenset(
    {"progress", "tensorboard", "overwrite", "resume", "out", "run_name", "data", "device"}
    | {"trackers", "monitor_every", "ckpt_every", "keep_checkpoints"}  # where it is logged and kept, not what
)


def changed_settings(
    recorded: Mapping[str, Any], wanted: Mapping[str, Any], ignore: Collection[str] = ()
) -> list[str]:
    """The settings of ``wanted`` (a TrainConfig dict) whose value differs from the one ``recorded`` (a
    run's or a checkpoint's ``config.json``) holds, in ``wanted``'s order, ``ignore`` aside. Values
    compare as JSON holds them (tuples as lists); a setting ``recorded`` lacks (written before it
    existed) is not a change; ``recorded`` is read in today's names first (:func:`migrate_train_settings`).
    The one comparison behind a resume's check, a notebook's reuse and the ledger's lookup."""
    recorded = migrate_train_settings(dict(recorded))
    return [
        k
        for k, v in wanted.items()
        if k not in ignore and k in recorded and _as_json(recorded[k]) != _as_json(v)
    ]


def migrate_train_settings(d: dict[str, Any]) -> dict[str, Any]:
    """A TrainConfig dict written by older code, in today's names: ``strategy`` is ``parallel``, and the flat
    activation settings (``k_lr_scale`` here, ``k_init`` / ``learnable_lambda`` / ``mixer_k_sharing`` in
    ``model``) become ``model.shape`` entries of the activation the run builds
    (:func:`~mswelu.modules.activations.migrate_shape_settings`, the one migration of those names). Old run
    folders' ``config.json``, YAML files, notebook parameters and the ledger's records all come through
    here; a current dict comes back unchanged."""
    d = {("parallel" if k == "strategy" else k): v for k, v in d.items()}
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    old = {k: d.pop(k) for k in OLD_SHAPE_SETTINGS if k in d}
    if not old and not set(OLD_SHAPE_SETTINGS) & set(model):
        return d
    d["model"] = migrate_shape_settings({**old, **model}, run_activation(d))
    return d


def run_activation(d: Mapping[str, Any]) -> str | None:
    """The activation a TrainConfig dict's model puts in its slots (its ``model``'s, else its own, else its
    preset's), or None for a Transformer baseline."""
    base, ref = str(d.get("preset", "small")).partition(":")[::2]
    if ref or base in BASELINES:
        return None
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    return (
        model.get("activation")
        or d.get("activation")
        or PRESETS.get(base, {}).get("activation", MsweluConfig.activation)
    )


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def merge_overrides(
    base: Mapping[str, Any], overrides: Mapping[str, Any], replace_model: bool = False
) -> dict[str, Any]:
    """``base`` (a TrainConfig dict) with ``overrides`` on top, their ``model`` settings merged over the
    base's (the override's win), or, with ``replace_model``, instead of them (a variant on another
    architecture, whose model settings the base's do not describe)."""
    model = dict(overrides.get("model") or {})
    if not replace_model:
        model = {**(base.get("model") or {}), **model}
    return {**base, **{k: v for k, v in overrides.items() if k != "model"}, "model": model}
