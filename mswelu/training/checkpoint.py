"""Atomic, verifiable training checkpoints.

Layout of one checkpoint, ``<run>/checkpoints/step_0000100/``:

- ``model.safetensors``   weights (``safetensors.torch.save_model``: handles the tied LM head)
- ``optimizer.pt``        optimizer state (tensors and plain values only: loads with ``weights_only=True``)
- ``trainer_state.json``  step, tokens, schedule, every RNG state, every rank's loader state, counters
- ``config.json``         the resolved TrainConfig
- ``manifest.json``       written last: size and sha256 of every file above, and the ``format``

That is the ``full`` format (one process, or DDP: rank 0 writes). Under FSDP a checkpoint is ``sharded``
(:mod:`mswelu.training.sharded_checkpoint`): ``dcp/`` holds the weights and optimizer state as PyTorch
distributed checkpoint files, each rank writing its own shards, in place of ``model.safetensors`` and
``optimizer.pt``; the other files and the atomic write are the same.

A checkpoint is written into ``checkpoints/.tmp-step_XXXXXXX-<pid>/``, every file fsync'ed, the manifest
written, the folder renamed into place and the parent fsync'ed. A killed writer therefore leaves either the
previous checkpoints untouched plus a ``.tmp-*`` folder (ignored, cleaned up later), or a complete new one.
A checkpoint whose manifest is missing or whose files do not match it is never resumed from.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from mswelu.base.fs import DiskFullError, fsync_dir, fsync_file, leftovers, pid_alive, sha256_file
from mswelu.models.build import unwrap

FORMAT_VERSION = 1
CKPT_RE = re.compile(r"^step_(\d{7,})$")
MANIFEST = "manifest.json"
REQUIRED_FILES = ("model.safetensors", "optimizer.pt", "trainer_state.json", "config.json")
#: the files each checkpoint format must list in its manifest
FORMATS = {"full": REQUIRED_FILES, "sharded": ("dcp/.metadata", "trainer_state.json", "config.json")}


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete or corrupt."""


# --------------------------------------------------------------------- JSON encoding of RNG / loader state
def to_portable(obj: Any) -> Any:
    """Tensors and numpy arrays -> tagged JSON-able dicts, recursively (inverse: :func:`from_portable`)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return {
            "__tensor__": t.tolist(),
            "dtype": str(t.dtype).removeprefix("torch."),
            "shape": list(t.shape),
        }
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype), "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_portable(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {"__tuple__": [to_portable(v) for v in obj]}
    if isinstance(obj, list):
        return [to_portable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def from_portable(obj: Any) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            dtype = getattr(torch, obj["dtype"])
            return torch.tensor(obj["__tensor__"], dtype=dtype).reshape(obj["shape"])
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"]).reshape(obj["shape"])
        if "__tuple__" in obj:
            return tuple(from_portable(v) for v in obj["__tuple__"])
        return {k: from_portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_portable(v) for v in obj]
    return obj


def seed_everything(seed: int) -> None:
    """Seed every RNG :func:`rng_state` saves."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop can touch: python, numpy, torch CPU and all CUDA devices."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(tuple(state["numpy"]))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.to(torch.uint8) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------------------- listing
def checkpoint_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint folders (complete or not) sorted by step, oldest first; temporary folders excluded."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if p.is_dir() and (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def verify_checkpoint(path: str | Path, check_hash: bool = True) -> dict[str, Any]:
    """The manifest of a complete, intact checkpoint; :class:`CheckpointError` saying what is wrong
    otherwise (missing manifest = the write never finished; size or hash mismatch = corrupt)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete (no {MANIFEST}: the write did not finish)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path} has an unreadable {MANIFEST}: {exc}") from exc
    fmt = manifest.get("format", "full")
    if fmt not in FORMATS:
        raise CheckpointError(f"checkpoint {path} has an unknown format {fmt!r}")
    for name in FORMATS[fmt]:
        if name not in files:
            raise CheckpointError(f"checkpoint {path} manifest lists no {name}")
    for name, info in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path} is missing {name}")
        if (size := f.stat().st_size) != info["bytes"]:
            raise CheckpointError(
                f"checkpoint {path}: {name} has {size} bytes, manifest says {info['bytes']}"
            )
        if check_hash and sha256_file(f) != info["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its sha256 (corrupt)")
    return manifest


def latest_checkpoint(
    ckpt_dir: str | Path, check_hash: bool = True
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(newest complete and intact checkpoint or None, [(skipped newer checkpoint, why)])."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            verify_checkpoint(path, check_hash=check_hash)
        except CheckpointError as exc:
            skipped.append((path, str(exc)))
            continue
        return path, skipped
    return None, skipped


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "config.json").read_text())


# ----------------------------------------------------------------------------------------- save / load
def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in unwrap(model).parameters())


def save_checkpoint(
    ckpt_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: Any,
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    keep: int | None = None,
) -> Path:
    """Write ``ckpt_dir/step_XXXXXXX`` atomically (see module docstring); prune to the newest ``keep``.
    Refuses (``FloatingPointError``) to save weights that are not all finite."""
    model = unwrap(model)
    if not all_finite(model):
        raise FloatingPointError(f"refusing to checkpoint step {step}: the weights contain NaN or inf")
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / checkpoint_name(step)
    tmp = ckpt_dir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    check_room(ckpt_dir, step, _estimated_bytes(model, optimizer))
    tmp.mkdir()
    try:
        _write_files(tmp, step, model, optimizer, trainer_state, config)
    except BaseException as exc:  # leave nothing half-written behind
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError(
                f"the disk filled up while writing checkpoint step {step} in {ckpt_dir}; the partial "
                "checkpoint was removed and the earlier ones are intact: free some space and resume "
                "(--resume auto)"
            ) from exc
        raise
    return publish(tmp, final, keep)


def publish(tmp: Path, final: Path, keep: int | None) -> Path:
    """Rename a complete temporary checkpoint folder into place (swapping out an earlier one of the same
    step), fsync the parent, prune to the newest ``keep``."""
    ckpt_dir = final.parent
    if final.exists():  # re-saving a step (e.g. a stop right after a periodic save): swap atomically-ish
        old = ckpt_dir / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_dir(ckpt_dir)
    if keep is not None and keep > 0:
        prune_checkpoints(ckpt_dir, keep)
    return final


def check_room(ckpt_dir: Path, step: int, need: int) -> None:
    """DiskFullError before a checkpoint of about ``need`` bytes is started without room for it."""
    free = shutil.disk_usage(ckpt_dir).free
    if free < need:
        raise DiskFullError(
            f"not enough disk space for checkpoint step {step}: about {need / 2**20:.0f} MiB needed, "
            f"{free / 2**20:.0f} MiB free in {ckpt_dir}; free some space and resume (--resume auto): the "
            "earlier checkpoints are intact"
        )


def _estimated_bytes(model: nn.Module, optimizer: Any) -> int:
    """What a checkpoint will take: the weights, the optimizer's tensors, and a margin."""
    tensors = [*model.parameters(), *_tensors(optimizer.state_dict())]
    return int(sum(t.numel() * t.element_size() for t in tensors) * 1.05) + (1 << 20)


