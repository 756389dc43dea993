"""The model of a run: ``final/``, or else the weights of its newest complete checkpoint (an interrupted
run), built from the model config the trainer recorded with them; and the tokenizer the run trained with.
The folder's layout is :mod:`mswelu.runs`'s."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mswelu import checkpoint as ckpt
from mswelu.distributed import resolve_device
from mswelu.progress import log
from mswelu.runs import CHECKPOINTS, CONFIG, model_source, read_json

__all__ = ["load_model", "tokenizer_name"]


def load_model(path: str | os.PathLike[str], device: str = "cpu") -> tuple[Any, Path]:
    """(model in eval mode, the folder it came from) of a run or saved model folder (see
    :func:`mswelu.runs.model_source`). A ``final/`` that does not load falls back to the newest checkpoint,
    saying so."""
    device = str(resolve_device(device))  # a device that cannot be used is the error, not the model
    path = Path(path)
    kind, source = model_source(path)
    if kind in ("final", "model"):
        try:
            return _from_pretrained(source, device), source
        except Exception as exc:  # OSError, ValueError, SafetensorError, ...: a broken or foreign folder
            complete = [p for p in ckpt.list_checkpoints(path / CHECKPOINTS) if (p / ckpt.MANIFEST).is_file()]
            if kind == "model" or not complete:
                raise ValueError(
                    f"the model in {source} cannot be loaded ({type(exc).__name__}: {exc})"
                ) from exc
            log(
                f"{source} cannot be loaded ({type(exc).__name__}); using the newest checkpoint "
                f"{complete[-1].name}",
                source="mswelu",
            )
            source = complete[-1]
    return _from_checkpoint(source, device), source


def _from_pretrained(folder: Path, device: str) -> Any:
    from transformers import AutoModelForCausalLM

    import mswelu.modeling  # noqa: F401  (registers mamba_swelu with the Auto classes)
    from mswelu.hf_compat import quiet_progress_bars

    with quiet_progress_bars():
        model = AutoModelForCausalLM.from_pretrained(folder)
    return model.to(device).eval()


def _from_checkpoint(folder: Path, device: str) -> Any:
    """The model of a checkpoint: built from the model config the trainer recorded, then its weights
    (verified against the manifest)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    import mswelu.modeling  # noqa: F401

    train_cfg = read_json(folder / CONFIG) or {}
    model_cfg = dict(train_cfg.get("_model_config") or {})
    model_type = model_cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError(f"checkpoint {folder} records no model config; it cannot be loaded as a model")
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **model_cfg))
    try:
        if ckpt.checkpoint_format(folder) == "sharded":  # an FSDP run's: DCP shards, read whole here
            from mswelu.sharded_checkpoint import load_sharded

            load_sharded(folder, model, None)
        else:
            ckpt.load_checkpoint(folder, model)
    except ckpt.CheckpointError as exc:
        raise ValueError(str(exc)) from exc
    return model.to(device).eval()


def tokenizer_name(path: str | os.PathLike[str]) -> str:
    """The tokenizer the run's data was prepared with (``config.json`` -> data -> ``meta.json``), for a
    run folder or a folder inside one (``final/``, a checkpoint); ``gpt2`` when nothing says otherwise."""
    path = Path(path)
    for folder in (path, path.parent, path.parent.parent):
        cfg = read_json(folder / CONFIG) or {}
        data = cfg.get("data")
        if data:
            from mswelu.data import tokenizer_name as dataset_tokenizer_name

            return dataset_tokenizer_name(data, read_json(Path(data) / "meta.json") or {})
    return "gpt2"
