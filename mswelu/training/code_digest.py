"""Which source files a run's numbers depend on, and their digest: what makes a finished run (or a study's
ledger record) reusable after the code changed elsewhere, and stale after a change on its own path.

A run's training path is the shared core (the loop, the config, the optimizer and schedule, evaluation, the
data loader, the model's frame, the fused loss, the compiled CPU kernels) plus what its configuration
actually uses: the block file of each mixer in its layer pattern and the activation it puts in its slots,
each with the modules and ops those import, or the baseline family's file for a Transformer. Reports,
notebooks, analysis, generation, docs and benchmarks are not on it. A change to ``modules/mamba2_mixer.py``
therefore invalidates the Mamba-2 runs only, one to ``trainer.py`` every run.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["CORE", "changed_files", "training_code"]

PACKAGE = Path(__file__).resolve().parents[1]

#: files every run's numbers depend on (package-relative)
CORE = (
    "trainer.py",
    "training/config.py",
    "training/optim.py",
    "training/schedule.py",
    "training/evaluation.py",
    "training/parallel.py",
    "models/build.py",
    "models/modeling.py",
    "models/configuration.py",
    "models/presets.py",
    "data/loader.py",
    "data/positions.py",
    "data/dataset_checks.py",
    "data/shards.py",
    "data/tokenizer.py",
    "data/sources.py",
    "ops/lm_loss.py",
    "ops/cpu_kernels.py",
    "ops/csrc/cpu_kernels.cpp",
    "modules/norms.py",
    "modules/mixers/common.py",
    "modules/mixers/registry.py",
    "modules/activations/registry.py",
    "modules/activations/settings.py",
)
#: the folders whose imports are followed from a mixer's or an activation's file
_FOLLOWED = ("modules", "ops")


def _rel(path: str | Path | None) -> str | None:
    """``path`` relative to the package, or None for a file outside it (torch's own modules)."""
    if path is None:
        return None
    resolved = Path(path).resolve()
    return resolved.relative_to(PACKAGE).as_posix() if resolved.is_relative_to(PACKAGE) else None


@cache
def _imports(rel: str) -> tuple[str, ...]:
    """Package files ``rel`` imports that lie in :data:`_FOLLOWED`."""
    out = []
    for node in ast.walk(ast.parse((PACKAGE / rel).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mswelu."):
            parts = node.module.split(".")[1:]
            for name in [a.name for a in node.names] + [""]:
                candidate = Path(*parts, name) if name else Path(*parts)
                for path in (PACKAGE / candidate.with_suffix(".py"), PACKAGE / candidate / "__init__.py"):
                    if path.is_file() and path.relative_to(PACKAGE).parts[0] in _FOLLOWED:
                        out.append(path.relative_to(PACKAGE).as_posix())
                        break
    return tuple(sorted(set(out)))


def _closure(starts: set[str]) -> set[str]:
    seen, todo = set(), list(starts)
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        todo += [r for r in _imports(rel) if r not in seen and not r.endswith("__init__.py")]
    return seen


def _entry_points(config: Mapping[str, Any]) -> set[str]:
    """The files a TrainConfig dict's model uses beyond the core: its mixers' blocks and its activation,
    or its baseline family."""
    from mswelu.models.baselines import BASELINES
    from mswelu.models.build import parse_model_name
    from mswelu.models.configuration import MsweluConfig
    from mswelu.modules.activations import ACTIVATIONS
    from mswelu.modules.mixers import mixer_spec

    base, ref = parse_model_name(str(config.get("preset", "small")))
    if ref is not None:  # the family's module and the sizing that picks its width and depth
        return {_rel(inspect.getsourcefile(BASELINES[base])), "models/baselines/__init__.py"}
    model = {k: v for k, v in dict(config.get("model") or {}).items() if k != "vocab_size"}
    model = {"eos_token_id": None, **model}  # a stand-in vocabulary: no end-of-text id to check against it
    cfg = MsweluConfig.for_run(base, 512, int(config.get("seq_len", 256)), config.get("activation"), **model)
    files = {_rel(inspect.getsourcefile(mixer_spec(m).block)) for m in set(cfg.layer_mixers())}
    spec = ACTIVATIONS[cfg.activation]
    files.add(_rel(inspect.getsourcefile(spec.module_type)))
    files.add(_rel(inspect.getsourcefile(inspect.getmodule(spec.build))))
    return {f for f in files if f is not None}


def _task_files(config: Mapping[str, Any]) -> set[str]:
    """For a run on a synthetic task (``data: task:...``): the task package's registry and source and the
    task's own file; nothing for a text run."""
    from mswelu.data.tasks import TaskSource, is_task_source

    if not is_task_source(config.get("data")):
        return set()
    task = TaskSource(str(config["data"])).task
    return {"data/tasks/registry.py", "data/tasks/source.py", _rel(inspect.getsourcefile(task.sample))}


def training_code(config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"digest": sha256, "files": {path: sha256}}`` of the training path of a run of ``config`` (a
    TrainConfig dict; see the module docstring)."""
    files = sorted(set(CORE) | _closure(_entry_points(config)) | _task_files(config))
    hashes = {f: hashlib.sha256((PACKAGE / f).read_bytes()).hexdigest()[:16] for f in files}
    digest = hashlib.sha256("".join(f"{f}:{h}\n" for f, h in hashes.items()).encode()).hexdigest()[:16]
    return {"digest": digest, "files": hashes}


def changed_files(recorded: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """The training-path files whose content differs between a recorded :func:`training_code` and now
    (added and removed ones included); every file when nothing was recorded."""
    old = dict((recorded or {}).get("files") or {})
    new = dict(now.get("files") or {})
    return sorted(f for f in set(old) | set(new) if old.get(f) != new.get(f))
