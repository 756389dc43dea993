"""The bad-input probe: what a careless or unlucky user does, through the command lines a user runs, and
what must come of it. Each case sets up its files, runs one CLI in-process (``main(argv)``), and records
the exit status, the last line on stderr, whether a traceback escaped, whether anything the user had was
changed ("lost") and what was left behind.

``tests/test_bad_inputs.py`` asserts every expected outcome. ``python tests/bad_inputs.py`` prints the
table for the checkout on ``PYTHONPATH`` (how the note's before/after table was made).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_train import write_byte_dataset  # noqa: E402


@dataclass
class Outcome:
    code: int | None  # exit status; None when an exception escaped
    last_line: str
    stderr: str
    traceback: bool
    lost: bool  # a file the user had was changed or removed
    debris: list[str]  # temporary files left behind


@dataclass
class Case:
    group: str
    name: str
    run: Callable[[Path], tuple[Callable[[], int], Callable[[], bool]]]  # -> (command, lost?)
    expect: str  # "error" (non-zero, one clear line) or "recovers" (exit 0, with a notice)
    says: str  # text the last stderr line (error) or the stderr (recovery) must hold


def _snapshot(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (".lock", ".verified.json"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def _train(argv: list[str]) -> int:
    from mswelu.train import main

    return main(argv)


def _data(argv: list[str]) -> int:
    from mswelu.data.__main__ import main

    return main(argv)


def _generate(argv: list[str]) -> int:
    from mswelu.generate import main

    return main(argv)


def _tiny(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--eval-every",
        "0",
        "--eval-batches",
        "1",
        "--ckpt-every",
        "0",
        "--progress",
        "false",
        "--tensorboard",
        "false",
        *extra,
    ]


def _finished_run(tmp: Path) -> tuple[Path, Path]:
    data = write_byte_dataset(tmp / "data")
    out = tmp / "run"
    assert _train(_tiny(data, out)) == 0
    return data, out


def _unchanged(folder: Path) -> Callable[[], bool]:
    before = _snapshot(folder)
    return lambda: _snapshot(folder) != before


def _yaml_over_run(text: str) -> Callable[[Path], tuple[Callable[[], int], Callable[[], bool]]]:
    def setup(tmp: Path):
        data, out = _finished_run(tmp)
        cfg = tmp / "run.yaml"
        cfg.write_text(
            f"preset: tiny\ndata: {data}\nout: {out}\nmax_steps: 2\nbatch_size: 2\nseq_len: 16\n{text}"
        )
        return (lambda: _train(["--config", str(cfg)])), _unchanged(out)

    return setup


def _train_case(*extra: str, prepare: Callable[[Path, Path], None] | None = None, fresh: bool = False):
    def setup(tmp: Path):
        data = write_byte_dataset(tmp / "data")
        out = tmp / "run"
        if not fresh:
            assert _train(_tiny(data, out)) == 0
        if prepare is not None:
            prepare(data, out)
        return (lambda: _train(_tiny(data, out, *extra))), _unchanged(out) if out.exists() else (
            lambda: False
        )

    return setup


def _edit_meta(change: Callable[[dict], object]) -> Callable[[Path, Path], None]:
    def edit(data: Path, out: Path) -> None:
        meta = json.loads((data / "meta.json").read_text())
        change(meta)
        (data / "meta.json").write_text(json.dumps(meta))

    return edit


def _poke(name: str, value: int) -> Callable[[Path, Path], None]:
    def poke(data: Path, out: Path) -> None:
        raw = bytearray((data / name).read_bytes())
        raw[0:2] = value.to_bytes(2, "little")
        (data / name).write_bytes(bytes(raw))

    return poke


def _corpus(tmp: Path, text: bytes | None = None) -> Path:
    folder = tmp / "corpus"
    folder.mkdir()
    docs = [f"document {i}: " + " ".join(f"word{j}" for j in range(40)) for i in range(30)]
    (folder / "a.txt").write_bytes(text if text is not None else "\n\n".join(docs).encode())
    return folder


def _prepare_case(*extra: str, text: bytes | None = None, foreign: bool = False, monkey=None):
    def setup(tmp: Path):
        src = _corpus(tmp, text)
        out = tmp / "ds"
        if foreign:
            out.mkdir()
            (out / "train.bin").write_bytes(b"somebody else's tokens")
        before = _snapshot(out) if out.exists() else {}

        def command() -> int:
            with monkey() if monkey else contextlib.nullcontext():
                return _data(["prepare", "--source", str(src), "--out", str(out), "--no-progress", *extra])

        return command, (lambda: out.exists() and _snapshot(out) != before and bool(before))

    return setup


@contextlib.contextmanager
def _full_disk_during_prepare():
    from mswelu.data import shards

    real = shards._write_shards

    def full(folder, *args, **kwargs):
        raise OSError(28, "No space left on device", str(folder / "train.bin"))

    shards._write_shards = full
    try:
        yield
    finally:
        shards._write_shards = real


@contextlib.contextmanager
def _no_free_space():
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    real = shutil.disk_usage
    shutil.disk_usage = lambda path: usage(10**9, 10**9 - 4096, 4096)
    try:
        yield
    finally:
        shutil.disk_usage = real


def _disk_full_checkpoint(tmp: Path):
    data = write_byte_dataset(tmp / "data")
    out = tmp / "run"

    def command() -> int:
        with _no_free_space():
            return _train(_tiny(data, out))

    return command, lambda: False


def _locked(tmp: Path):
    from mswelu.base.fs import FolderLock

    data, out = _finished_run(tmp)
    changed = _unchanged(out)

    def command() -> int:
        with FolderLock(out, "run folder"):
            return _train(_tiny(data, out, "--resume", "auto"))

    return command, changed


def _corrupt_resume(tmp: Path):
    data, out = _finished_run(tmp)
    target = out / "checkpoints" / "step_0000002"
    (target / "optimizer.pt").write_bytes(b"x")
    changed = _unchanged(out)
    return (lambda: _train(_tiny(data, out, "--resume", str(target), "--max-steps", "4"))), changed


def _generate_case(kind: str):
    def setup(tmp: Path):
        from mswelu.workbook import data_for

        data = Path(data_for(None, "tiny"))
        out = tmp / "run"
        assert _train(_tiny(data, out)) == 0
        if kind == "no model":
            shutil.rmtree(out / "final")
            shutil.rmtree(out / "checkpoints")
        elif kind == "broken final":
            with open(out / "final" / "model.safetensors", "r+b") as f:
                f.truncate(64)
        elif kind == "foreign type":  # another architecture's config over our weights
            cfg = json.loads((out / "final" / "config.json").read_text())
            (out / "final" / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))
        elif kind == "missing weight":
            from safetensors.torch import load_file, save_file

            weights = load_file(out / "final" / "model.safetensors")
            weights.pop(sorted(weights)[0])
            save_file(weights, out / "final" / "model.safetensors", metadata={"format": "pt"})
        elif kind == "no config":
            (out / "final" / "config.json").unlink()
        elif kind == "training":  # as a run still training looks: checkpoints, no final/ yet
            shutil.rmtree(out / "final")
            (out / "summary.json").unlink()
        target = str(out) if kind != "missing" else str(tmp / "nope")
        device = ["--device", "cuda"] if kind == "cuda" else []
        return (
            lambda: _generate(["--run", target, "--prompt", "ROMEO:", "--tokens", "4", *device])
        ), lambda: False

    return setup


def _out_in_a_file(tmp: Path):
    data = write_byte_dataset(tmp / "data")
    (tmp / "afile").write_text("x")
    return (lambda: _train(_tiny(data, tmp / "afile" / "run"))), lambda: (tmp / "afile").read_text() != "x"


def _bad_top_p(tmp: Path):
    return (lambda: _generate(["--run", str(tmp), "--top-p", "3"])), lambda: False


def _no_data(tmp: Path):
    return (lambda: _train(_tiny(tmp / "nodata", tmp / "r"))), lambda: (tmp / "r").exists()


def _info_not_a_dataset(tmp: Path):
    return (lambda: _data(["info", str(tmp)])), lambda: False


def _nonfinite_stop(tmp: Path):
    import torch

    data = write_byte_dataset(tmp / "data")
    out = tmp / "run"
    from mswelu.models import modeling

    real, real_fused = torch.nn.functional.cross_entropy, modeling.linear_cross_entropy

    def command() -> int:  # both losses (from logits, and the fused head our models train with)
        torch.nn.functional.cross_entropy = lambda *a, **k: real(*a, **k) * float("nan")
        modeling.linear_cross_entropy = lambda *a, **k: real_fused(*a, **k) * float("nan")
        try:
            return _train(_tiny(data, out, "--max-consecutive-nonfinite", "2"))
        finally:
            torch.nn.functional.cross_entropy, modeling.linear_cross_entropy = real, real_fused

    return command, lambda: False


def _wandb_without_key(tmp: Path):
    """wandb named while online (WANDB_MODE unset) with no WANDB_API_KEY and no ~/.netrc entry."""
    import os

    data = write_byte_dataset(tmp / "data")
    netrc = tmp / "netrc"
    netrc.write_text("")

    def command() -> int:
        saved = {k: os.environ.get(k) for k in ("WANDB_MODE", "WANDB_API_KEY", "NETRC")}
        os.environ.pop("WANDB_MODE", None)
        os.environ.pop("WANDB_API_KEY", None)
        os.environ["NETRC"] = str(netrc)
        try:
            return _train(_tiny(data, tmp / "run", "--trackers", "tensorboard,wandb"))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    return command, lambda: (tmp / "run").exists()  # nothing may be written


def _runs_show_missing(tmp: Path):
    from mswelu.runs.index import main

    return (lambda: main(["show", str(tmp / "nope")])), lambda: False


def _misspelt_task(tmp: Path):
    from mswelu.evaluate import main

    _, out = _finished_run(tmp)
    return (lambda: main(["tasks", "--run", str(out), "--tasks", "mswelu_lastwrod"])), _unchanged(out)


def _yaml_config(text: str) -> Callable[[Path], tuple[Callable[[], int], Callable[[], bool]]]:
    """A config file with ``text`` on top of a valid tiny config that names no output folder."""

    def setup(tmp: Path):
        data = write_byte_dataset(tmp / "data")
        cfg = tmp / "run.yaml"
        cfg.write_text(f"preset: tiny\ndata: {data}\nmax_steps: 2\nbatch_size: 2\nseq_len: 16\n{text}")
        before = sorted(p.name for p in tmp.iterdir())
        return (
            lambda: _train(["--config", str(cfg)])
        ), lambda: sorted(p.name for p in tmp.iterdir()) != before

    return setup


def _dead_pid() -> int:
    """The pid of a process that has ended (a killed writer's, as far as its leftovers can tell)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _killed_prepare(moved_aside: bool):
    """A dataset whose ``prepare --force`` was killed while writing shards (a partial ``.NAME.tmp-*``), or,
    ``moved_aside``, between its two renames (the dataset itself in ``.NAME.old-*``); then a plain rerun."""

    def setup(tmp: Path):
        src = _corpus(tmp)
        out = tmp / "ds"
        argv = [
            "prepare",
            "--source",
            str(src),
            "--out",
            str(out),
            "--no-progress",
            "--txt-sample-by",
            "paragraph",
        ]
        assert _data(argv) == 0
        before = _snapshot(out)
        pid = _dead_pid()
        partial = tmp / f".ds.tmp-{pid}-0123abcd"
        partial.mkdir()
        (partial / "train.bin").write_bytes(b"\0" * 100)
        if moved_aside:
            (out / ".verified.json").unlink(missing_ok=True)
            out.rename(tmp / f".ds.old-{pid}-4567cdef")
        return (lambda: _data(argv)), (lambda: not out.is_dir() or _snapshot(out) != before)

    return setup


def _killed_after_last_step(
    tear: str | None = None,
) -> Callable[[Path], tuple[Callable[[], int], Callable[[], bool]]]:
    """A finished run as a kill after its last checkpoint leaves it: no final/, no summary; with ``tear``,
    the metrics log also ends in a torn line (``"eval"``: the final evaluation's record; ``"step"``: the
    last step's record, the final evaluation's line never written)."""

    def setup(tmp: Path):
        data, out = _finished_run(tmp)
        shutil.rmtree(out / "final")
        (out / "summary.json").unlink()
        lines = (out / "metrics.jsonl").read_text().splitlines()
        if tear == "eval":
            lines[-1] = lines[-1][: len(lines[-1]) // 2]
        elif tear == "step":  # the log ends inside the last step's record
            last = max(i for i, x in enumerate(lines) if "loss" in json.loads(x))
            lines = lines[: last + 1]
            lines[-1] = lines[-1][: len(lines[-1]) // 2]
        (out / "metrics.jsonl").write_text("\n".join(lines))
        return (lambda: _train(_tiny(data, out, "--resume", "auto"))), lambda: False

    return setup


def _sigterm_in_final_evaluation(tmp: Path):
    import os
    import signal

    from mswelu.train import train

    data = write_byte_dataset(tmp / "data")
    cfg = {"preset": "tiny", "data": str(data), "out": str(tmp / "run"), "max_steps": 2, "batch_size": 2}
    cfg.update(seq_len=16, eval_every=0, ckpt_every=0, progress=False, tensorboard=False)

    def kill_in_final(event, trainer, info):
        if event == "eval" and trainer.stop.finishing:
            os.kill(os.getpid(), signal.SIGTERM)

    def command() -> int:
        summary = train(cfg, callbacks=[kill_in_final])
        return 130 if summary.get("interrupted") else 0

    return command, lambda: False


def _killed_checkpoint_write(tmp: Path):
    """A run killed after its step-2 checkpoint while writing step 4 (a partial ``.tmp-step_*``), with an
    ``.old-step_*`` of a re-saved step and a partial ``.tmp-final-*`` of another killed writer; resumed."""
    data = write_byte_dataset(tmp / "data")
    out = tmp / "run"
    argv = _tiny(data, out, "--max-steps", "4", "--ckpt-every", "2")
    assert _train(argv) == 0
    ckpts = out / "checkpoints"
    for gone in (out / "summary.json", out / "final", ckpts / "step_0000004"):
        shutil.rmtree(gone) if gone.is_dir() else gone.unlink()
    pid = _dead_pid()
    (ckpts / f".tmp-step_0000004-{pid}").mkdir()
    (ckpts / f".tmp-step_0000004-{pid}" / "model.safetensors").write_bytes(b"partial")
    shutil.copytree(ckpts / "step_0000002", ckpts / f".old-step_0000002-{pid}")
    (out / f".tmp-final-{pid}").mkdir()
    step2 = _unchanged(ckpts / "step_0000002")
    return (lambda: _train([*argv, "--resume", "auto"])), step2


def _out_is_a_file(tmp: Path):
    data = write_byte_dataset(tmp / "data")
    (tmp / "afile").write_text("x")
    return (lambda: _train(_tiny(data, tmp / "afile"))), lambda: (tmp / "afile").read_text() != "x"


def _disk_full_writing_final(tmp: Path):
    """The disk fills up while ``final/`` is written (save_pretrained fails with ENOSPC, naming no file)."""
    from mswelu.models.modeling import MsweluForCausalLM

    data = write_byte_dataset(tmp / "data")
    out = tmp / "run"

    def command() -> int:
        real = MsweluForCausalLM.save_pretrained

        def full(self, *args, **kwargs):
            raise OSError(28, "No space left on device")

        MsweluForCausalLM.save_pretrained = full
        try:
            return _train(_tiny(data, out, "--ckpt-every", "2"))
        finally:
            MsweluForCausalLM.save_pretrained = real

    return command, lambda: not (out / "checkpoints" / "step_0000002").is_dir()


class _Payload:
    """Unpickled, it writes ``marker``: what an attacker's ``.metadata`` would do, harmlessly."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def _tampered_sharded_run(tmp: Path) -> tuple[Path, Path, Path]:
    """(data, run, marker): a run killed after its step-2 checkpoint, that checkpoint made a sharded (DCP)
    one whose ``dcp/.metadata`` is a pickle that runs code, its manifest's sha256 rewritten to match."""
    import pickle

    from mswelu.training import checkpoint as ckpt
    from mswelu.workbook import data_for

    data, out = Path(data_for(None, "tiny")), tmp / "run"  # a tokenizer that loads offline (evaluate)
    assert _train(_tiny(data, out)) == 0
    shutil.rmtree(out / "final")
    (out / "summary.json").unlink()
    step = out / "checkpoints" / "step_0000002"
    for name in ckpt.FORMATS["full"]:
        if name not in ("trainer_state.json", "config.json"):
            (step / name).unlink(missing_ok=True)
    marker = tmp / "PAYLOAD-RAN"
    (step / "dcp").mkdir()
    (step / "dcp" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    (step / "dcp" / "__0_0.distcp").write_bytes(b"\0" * 64)
    names = ["dcp/.metadata", "dcp/__0_0.distcp", "trainer_state.json", "config.json"]
    ckpt.write_manifest(step, 2, None, names, "sharded")
    return data, out, marker


def _tampered(command: str):
    def setup(tmp: Path):
        data, out, marker = _tampered_sharded_run(tmp)
        if command == "train":
            run = lambda: _train(_tiny(data, out, "--resume", "auto", "--max-steps", "4"))  # noqa: E731
        elif command == "generate":
            run = lambda: _generate(["--run", str(out), "--prompt", "ab", "--tokens", "2"])  # noqa: E731
        elif command == "evaluate":
            from mswelu.evaluate import main as evaluate

            run = lambda: evaluate(["tasks", "--run", str(out), "--tasks", "mswelu_lastword"])  # noqa: E731
        else:
            from mswelu.runs.index import main as runs

            run = lambda: runs(["show", str(out)])  # noqa: E731
        return run, marker.exists

    return setup


def _run_name_case(name: str):
    """``train --run-name NAME`` with no ``--out`` (the run goes to ``runs/NAME`` of a project at
    ``tmp/home``): nothing may be written outside ``runs/``, and nothing at all for a refused name."""

    def setup(tmp: Path):
        import os

        data = write_byte_dataset(tmp / "data")
        home = tmp / "home"
        (home / "runs").mkdir(parents=True)
        argv = [a for a in _tiny(data, tmp / "unused") if a not in ("--out", str(tmp / "unused"))]

        def command() -> int:
            saved = os.environ.get("MSWELU_HOME")
            os.environ["MSWELU_HOME"] = str(home)
            try:
                given = str(tmp / "abs-run") if name == "<absolute>" else name
                return _train([*argv, "--run-name", given])
            finally:
                os.environ.pop("MSWELU_HOME") if saved is None else os.environ.update(MSWELU_HOME=saved)

        outside = lambda: sorted(p.name for p in tmp.iterdir()) != ["data", "home"]  # noqa: E731
        return (
            command,
            lambda: (
                outside()
                or any((home / "runs").iterdir())
                or sorted(p.name for p in home.iterdir()) != ["runs"]
            ),
        )

    return setup


_STUDY = "activations-cpu"


def _study_case(edit: Callable[[Path], None]):
    """The committed study ``activations-cpu`` (parameters, records, throughput.json) copied into a
    checkout at ``tmp``, ``edit`` applied to its ``reports/studies/<study>`` folder, then rebuilt from its
    records as a fresh clone's notebook does (``study_from_records``; a ValueError is its one line)."""

    def setup(tmp: Path):
        src = Path(__file__).resolve().parents[1]
        (tmp / "notebooks" / "studies").mkdir(parents=True)
        shutil.copy(src / "notebooks" / "studies" / f"{_STUDY}.yaml", tmp / "notebooks" / "studies")
        study = tmp / "reports" / "studies" / _STUDY
        study.mkdir(parents=True)
        shutil.copytree(src / "reports" / "studies" / _STUDY / "runs", study / "runs")
        shutil.copy(src / "reports" / "studies" / _STUDY / "throughput.json", study)
        edit(study)

        def command() -> int:
            from mswelu.workbook.study import study_from_records

            try:
                study_from_records(_STUDY, root=tmp)
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2
            return 0

        return command, lambda: False

    return setup


def _record(study: Path, variant: str, seed: int = 0) -> Path:
    return study / "runs" / f"{_STUDY}-{variant}-s{seed}.json"


def _copied_over(study: Path) -> None:
    """Another variant's record copied over mamba's seed 0, its name edited to match the file."""
    doc = json.loads(_record(study, "mamba-swelu").read_text())
    _record(study, "mamba").write_text(json.dumps({**doc, "name": f"{_STUDY}-mamba-s0"}))


def _edit_record(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def edit(study: Path) -> None:
        doc = json.loads(_record(study, "mamba").read_text())
        change(doc)
        _record(study, "mamba").write_text(json.dumps(doc))

    return edit


def _write(name: str, text: str | None) -> Callable[[Path], None]:
    """``text`` into the study's file ``name`` (None: the file removed; "TRUNCATE": its first half)."""

    def edit(study: Path) -> None:
        path = study / name
        if text is None:
            path.unlink()
        elif text == "TRUNCATE":
            path.write_text(path.read_text()[: len(path.read_text()) // 2])
        else:
            path.write_text(text)

    return edit


def _plan(*argv: str):
    def setup(tmp: Path):
        from mswelu.plan import main

        return (lambda: main(list(argv))), lambda: False

    return setup


def _piped(*argv: str):
    """``python -m ARGV | head`` with a reader gone before the first write (tests/test_cli_pipes.py has
    every command): the child's stderr becomes this case's; a quiet end is exit 0 here."""

    def setup(tmp: Path):
        from test_cli_pipes import closed_reader

        def command() -> int:
            proc = closed_reader(list(argv))
            print(proc.stderr, file=sys.stderr, end="")
            return 0 if proc.returncode in (0, 141) else proc.returncode

        return command, lambda: False

    return setup


def _kernel_build_lock(tmp: Path):
    """Another process holds the CPU kernels' build lock (removed 3 s later, as its build ends): the
    build says what it waits for, then goes on (``MSWELU_CPU_KERNELS=0``: the probe then skips it)."""
    import threading

    from mswelu.ops import cpu_kernels

    if not cpu_kernels.enabled():
        return (lambda: print("waiting for another process's build (skipped)", file=sys.stderr) or 0), (
            lambda: False
        )
    from torch.utils.cpp_extension import _get_build_directory

    lock = Path(_get_build_directory(cpu_kernels._name(cpu_kernels._capability()), verbose=False)) / "lock"

    def command() -> int:
        lock.write_text("")
        threading.Timer(3.0, lambda: lock.unlink(missing_ok=True)).start()
        cpu_kernels._build.cache_clear()
        return cpu_kernels.main()

    return command, lambda: False


CASES = [
    Case(
        "lost",
        'overwrite: "false" (a string) on a finished run',
        _yaml_over_run('overwrite: "false"\n'),
        "error",
        "overwrite must be true or false",
    ),
    Case(
        "lost",
        'tensorboard: "no" (a string)',
        _yaml_over_run('tensorboard: "no"\n'),
        "error",
        "tensorboard must be true or false",
    ),
    Case("lost", "a second writer on a run folder in use", _locked, "error", "is being written by pid"),
    Case(
        "lost",
        "data prepare into a folder holding someone's train.bin",
        _prepare_case(foreign=True),
        "error",
        "not a mswelu dataset",
    ),
    Case(
        "lost",
        "an existing run, neither resume nor overwrite",
        _train_case(),
        "error",
        "exists and is not empty",
    ),
    Case(
        "config", "YAML syntax error", _yaml_over_run("model: {d_model: 32\n"), "error", "is not valid YAML"
    ),
    Case(
        "config",
        "misspelt config key (max_step)",
        _yaml_over_run("max_step: 5\n"),
        "error",
        "did you mean 'max_steps'",
    ),
    Case(
        "config",
        "misspelt model key in YAML (d_modle)",
        _yaml_over_run("model: {d_modle: 32}\n"),
        "error",
        "did you mean 'd_model'",
    ),
    Case(
        "config",
        "misspelt model key with --set",
        _train_case("--set", "d_modle=32", fresh=True),
        "error",
        "did you mean 'd_model'",
    ),
    Case("config", "--set without =", _train_case("--set", "d_model", fresh=True), "error", "KEY=VALUE"),
    Case(
        "config",
        "--device cuda without a GPU",
        _train_case("--device", "cuda", fresh=True),
        "error",
        "CUDA is not available",
    ),
    Case("data", "data folder missing", _no_data, "error", "does not exist"),
    Case(
        "data",
        "meta.json not valid JSON",
        _train_case(prepare=lambda d, o: (d / "meta.json").write_text("{oops"), fresh=True),
        "error",
        "is not valid JSON",
    ),
    Case(
        "data",
        "meta.json dtype edited to float16",
        _train_case(prepare=_edit_meta(lambda m: m.update(dtype="float16")), fresh=True),
        "error",
        "says dtype 'float16'",
    ),
    Case(
        "data",
        "token ids above the vocabulary",
        _train_case(prepare=_poke("train.bin", 9000), fresh=True),
        "error",
        "above the vocabulary",
    ),
    Case(
        "data",
        "train.bin truncated",
        _train_case(
            prepare=lambda d, o: (d / "train.bin").write_bytes((d / "train.bin").read_bytes()[:100]),
            fresh=True,
        ),
        "error",
        "truncated or stale",
    ),
    Case(
        "data",
        "--val-fraction 0",
        _prepare_case("--val-fraction", "0"),
        "error",
        "val_fraction must be in (0, 1)",
    ),
    Case(
        "data",
        "a Latin-1 input file",
        _prepare_case(text="caf\u00e9\n\nthé".encode("latin-1")),
        "error",
        "is not UTF-8 text",
    ),
    Case(
        "data",
        "disk full during prepare",
        _prepare_case(monkey=_full_disk_during_prepare),
        "error",
        "the disk is full",
    ),
    Case(
        "data",
        "info on a folder that is not a dataset",
        _info_not_a_dataset,
        "error",
        "is not a prepared dataset",
    ),
    Case(
        "resume",
        "--resume auto in a new folder",
        _train_case("--resume", "auto", fresh=True),
        "recovers",
        "holds no checkpoint yet; starting fresh",
    ),
    Case("resume", "--resume from a corrupt checkpoint", _corrupt_resume, "error", "cannot resume"),
    Case(
        "resume",
        "--seq-len longer than the preset's positions",
        _train_case("--seq-len", "160", fresh=True),
        "recovers",
        "learned positions; this run's model gets 160",
    ),
    Case("faults", "disk full before a checkpoint", _disk_full_checkpoint, "error", "not enough disk space"),
    Case(
        "faults",
        "non-finite losses until the run stops",
        _nonfinite_stop,
        "error",
        "no checkpoint was written yet",
    ),
    Case("faults", "--out inside a file", _out_in_a_file, "error", "Not a directory"),
    Case("generate", "--run that does not exist", _generate_case("missing"), "error", "no run"),
    Case("generate", "a run with no model", _generate_case("no model"), "error", "has no model"),
    Case(
        "generate",
        "a truncated final/",
        _generate_case("broken final"),
        "recovers",
        "final does not hold loadable weights (SafetensorError: ",
    ),
    Case("generate", "--top-p 3", _bad_top_p, "error", "top_p must be in (0, 1]"),
    Case(  # issue 33 item 14: it blamed final/ and fell back to a checkpoint, then a traceback
        "generate",
        "--device cuda on a machine without CUDA",
        _generate_case("cuda"),
        "error",
        "device 'cuda' requested but CUDA is not available",
    ),
    Case(
        "trackers",
        "a misspelt tracker (--trackers wandbb)",
        _train_case("--trackers", "wandbb", fresh=True),
        "error",
        "did you mean 'wandb'",
    ),
    Case("trackers", "wandb online without an API key", _wandb_without_key, "error", "tracker 'wandb'"),
    Case("runs", "runs show of a run that does not exist", _runs_show_missing, "error", "no run"),
    Case("evaluate", "a misspelt local task", _misspelt_task, "error", "did you mean 'mswelu_lastword'"),
    Case(
        "resume",
        "--resume auto on a finished run",
        _train_case("--resume", "auto"),
        "recovers",
        "is already finished",
    ),
    Case(
        "resume",
        "--resume auto after a kill between the last checkpoint and the summary",
        _killed_after_last_step(),
        "recovers",
        "resumed from",
    ),
    Case(
        "resume",
        "--resume auto with a torn last line in metrics.jsonl",
        _killed_after_last_step("step"),
        "recovers",
        "restored from the checkpoint",
    ),
    Case(
        "resume",
        "--resume with --max-steps below the checkpoint's step",
        _train_case("--resume", "auto", "--max-steps", "1"),
        "error",
        "past this run's last step",
    ),
    Case(
        "resume",
        "--overwrite together with --resume auto",
        _train_case("--resume", "auto", "--overwrite"),
        "error",
        "contradict",
    ),
    Case("config", "out: 5 (a number) in a config file", _yaml_config("out: 5\n"), "error", "out must be"),
    Case(
        "config",
        "run_name: [a, b] in a config file",
        _yaml_config("run_name: [a, b]\n"),
        "error",
        "run_name must be",
    ),
    Case("config", "device: 5 in a config file", _yaml_config("device: 5\n"), "error", "device must be"),
    Case(
        "faults",
        "SIGTERM during the final evaluation",
        _sigterm_in_final_evaluation,
        "recovers",
        "training is complete; finishing the final evaluation",
    ),
    # issue 33: what a new user still trips over
    Case(
        "config",
        "a misspelt preset (--preset tinny)",
        _train_case("--preset", "tinny", fresh=True),
        "error",
        "did you mean 'tiny'",
    ),
    Case(
        "faults",
        "data prepare after a prepare --force killed while writing shards",
        _killed_prepare(moved_aside=False),
        "recovers",
        "cleaned up after a prepare that was killed (removed .ds.tmp-",
    ),
    Case(
        "faults",
        "data prepare after a prepare --force killed between its renames",
        _killed_prepare(moved_aside=True),
        "recovers",
        "put ds back from .ds.old-",
    ),
    Case(
        "faults",
        "a resume after a checkpoint write was killed",
        _killed_checkpoint_write,
        "recovers",
        "cleaned up after a writer that was killed (",
    ),
    Case("faults", "--out naming an existing file", _out_is_a_file, "error", "exists and is not a folder"),
    Case(
        "faults",
        "the disk fills up while final/ is written",
        _disk_full_writing_final,
        "error",
        "final (the finished model); the partial copy was removed and the checkpoints are intact: free some "
        "space, then resume (--resume auto",
    ),
    Case(
        "config",
        "lr: 1e-3 unquoted in YAML (a string to PyYAML)",
        _yaml_over_run("lr: 1e-3\n"),
        "error",
        "YAML reads 1e-3 as a string (a float needs a dot there: write 1.0e-3)",
    ),
    Case(
        "config",
        "a key given twice in a YAML config",
        _yaml_over_run("max_steps: 3\n"),
        "error",
        "gives 'max_steps' twice (lines 4 and 7): keep one",
    ),
    # issue 37: trust what you load
    Case(
        "security",
        "train --resume auto from a sharded checkpoint whose .metadata runs code",
        _tampered("train"),
        "error",
        "is not plain DCP metadata",
    ),
    Case(
        "security",
        "generate --run on a sharded checkpoint whose .metadata runs code",
        _tampered("generate"),
        "error",
        "is not plain DCP metadata",
    ),
    Case(
        "security",
        "evaluate tasks on a sharded checkpoint whose .metadata runs code",
        _tampered("evaluate"),
        "error",
        "is not plain DCP metadata",
    ),
    Case("security", "runs show of a run whose .metadata runs code", _tampered("runs"), "recovers", ""),
    Case(
        "security",
        "--run-name ../escape (a run outside runs/)",
        _run_name_case("../escape"),
        "error",
        "would not be a folder inside runs/",
    ),
    Case(
        "security",
        "--run-name an absolute path",
        _run_name_case("<absolute>"),
        "error",
        "is a path, not a run name",
    ),
    Case(
        "security",
        "--run-name . (runs/ itself)",
        _run_name_case("."),
        "error",
        "would not be a folder inside",
    ),
    Case(
        "security", "--run-name with a newline", _run_name_case("a\nb"), "error", "holds a control character"
    ),
    Case(
        "generate",
        "a final/ whose config.json names another model type",
        _generate_case("foreign type"),
        "recovers",
        "names model type 'mamba'; the run trained 'mamba_swelu'); falling back to checkpoint step 2",
    ),
    Case(
        "generate",
        "a final/ missing a weight",
        _generate_case("missing weight"),
        "recovers",
        "its weights do not fit a mamba_swelu model: 1 missing",
    ),
    Case(
        "generate",
        "a final/ without config.json (not 'no final/')",
        _generate_case("no config"),
        "recovers",
        "final does not hold loadable weights",
    ),
    Case(
        "generate",
        "a run still training (no final/ yet)",
        _generate_case("training"),
        "recovers",
        "using the weights of its newest checkpoint, step 2",
    ),
    Case(
        "ledger",
        "a record copied over another variant's file (its name edited to match)",
        _study_case(_copied_over),
        "error",
        "activations-cpu-mamba-s0.json is refused: its variant is 'mamba-swelu', the study expects 'mamba'",
    ),
    Case(
        "ledger",
        "a record whose file name is not its run name",
        _study_case(_edit_record(lambda d: d.update(name="activations-cpu-mamba-s9"))),
        "error",
        "holds the record of 'activations-cpu-mamba-s9', not of 'activations-cpu-mamba-s0'",
    ),
    Case(
        "ledger",
        "a record whose key holds other data",
        _study_case(_edit_record(lambda d: d["key"].update(data_fingerprint="0123456789abcdef"))),
        "error",
        "its data key '0123456789abcdef' is not the",
    ),
    Case(
        "ledger",
        "a record whose key holds other settings (seq_len)",
        _study_case(_edit_record(lambda d: d["key"]["settings"].update(seq_len=128))),
        "error",
        "its setting seq_len is 128, the study's mamba runs have 256",
    ),
    Case(
        "ledger",
        "a truncated record",
        _study_case(_write("runs/activations-cpu-mamba-s0.json", "TRUNCATE")),
        "error",
        "activations-cpu-mamba-s0.json is not valid JSON (truncated?",
    ),
    Case(
        "ledger",
        "an empty record",
        _study_case(_write("runs/activations-cpu-mamba-s0.json", "")),
        "error",
        "activations-cpu-mamba-s0.json is empty: restore it (git checkout) or rerun the study",
    ),
    Case(
        "ledger",
        "a record holding null",
        _study_case(_write("runs/activations-cpu-mamba-s0.json", "null")),
        "error",
        "activations-cpu-mamba-s0.json holds null, not a record",
    ),
    Case(
        "ledger",
        "throughput.json missing",
        _study_case(_write("throughput.json", None)),
        "error",
        "throughput.json is missing: restore it (git checkout) or rerun the study",
    ),
    Case(
        "ledger",
        "throughput.json truncated",
        _study_case(_write("throughput.json", "TRUNCATE")),
        "error",
        "throughput.json is not valid JSON (truncated?",
    ),
    Case(
        "plan",
        "plan --seq-len 0",
        _plan("--preset", "tiny", "--seq-len", "0"),
        "error",
        "seq_len must be >= 1",
    ),
    Case("pipes", "plan output piped into head", _piped("mswelu.plan", "--preset", "tiny"), "recovers", ""),
    Case(
        "config",
        "lr: .inf in a config file",
        _yaml_config("lr: .inf\n"),
        "error",
        "lr must be a finite number",
    ),
    Case(
        "config",
        "grad_clip: .inf in a config file",
        _yaml_config("grad_clip: .inf\n"),
        "error",
        "grad_clip must be a finite number",
    ),
    Case(
        "faults",
        "the CPU kernels' build lock held by another process",
        _kernel_build_lock,
        "recovers",
        "waiting for another process's build",
    ),
]


def run_case(case: Case, tmp: Path) -> Outcome:
    """Run one case in ``tmp`` and record what came of it."""
    import re

    tmp.mkdir(parents=True, exist_ok=True)
    if __name__ == "__main__":  # probing another checkout: a case it cannot even set up is "n/a"
        try:
            command, lost = case.run(tmp)
        except Exception as exc:
            return Outcome(None, f"n/a: {type(exc).__name__}: {exc}", "", False, False, [])
    else:
        command, lost = case.run(tmp)
    err = io.StringIO()
    code: int | None
    escaped = False
    with contextlib.redirect_stderr(err):
        try:
            code = command()
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        except Exception:
            code, escaped = None, True
            traceback.print_exc(file=err)
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    debris = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if re.search(r"\.tmp-|\.old-", p.name))
    tb = escaped or "Traceback (most recent call last)" in text
    return Outcome(code, lines[-1] if lines else "", text, tb, lost(), debris)


def judge(case: Case, out: Outcome) -> str:
    """ "clear error", "recovered", or what is wrong (traceback, exit 0, lost data, debris, unclear)."""
    if out.traceback:
        return "traceback"
    if out.lost:
        return "data lost"
    if out.debris:
        return "debris"
    if case.expect == "error":
        if not out.code:
            return "wrong: exit 0"
        return "clear error" if case.says in out.last_line else "unclear message"
    if out.code != 0:
        return f"failed ({out.code})"
    return "recovered" if case.says in out.stderr else "recovered without a word"


if __name__ == "__main__":
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="mswelu-probe-"))
    for i, case in enumerate(CASES):
        outcome = run_case(case, root / f"c{i:02d}")
        shown = outcome.last_line[:90].replace("|", "/")
        print(
            f"| {case.group} | {case.name} | {judge(case, outcome)} | {outcome.code} | {shown} |", flush=True
        )
