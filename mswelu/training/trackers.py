"""Experiment trackers: TensorBoard (the default), Weights & Biases and Trackio, one or several at once.

Every tracker gets the same scalars, named as TensorBoard has always shown them (:func:`scalars`):
``train/loss``, ``train/grad_norm``, ``train/tokens_per_s``, ``lr/<group>``, ``<param>/<slot>`` for every
shape parameter that learns (``k/blocks.0.mixer.act``), ``val/val_loss``, ``val/val_ppl``, ``val/val_bpb``
(``val/val_accuracy`` for a run on a synthetic task) and ``device/<figure>`` (:mod:`mswelu.base.devices`);
wandb and trackio also get the run's config at the start, and at the end its ``summary.json``,
``config.json`` and
model card as a file artifact (the notebook's HTML report can follow with :func:`attach_files`).

Credentials come from the environment only (``WANDB_API_KEY``, or a ``wandb login`` entry in ``~/.netrc``);
``WANDB_MODE=offline`` writes the run under ``<run>/wandb/offline-run-*`` for ``wandb sync`` to upload
later. Trackio is local-first: it writes to its own store (``TRACKIO_DIR``, default
``~/.cache/huggingface/trackio``), which ``trackio show`` serves as a dashboard. The projects are
``WANDB_PROJECT`` / ``TRACKIO_PROJECT`` (default ``mswelu``), the run names the run folder's.

Trackers other than TensorBoard are optional extras: naming one that is not installed is a ValueError
naming the extra (:func:`check_trackers`), raised before a run writes anything. A tracker that fails
while the run trains is switched off with one notice; the run and ``metrics.jsonl`` go on.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mswelu.base.errors import with_nearest
from mswelu.base.fs import atomic_write_json
from mswelu.base.progress import log

__all__ = [
    "TRACKERS",
    "Tracker",
    "attach_files",
    "check_trackers",
    "open_trackers",
    "parse_trackers",
    "scalars",
]

# name -> (the module it needs, the extra that installs it)
TRACKERS: dict[str, tuple[str, str | None]] = {
    "tensorboard": ("tensorboard", None),  # a core dependency
    "wandb": ("wandb", "wandb"),
    "trackio": ("trackio", "trackio"),
}
DEFAULT_PROJECT = "mswelu"
_TRAIN_SCALARS = ("loss", "grad_norm", "tokens_per_s")
_VAL_SCALARS = ("val_loss", "val_ppl", "val_bpb", "val_accuracy")


def parse_trackers(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"tensorboard,wandb"`` or a list as a tuple of known tracker names (order kept, repeats dropped);
    ValueError naming an unknown one and the nearest known name."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(
            f"unknown tracker {with_nearest(unknown, TRACKERS)}: expected any of {tuple(TRACKERS)}"
        )
    return tuple(dict.fromkeys(names))


def _wandb_has_key() -> bool:
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    import netrc
    import urllib.parse

    host = urllib.parse.urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return bool(host and netrc.netrc(os.environ.get("NETRC")).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


def check_trackers(names: Sequence[str]) -> None:
    """Before a run writes anything: every tracker's package is installed (else a ValueError naming the
    extra), and wandb, unless offline or disabled, has an API key in the environment or ``~/.netrc``."""
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            how = f"pip install 'mswelu[{extra}]'" if extra else f"pip install {module}"
            raise ValueError(f"tracker {name!r} needs the {module} package, which is not installed: {how}")
    if "wandb" in names and os.environ.get("WANDB_MODE", "online").lower() in ("online", "run", ""):
        if not _wandb_has_key():
            raise ValueError(
                "tracker 'wandb' has no API key: set WANDB_API_KEY in the environment (or run `wandb "
                "login`), or set WANDB_MODE=offline to log locally and `wandb sync` the run later"
            )


def scalars(record: Mapping[str, Any], shape_params: Iterable[str] = ()) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` record under their tracker names (see the module docstring).
    ``shape_params``: the shape parameters that learn (frozen ones would draw flat lines)."""
    out: dict[str, float] = {}
    for key in (*_TRAIN_SCALARS, *_VAL_SCALARS):
        if isinstance(record.get(key), int | float) and not isinstance(record.get(key), bool):
            out[f"{'val' if key.startswith('val') else 'train'}/{key}"] = float(record[key])
    for group in ("lr", *shape_params):
        values = record.get(group)
        for name, value in values.items() if isinstance(values, Mapping) else ():
            out[f"{group}/{name}"] = float(value)
    for name, value in (record.get("device") or {}).items():
        out[f"device/{name}"] = float(value)
    return out


