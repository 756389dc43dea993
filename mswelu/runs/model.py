"""The model of a run (``final/``, else its newest complete checkpoint's weights with the recorded model
config) and the tokenizer it trained with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mswelu.base.distributed import resolve_device
from mswelu.base.progress import log
from mswelu.runs.folder import CHECKPOINTS, CONFIG, FINAL, model_source, read_json
from mswelu.training import checkpoint as ckpt

__all__ = ["load_model", "tokenizer_name"]


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Path]:
    """(model in eval mode, its folder) of a run; a broken ``final/`` falls back to the newest checkpoint."""
    device = str(resolve_device(device))  # a device that cannot be used is the error, not the model
    path = Path(path)
    kind, source = model_source(path)
    if kind in ("final", "model"):
        try:
            return _from_pretrained(
                source, device, _trained_model_type(path) if kind == "final" else None
            ), source
        except Exception as exc:  # OSError, ValueError, SafetensorError, ...: a broken or foreign folder
            complete = [p for p in ckpt.list_checkpoints(path / CHECKPOINTS) if (p / ckpt.MANIFEST).is_file()]
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
            if kind == "model" or not complete:
                raise ValueError(f"{source} does not hold loadable weights ({why})") from exc
            log(
                f"{source} does not hold loadable weights ({why}); falling back to checkpoint step "
                f"{_step(complete[-1])} ({complete[-1].name})",
                source="mswelu",
            )
            source = complete[-1]
    else:
        log(
            f"{path} has no {FINAL}/ (still training, or interrupted): using the weights of its newest "
            f"checkpoint, step {_step(source)}",
            source="mswelu",
        )
    return _from_checkpoint(source, device), source


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("_")[-1])


def _trained_model_type(run: Path) -> str | None:
    """The model type the run trained (its ``config.json``'s model config), None if it does not say."""
    return ((read_json(run / CONFIG) or {}).get("_model_config") or {}).get("model_type")


def _from_pretrained(folder: Path, device: str, expected_type: str | None = None) -> Any:
    """A ``save_pretrained`` folder's model; ValueError unless its weights match exactly."""
    from transformers import AutoModelForCausalLM

    import mswelu.models.modeling  # noqa: F401  (registers mamba_swelu with the Auto classes)
    from mswelu.base.hf_compat import quiet_progress_bars

    named = (read_json(folder / CONFIG) or {}).get("model_type")
    if expected_type is not None and named != expected_type:
        raise ValueError(f"its config.json names model type {named!r}; the run trained {expected_type!r}")
    with quiet_progress_bars():
        model, info = AutoModelForCausalLM.from_pretrained(  # safetensors only: never a pickle
            folder, output_loading_info=True, use_safetensors=True, trust_remote_code=False
        )
    wrong = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(wrong.values()):
        said = "; ".join(
            f"{len(v)} {k.replace('_keys', '')} (e.g. {v[0] if isinstance(v[0], str) else v[0][0]})"
            for k, v in wrong.items()
            if v
        )
        raise ValueError(f"its weights do not fit a {named} model: {said}")
    return model.to(device).eval()


def _from_checkpoint(folder: Path, device: str) -> Any:
    """A checkpoint's model, built from the recorded config, its weights verified against the manifest."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import mswelu.models.modeling  # noqa: F401

    train_cfg = read_json(folder / CONFIG) or {}
    model_cfg = dict(train_cfg.get("_model_config") or {})
    model_type = model_cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"checkpoint {folder} records no model config; it cannot be loaded as a model")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **model_cfg))
    try:
        if ckpt.checkpoint_format(folder) == "sharded":  # an FSDP run's: DCP shards, read whole here
            from mswelu.training.sharded_checkpoint import load_sharded

            load_sharded(folder, model, None)
        else:
            ckpt.load_checkpoint(folder, model)
    except ckpt.CheckpointError as exc:
        raise ValueError(str(exc)) from exc
    return model.to(device).eval()


def tokenizer_name(path: str | os.PathLike[str]) -> str:
    """The tokenizer the run's data was prepared with (``gpt2`` when nothing says otherwise)."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        cfg = read_json(folder / CONFIG) or {}
        data = cfg.get("data")
        if data:
            from mswelu.data import tokenizer_name as dataset_tokenizer_name

            return dataset_tokenizer_name(data, read_json(Path(data) / "meta.json") or {})
    return "gpt2"
