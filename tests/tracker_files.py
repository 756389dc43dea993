"""Reading back what the trackers wrote, with their own formats and libraries: a wandb offline run's
``run-<id>.wandb`` file (the records ``wandb sync`` uploads) and trackio's local store."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of checksummed record fragments
_HEADER = 7  # ":W&B", a 2-byte magic, a version byte
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(run_dir: Path) -> list[Any]:
    """Every record (``wandb.proto.wandb_internal_pb2.Record``) of a wandb run folder, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    payloads, pos, pending = [], _HEADER, b""
    while pos + 7 <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == _FULL:
            payloads.append(chunk)
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            payloads.append(pending + chunk)
    records = []
    for p in payloads:
        r = pb.Record()
        r.ParseFromString(p)
        records.append(r)
    return records


def wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    """The run's history rows (what ``run.log`` logged), keys as logged."""
    rows = []
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item})
    return rows


def wandb_config(run_dir: Path) -> dict[str, Any]:
    """The run's config, as its ``run`` record holds it."""
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "run":
            return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.run.config.update}
    return {}


def wandb_artifact_files(run_dir: Path) -> list[str]:
    """The file names of every artifact the run logged."""
    names = []
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "artifact":
            names.extend(c.path for c in r.artifact.manifest.contents)
    return names