class Tracker:
    """One tracker's run. ``log`` gets :func:`scalars` of each record; ``finish`` the run's final figures
    and the files to keep with it."""

    name = "tracker"

    def log(self, values: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def finish(self, summary: Mapping[str, Any], files: Sequence[Path], failed: bool = False) -> None:
        pass

    def state(self) -> dict[str, Any]:
        """What :func:`attach_files` needs to reopen this run later (kept in the run folder)."""
        return {}


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def __init__(self, folder: Path, resume_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=resume_step)

    def log(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def finish(self, summary: Mapping[str, Any], files: Sequence[Path], failed: bool = False) -> None:
        self.writer.close()


def _artifact_name(run_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", run_name).strip("-") or "run"


def _figures(summary: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool) or v is None}


class WandbTracker(Tracker):
    """A wandb run in ``<run>/wandb/`` (``dir``); every record is one ``log`` call carrying ``step``, which
    is the x-axis of every other key (``define_metric``), so a resumed run never loses a point to wandb's
    own step counter."""

    name = "wandb"

    def __init__(
        self, run_dir: Path, run_name: str, config: Mapping[str, Any], resume_id: str | None
    ) -> None:
        import wandb

        self.wandb = wandb
        kwargs: dict[str, Any] = {"resume": "allow", "id": resume_id} if resume_id else {}
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT),
            entity=os.environ.get("WANDB_ENTITY") or None,
            name=run_name,
            dir=str(run_dir),
            config=dict(config),
            reinit="create_new",  # never finish a run of the user's own
            settings=wandb.Settings(console="off"),
            **kwargs,
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        self.run_name = run_name

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log({"step": step, **values})

    def finish(self, summary: Mapping[str, Any], files: Sequence[Path], failed: bool = False) -> None:
        self.run.summary.update(_figures(summary))
        _log_files(self.wandb, self.run, self.run_name, files)
        self.run.finish(exit_code=1 if failed else 0)

    def state(self) -> dict[str, Any]:
        return {"id": self.run.id, "project": self.run.project, "entity": self.run.entity}


def _log_files(lib: Any, run: Any, run_name: str, files: Sequence[Path]) -> None:
    """The run's files as one artifact of ``lib`` (wandb or trackio: the same Artifact API)."""
    files = [Path(f) for f in files if Path(f).is_file()]
    if files:
        art = lib.Artifact(f"{_artifact_name(run_name)}-files", type="run-files")
        for f in files:
            art.add_file(str(f), name=f.name)
        run.log_artifact(art)


class TrackioTracker(Tracker):
    """A trackio run in its local store; trackio prints where on stdout, which goes to stderr here (the
    training command's stdout is its JSON summary)."""

    name = "trackio"

    def __init__(self, run_name: str, config: Mapping[str, Any], resume: bool) -> None:
        import trackio

        self.trackio, self.run_name = trackio, run_name
        self.project = os.environ.get("TRACKIO_PROJECT", DEFAULT_PROJECT)
        with contextlib.redirect_stdout(sys.stderr):
            self.run = trackio.init(
                project=self.project,
                name=run_name,
                config=dict(config),
                resume="allow" if resume else "never",
                embed=False,
                auto_log_gpu=False,  # the device figures come from mswelu.base.devices, as for every tracker
                auto_log_cpu=False,
            )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, summary: Mapping[str, Any], files: Sequence[Path], failed: bool = False) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            _log_files(self.trackio, self.run, self.run_name, files)
            _trackio_finish(self.trackio, self.run)

    def state(self) -> dict[str, Any]:
        from trackio.utils import TRACKIO_DIR

        return {"project": self.project, "name": self.run_name, "dir": str(TRACKIO_DIR)}


