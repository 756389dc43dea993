"""Progress lines on the terminal that started a run: under papermill's progress bar (drawn on the same
terminal, redrawn as each cell starts, ending without a newline), a cell's first line starts a line of its
own instead of being glued to ``5/12 [00:10<00:18, 2.58s/cell]``."""

from __future__ import annotations

import os
import sys

import pytest

from mswelu import workbook as wb
from mswelu.base import progress
from mswelu.workbook import prologue


class _Launcher:
    """ipykernel's stderr as ``say`` sees it: a fileno() that is the launching terminal."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def _terminal(monkeypatch) -> int:
    read, write = os.pipe()
    monkeypatch.setenv("MSWELU_PROGRESS", "on")
    monkeypatch.setattr(progress, "in_kernel", lambda: True)
    monkeypatch.setattr(sys, "stderr", _Launcher(write))
    monkeypatch.setattr(progress, "_AFTER_BAR", [False])
    return read


def test_the_first_line_after_the_bar_starts_a_line_of_its_own(monkeypatch):
    read = _terminal(monkeypatch)
    progress.after_bar()
    progress.say("[12:00:01 main] step 1/950")
    progress.say("[12:00:09 main] step 50/950")
    progress.after_bar()  # the next cell: papermill redrew its bar
    progress.say("[12:01:00 main] eval at step 100/950")
    assert os.read(read, 4096).decode() == (
        "\n[12:00:01 main] step 1/950\n[12:00:09 main] step 50/950\n\n[12:01:00 main] eval at step 100/950\n"
    )


def test_papermill_options_are_read_as_papermill_reads_them():
    argv = ["/venv/bin/python", "-m", "papermill", "in.ipynb", "out.ipynb", "-p", "run_name", "main"]
    assert prologue.papermill_options(argv)["progress_bar"] is True
    assert prologue.papermill_options(argv)["output_path"] == "out.ipynb"
    assert prologue.papermill_options([*argv, "--no-progress-bar"])["progress_bar"] is False
    assert prologue.papermill_options([*argv, "--log-output"])["progress_bar"] is False
    assert prologue.papermill_options(["/venv/bin/python", "-m", "ipykernel_launcher"]) is None


@pytest.mark.parametrize("bar", [True, False])
def test_the_prologue_follows_papermills_bar(monkeypatch, tmp_path, bar):
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    monkeypatch.setattr(progress, "_AFTER_BAR", [False])
    monkeypatch.setattr(prologue, "_papermill_parent", lambda: ({"progress_bar": bar}, str(tmp_path)))
    shell = InteractiveShell.instance()
    try:
        wb.start("03_train.ipynb", {"run_name": "r"}, check=False, defer=True)
        hooked = prologue._bar_redrawn in shell.events.callbacks["pre_run_cell"]
        assert hooked is bar and progress._AFTER_BAR[0] is bar
        progress._AFTER_BAR[0] = False
        shell.run_cell("x = 1")
        assert progress._AFTER_BAR[0] is bar  # every cell starts after a redrawn bar
    finally:
        InteractiveShell.clear_instance()


def test_a_run_with_progress_off_says_where_it_is_once_per_heartbeat(monkeypatch):
    """A comparison's runs train with progress off (hundreds of them); one that goes on for longer than
    HEARTBEAT_S still gives a step line at the first logged step after each HEARTBEAT_S, a short one none,
    and only the first process of a distributed run gives them."""
    import types

    monkeypatch.delenv("RANK", raising=False)
    read = _terminal(monkeypatch)
    clock = [1000.0]
    monkeypatch.setattr(progress, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    beat = progress.HEARTBEAT_S
    step_s = beat / 200  # a heartbeat every 200 steps
    run = progress.RunProgress("study-mamba-s0", 500, 0, enabled=False)
    for step in range(1, 501):
        clock[0] += step_s
        run.advance(1024, step_s)
        run.step(step, 4.0, run.interval_rate())
    run.close()
    lines = os.read(read, 4096).decode().splitlines()
    assert [ln.split("] ")[1].split("  ")[0] for ln in lines] == ["step 200/500", "step 400/500"]
    assert "study-mamba-s0" in lines[0] and "left" in lines[0]
    short = progress.RunProgress("short", 10, 0, enabled=False)
    for step in range(1, 11):
        clock[0] += step_s
        short.step(step, 4.0, None)
    short.close()
    monkeypatch.setenv("RANK", "1")  # another process of a distributed run: never
    other = progress.RunProgress("study-mamba-s0", 500, 0, enabled=False)
    clock[0] += 10 * beat
    other.step(500, 4.0, None)
    os.set_blocking(read, False)
    with pytest.raises(BlockingIOError):  # nothing more was written
        os.read(read, 4096)
    os.close(read)
    os.close(sys.stderr.fileno())
