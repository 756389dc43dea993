"""The set-up's install of torch: PyTorch's CPU wheel index first (from PyPI alone, torch==2.13.0 on Linux is
the CUDA build with several GB of nvidia-* packages), the usual index with a note where that index does not
answer. The command lines are checked, nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _run(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_")}
    environ.update(PYTHON=sys.executable, **env)
    return subprocess.run(
        ["bash", f".ci/{script}", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("script", ["setup", "compat"])
def test_the_cpu_index_where_it_answers(script: str) -> None:
    done = _run(script, "--print-torch-command", TORCH_INDEX_REACHABLE="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pip install --index-url {CPU_INDEX} torch==2.13.0"
    assert done.stderr == ""


@pytest.mark.parametrize("script", ["setup", "compat"])
def test_the_usual_index_with_a_note_where_it_does_not(script: str) -> None:
    done = _run(script, "--print-torch-command", TORCH_INDEX_REACHABLE="0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pip install torch==2.13.0"
    assert "not reachable" in done.stderr and "may be the CUDA build" in done.stderr


def test_torch_spec_and_index_can_be_chosen() -> None:
    done = _run("setup", "--print-torch-command", TORCH_INDEX_REACHABLE="1", TORCH_SPEC="torch==2.12.0")
    assert done.stdout.strip() == f"pip install --index-url {CPU_INDEX} torch==2.12.0"
    done = _run("setup", "--print-torch-command", TORCH_INDEX="")  # the usual index only, no note
    assert done.stdout.strip() == "pip install torch==2.13.0" and done.stderr == ""


def test_a_wheel_file_is_installed_as_it_is(tmp_path) -> None:
    wheel = tmp_path / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
    wheel.write_bytes(b"")
    done = _run("setup", "--print-torch-command", TORCH_INDEX_REACHABLE="0", TORCH_SPEC=str(wheel))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"pip install {wheel}" and done.stderr == ""  # no "not reachable" note


def test_a_failed_install_from_the_cpu_index_falls_back_and_says_so() -> None:
    script = (
        "set -euo pipefail; PYTHON=python3; source .ci/torch.sh; "
        'pip_install() { echo "pip install $*"; [ "$1" != --index-url ]; }; install_torch'
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_")}
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env={**environ, "TORCH_INDEX_REACHABLE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"pip install --index-url {CPU_INDEX} torch==2.13.0",
        "pip install torch==2.13.0",
    ]
    assert "may be the CUDA build" in done.stderr


def test_no_script_installs_torch_another_way() -> None:
    for script in ("setup", "compat"):
        text = (ROOT / ".ci" / script).read_text()
        assert 'pip_install "$TORCH_SPEC"' not in text and "install_torch" in text
