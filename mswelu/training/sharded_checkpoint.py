"""Sharded checkpoints for FSDP runs: PyTorch distributed checkpointing (DCP), atomic in our sense.

Each rank writes its own shards of the weights and optimizer state (``torch.distributed.checkpoint.save``
with the state dicts of ``get_state_dict``: keyed by parameter name, so they load into any sharding). The
checkpoint is assembled in a temporary folder; rank 0 adds ``trainer_state.json`` (every rank's RNG and
loader state, counters) and ``config.json``, writes the manifest last (size and sha256 of every file, the
DCP shards included) and renames the folder into place: a complete checkpoint or none. Every rank must see
the same folder (one machine, or a shared file system across nodes, as DCP itself assumes).

Loading reshards: a checkpoint written by N ranks loads into M ranks, or into a plain one-process model
(DCP needs no process group for that), since the files hold whole tensors cut into named pieces. A ``full``
checkpoint (one process or DDP) loads into an FSDP model through :func:`full_to_sharded`.

Loading runs no code from the files. Torch's DCP reader unpickles ``dcp/.metadata`` and reads every
non-tensor item (an optimizer's ``lr``, ``betas``, ...) with ``torch.load(weights_only=False)``: a folder
someone edited (its manifest rewritten to match) could run anything. :func:`load_sharded` reads the
metadata through an unpickler that builds only the classes DCP's metadata holds (:data:`METADATA_GLOBALS`,
listed from real checkpoints with ``pickletools``) and the non-tensor items with ``weights_only=True``, as
full checkpoints are read; anything else is refused with a
:class:`~mswelu.training.checkpoint.CheckpointError`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mswelu.base import distributed as du
from mswelu.base.fs import DiskFullError
from mswelu.training import checkpoint as ckpt

__all__ = [
    "METADATA_GLOBALS",
    "apply_full_optimizer_state",
    "full_to_sharded",
    "load_sharded",
    "read_metadata",
    "save_sharded",
]

DCP_DIR = "dcp"

_DCP_METADATA = "torch.distributed.checkpoint.metadata"
# every global a DCP ``.metadata`` pickle names (torch 2.13, FSDP2 checkpoints of this project): plain
# dataclasses, an enum, torch.Size, dtypes, a layout by name and the checkpoint's own path
METADATA_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        *(
            (_DCP_METADATA, name)
            for name in (
                "Metadata",
                "MetadataIndex",
                "StorageMeta",
                "TensorProperties",
                "TensorStorageMetadata",
                "BytesStorageMetadata",
                "ChunkStorageMetadata",
                "_MEM_FORMAT_ENCODING",
            )
        ),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.serialization", "_get_layout"),
        ("torch", "Size"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
    }
)


class _MetadataUnpickler(pickle.Unpickler):
    """Builds only :data:`METADATA_GLOBALS` and torch dtypes; any other global is refused unbuilt."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in METADATA_GLOBALS or (
            module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which DCP metadata never holds")


