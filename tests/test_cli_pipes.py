"""Every command line's output piped into a reader that stops early (``| head``) ends it quietly: no
BrokenPipeError traceback, no "Exception ignored" at exit (mswelu.base.cli.run_command)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = [
    ["mswelu.train", "--help"],
    ["mswelu.generate", "--help"],
    ["mswelu.evaluate", "--help"],
    ["mswelu.runs", "--help"],
    ["mswelu.plan", "--preset", "tiny"],
    ["mswelu.bench", "scan", "--help"],
    ["mswelu.data", "--help"],
    ["mswelu.monitor", "--help"],
    ["mswelu.ops.backends"],
    ["mswelu.runs", "list", str(ROOT / "tests")],
]


def closed_reader(argv: list[str]) -> subprocess.CompletedProcess:
    """``python -m argv`` with its stdout a pipe whose reader has already gone."""
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MSWELU_CPU_KERNELS": "0"}
    try:
        return subprocess.run(
            [sys.executable, "-m", *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
        )
    finally:
        os.close(write)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_output_into_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    proc = closed_reader(argv)
    assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # 141: the broken pipe, caught; 0: argparse's --help, which ignores a failed write itself
    assert proc.returncode in (0, 141), (proc.returncode, proc.stderr[-2000:])