def _trackio_finish(trackio: Any, run: Any) -> None:
    """Finish ``run``; when it is trackio's current run, through ``trackio.finish`` so that trackio's own
    exit handler does not finish it (and say so) a second time."""
    current = getattr(getattr(trackio, "context_vars", None), "current_run", None)
    if current is not None and current.get() is run:
        trackio.finish()
    else:
        run.finish()


def open_trackers(
    names: Sequence[str],
    *,
    run_dir: Path,
    tensorboard_dir: Path,
    state_path: Path,
    config: Mapping[str, Any],
    resume_step: int | None,
) -> list[Tracker]:
    """Start each tracker's run (a resumed training continues the wandb / trackio run it started, read from
    ``state_path``) and record how to reopen them in ``state_path``. A tracker that cannot start raises
    ValueError (the others already started are finished first)."""
    check_trackers(names)
    old = _read_state(state_path) if resume_step is not None else {}
    config = tracker_config(config)
    made = [p for p in (tensorboard_dir, run_dir / "wandb") if not p.exists()]
    opened: list[Tracker] = []
    try:
        for name in names:
            if name == "tensorboard":
                opened.append(TensorBoardTracker(tensorboard_dir, resume_step))
            elif name == "wandb":
                opened.append(WandbTracker(run_dir, run_dir.name, config, (old.get("wandb") or {}).get("id")))
            elif name == "trackio":
                opened.append(TrackioTracker(run_dir.name, config, resume=bool(old.get("trackio"))))
    except Exception as exc:
        for t in opened:
            with contextlib.suppress(Exception):
                t.finish({}, [], failed=True)
        for p in made:  # leave no debris of a run that never started
            shutil.rmtree(p, ignore_errors=True)
        why = " ".join(str(exc).split())
        raise ValueError(f"tracker {name!r} could not start: {type(exc).__name__}: {why}") from exc
    states = {t.name: t.state() for t in opened if t.state()}
    if states:
        atomic_write_json(state_path, {**old, **states})
    return opened


def tracker_config(record: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config record as trackers take it: the settings as they are, the derived values (``_``-keys,
    which wandb and trackio reserve) under ``derived``, all as plain JSON values."""
    plain = json.loads(json.dumps(dict(record), default=str))
    out = {k: v for k, v in plain.items() if not k.startswith("_")}
    derived = {k[1:]: v for k, v in plain.items() if k.startswith("_")}
    if derived:
        out["derived"] = derived
    return out


def _read_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def attach_files(state_path: Path, run_dir: Path, files: Sequence[Path]) -> list[str]:
    """Add ``files`` (e.g. the notebook's ``report.html``) to the wandb / trackio runs a training left in
    ``state_path``, reopening each; returns the trackers that got them. A tracker that is not installed
    here, or fails, is skipped with a notice."""
    state, done = _read_state(state_path), []
    for name, info in state.items():
        try:
            if name == "wandb" and importlib.util.find_spec("wandb"):
                import wandb

                run = wandb.init(
                    id=info["id"],
                    project=info.get("project"),
                    entity=info.get("entity"),
                    dir=str(run_dir),
                    resume="allow",
                    reinit="create_new",
                    settings=wandb.Settings(console="off"),
                )
                _log_files(wandb, run, run_dir.name, files)
                run.finish()
            elif name == "trackio" and importlib.util.find_spec("trackio"):
                import trackio

                with contextlib.redirect_stdout(sys.stderr):
                    run = trackio.init(project=info["project"], name=info["name"], resume="must", embed=False)
                    _log_files(trackio, run, run_dir.name, files)
                    _trackio_finish(trackio, run)
            else:
                continue
        except Exception as exc:  # noqa: BLE001 - the files stay in the run folder either way
            log(f"could not attach {[Path(f).name for f in files]} to {name}: {type(exc).__name__}: {exc}")
            continue
        done.append(name)
    return done