def _tensors(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, or torch's "unexpected pos" / "file write failed" that a full disk produces."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "write failed" in str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def _write_files(tmp: Path, step: int, model: nn.Module, optimizer: Any, state: dict, config: dict) -> None:
    """Every file of a checkpoint, fsync'ed, and the manifest last."""
    save_model(model, str(tmp / "model.safetensors"), metadata={"step": str(step), "format": "pt"})
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    saved = {"format_version": FORMAT_VERSION, "step": step, **state}
    (tmp / "trainer_state.json").write_text(json.dumps(to_portable(saved)))
    (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    write_manifest(tmp, step, state.get("tokens"), REQUIRED_FILES, "full")


def write_manifest(folder: Path, step: int, tokens: Any, names: Any, fmt: str) -> None:
    """fsync every file of ``names`` (paths relative to ``folder``), then write the manifest listing their
    sizes and sha256 (last: a checkpoint without it is incomplete) and fsync the folder."""
    files = {}
    for name in names:
        fsync_file(folder / name)
        files[name] = {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
    manifest = {
        "format_version": FORMAT_VERSION,
        "format": fmt,
        "step": step,
        "tokens": tokens,
        "files": files,
    }
    with open(folder / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    for sub in {(folder / n).parent for n in names}:
        fsync_dir(sub)
    fsync_dir(folder)


def checkpoint_format(path: str | Path) -> str:
    """``"full"`` or ``"sharded"``, from the manifest (``full`` when it predates the field)."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text()).get("format", "full")
    except (OSError, json.JSONDecodeError):
        return "full"


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints, incomplete ones older than the newest
    complete one, and stale temporary folders of dead writers. Returns what was removed."""
    ckpt_dir = Path(ckpt_dir)
    removed = []
    complete = [p for p in list_checkpoints(ckpt_dir) if (p / MANIFEST).is_file()]
    newest = complete[-1] if complete else None
    for p in complete[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    for p in list_checkpoints(ckpt_dir):
        if not (p / MANIFEST).is_file() and newest is not None and p.name < newest.name:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    for p in ckpt_dir.glob(".tmp-step_*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


_LEFTOVER = re.compile(r"\.(?P<kind>tmp|old)-(?P<step>step_\d+)-(?P<pid>\d+)")


def clean_leftovers(ckpt_dir: str | Path) -> list[str]:
    """Clean up after checkpoint writers that died mid-write (a kill, a power cut): a ``.tmp-step_*-<pid>``
    folder never became a checkpoint and is removed; an ``.old-step_*-<pid>`` folder is the earlier copy of
    a step being saved again, removed where the new copy is in place and put back where it is not. Only
    folders of exactly these names whose writer process is gone are touched. Returns what was done, one
    phrase per folder."""
    ckpt_dir = Path(ckpt_dir)
    done: list[str] = []
    for p, m in leftovers(ckpt_dir, _LEFTOVER):
        final = ckpt_dir / m["step"]
        if m["kind"] == "old" and not final.exists() and (p / MANIFEST).is_file():
            os.rename(p, final)
            done.append(f"put {final.name} back from {p.name}")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}")
    if done:
        fsync_dir(ckpt_dir)
    return done


def load_checkpoint(
    path: str | Path,
    model: nn.Module,
    optimizer: Any | None = None,
    map_location: str | torch.device = "cpu",
    check_hash: bool = True,
) -> dict[str, Any]:
    """Verify ``path``, load weights into ``model`` (strict) and state into ``optimizer``; return the
    trainer state (step, tokens, rng, loaders, ...)."""
    path = Path(path)
    verify_checkpoint(path, check_hash=check_hash)
    target = unwrap(model)
    device = next(target.parameters()).device
    try:
        load_model(target, str(path / "model.safetensors"), strict=True, device=str(device))
    except RuntimeError as exc:  # missing / unexpected keys or shape mismatches
        raise CheckpointError(f"checkpoint {path} does not fit the model: {exc}") from exc
    if optimizer is not None:
        optimizer.load_state_dict(
            torch.load(path / "optimizer.pt", map_location=map_location, weights_only=True)
        )
    return from_portable(json.loads((path / "trainer_state.json").read_text()))