def read_metadata(path: Path) -> Any:
    """The DCP ``Metadata`` in ``path`` (a ``.metadata`` file), built without running code from it;
    :class:`~mswelu.training.checkpoint.CheckpointError` for a file that is not plain DCP metadata."""
    from torch.distributed.checkpoint.metadata import Metadata

    try:
        with open(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except Exception as exc:  # any damage: nothing in the file ran, whatever it held
        raise ckpt.CheckpointError(
            f"refusing checkpoint {path.parent.parent}: {path.name} is not plain DCP metadata ({exc}); "
            "it was edited or damaged, and loading it could run code: use a checkpoint you trust"
        ) from None
    if not isinstance(metadata, Metadata):
        raise ckpt.CheckpointError(
            f"refusing checkpoint {path.parent.parent}: {path.name} holds a {type(metadata).__name__}, "
            "not DCP metadata"
        )
    return metadata


def _safe_reader_and_planner(folder: Path) -> tuple[Any, Any]:
    """A DCP storage reader whose metadata comes from :func:`read_metadata`, and a load planner that reads
    non-tensor items with ``weights_only=True``."""
    from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata = read_metadata(Path(self._get_metadata_path(kwargs.get("rank"))))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class SafePlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            try:
                obj = torch.load(value, weights_only=True)
            except pickle.UnpicklingError:
                raise ckpt.CheckpointError(
                    f"refusing checkpoint {folder.parent}: its item {read_item.dest_index.fqn!r} is not "
                    "plain data (it was edited, and loading it could run code): use a checkpoint you trust"
                ) from None
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeReader(str(folder)), SafePlanner()


def _dcp_load(state: dict[str, Any], folder: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    reader, planner = _safe_reader_and_planner(folder)
    try:
        dcp.load(state, storage_reader=reader, planner=planner)
    except CheckpointException as exc:  # DCP wraps each rank's error: ours says what is wrong
        for failure in exc.failures.values():  # (exception, traceback summary) per rank
            inner = failure[0] if isinstance(failure, tuple) else failure
            if isinstance(inner, ckpt.CheckpointError):
                raise ckpt.CheckpointError(str(inner)) from None
        first = next(iter(exc.failures.values()), None)
        inner = first[0] if isinstance(first, tuple) else first
        raise ckpt.CheckpointError(
            f"checkpoint {folder.parent} cannot be read ({type(inner).__name__}: {inner}); it is damaged "
            "or does not fit this model"
        ) from None


def _state_dicts(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> tuple[dict, dict]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    return get_state_dict(model, optimizers)


def save_sharded(
    ckpt_dir: Path,
    step: int,
    model: nn.Module,
    optimizers: list[torch.optim.Optimizer],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    keep: int | None,
    info: du.DistInfo,
) -> Path:
    """Write ``ckpt_dir/step_XXXXXXX`` from every rank (collective: all ranks call it with the same
    arguments; ``trainer_state`` matters on rank 0 only)."""
    import torch.distributed.checkpoint as dcp

    final = ckpt_dir / ckpt.checkpoint_name(step)
    tmp = ckpt_dir / f".tmp-{final.name}-{du.broadcast_object(os.getpid(), info)}"
    error = None
    if info.is_main:
        try:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
            ckpt.check_room(ckpt_dir, step, _estimated_bytes(model, optimizers, info.world_size))
            tmp.mkdir()
        except (OSError, DiskFullError) as exc:
            error = exc
    error = du.broadcast_object(error, info)
    if error is not None:
        raise error
    model_sd, optim_sd = _state_dicts(model, optimizers)
    try:
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / DCP_DIR))
        du.barrier(info)
        if info.is_main:
            state = {"format_version": ckpt.FORMAT_VERSION, "step": step, **trainer_state}
            (tmp / "trainer_state.json").write_text(json.dumps(ckpt.to_portable(state)))
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
            names = [f"{DCP_DIR}/{p.name}" for p in sorted((tmp / DCP_DIR).iterdir()) if p.is_file()]
            ckpt.write_manifest(
                tmp,
                step,
                trainer_state.get("tokens"),
                [*names, "trainer_state.json", "config.json"],
                "sharded",
            )
            ckpt.publish(tmp, final, keep)
    except BaseException:
        if info.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    du.barrier(info)
    return final


def _estimated_bytes(model: nn.Module, optimizers: list[torch.optim.Optimizer], world_size: int) -> int:
    """Whole-model weights plus optimizer state (every rank writes its share to the same folder)."""
    from torch.distributed.tensor import DTensor

    def whole(t: torch.Tensor) -> int:
        n = math.prod(t.shape) if isinstance(t, DTensor) else t.numel()
        return n * t.element_size()

    weights = sum(whole(p) for p in model.parameters())
    state = sum(
        whole(t) for opt in optimizers for s in opt.state.values() for t in s.values() if torch.is_tensor(t)
    )
    return int((weights + state) * 1.05) + (1 << 20)


def load_sharded(
    path: Path, model: nn.Module, optimizers: list[torch.optim.Optimizer] | None
) -> dict[str, Any]:
    """Load a sharded checkpoint into ``model`` (FSDP, DDP or plain) and ``optimizers`` (None: weights
    only); every rank of a distributed run calls it. Returns the trainer state."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    ckpt.verify_checkpoint(path)
    read_metadata(path / DCP_DIR / ".metadata")  # refused here, on every rank, before DCP reads anything
    if optimizers is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        model_sd = get_model_state_dict(model)
        _dcp_load({"model": model_sd}, path / DCP_DIR)
        set_model_state_dict(model, model_sd)
    else:
        model_sd, optim_sd = _state_dicts(model, optimizers)
        try:
            _dcp_load({"model": model_sd, "optim": optim_sd}, path / DCP_DIR)
        except ckpt.CheckpointError:
            raise
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ckpt.CheckpointError(
                f"checkpoint {path} does not fit the model or optimizer: {exc}"
            ) from exc
        set_state_dict(model, optimizers, model_state_dict=model_sd, optim_state_dict=optim_sd)
    return ckpt.from_portable(json.loads((path / "trainer_state.json").read_text()))


def full_to_sharded(
    path: Path, raw_model: nn.Module, plain_optimizer: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a ``full`` checkpoint into the still-unsharded ``raw_model`` and a throwaway optimizer of the
    same kind (``plain_optimizer``, built on it), and return (the optimizer state keyed by parameter name,
    the trainer state): what :func:`apply_full_optimizer_state` puts into the sharded optimizer."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = ckpt.load_checkpoint(path, raw_model, plain_optimizer)
    return get_optimizer_state_dict(raw_model, plain_optimizer.optimizers), state


def apply_full_optimizer_state(
    model: nn.Module, optimizers: list[torch.optim.Optimizer], state: dict
) -> None:
    """Shard a whole (parameter-name keyed) optimizer state into the optimizers of a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizers, state, options=StateDictOptions(full_state_dict=True))
