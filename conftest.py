"""Every pytest session in this checkout (``tests``, ``notebooks`` under nbval, or both) writes data, runs
and reports into a temporary project home and pins the CPU dtype, so running the tests never touches a
user's ``data/``, ``runs/`` or ``reports/`` and the notebooks' checked outputs do not depend on the CPU model.
The fixtures live in ``tests/conftest.py``."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

if "MSWELU_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="mswelu-test-home-")
    os.environ["MSWELU_HOME"] = _home  # inherited by notebook kernels that nbval / papermill start
    atexit.register(shutil.rmtree, _home, ignore_errors=True)  # a session's data and runs: gigabytes

# Trackers write where the test session says: trackio's local store (read when trackio is imported), wandb's
# settings, cache and artifact staging; no test ever reaches a tracker's server (wandb runs offline).
_trackers_home = tempfile.mkdtemp(prefix="mswelu-test-trackers-")
atexit.register(shutil.rmtree, _trackers_home, ignore_errors=True)
for _var, _sub in (
    ("TRACKIO_DIR", "trackio"),
    ("WANDB_CONFIG_DIR", "wandb-config"),
    ("WANDB_CACHE_DIR", "wandb-cache"),
    ("WANDB_DATA_DIR", "wandb-data"),
):
    os.environ.setdefault(_var, os.path.join(_trackers_home, _sub))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# dtype="auto" takes bf16 on CPUs with native bf16 (mswelu.training.config.cpu_has_native_bf16): pin the tests
# (and the notebook kernels they start) to fp32 so that their numbers do not depend on the CPU model;
# tests of the bf16 path ask for it by name.
os.environ.setdefault("MSWELU_CPU_BF16", "0")
