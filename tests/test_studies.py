"""The committed studies (``notebooks/studies/*.yaml``): each is a valid parameter set of the notebook its
header runs (notebook 05, or 07 for the synthetic probes), and a study's report goes where it is committed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mswelu import workbook as wb
from mswelu.analysis import CLAIM_SETS
from mswelu.data.tasks import TASKS
from mswelu.training.variants import VARIANTS
from mswelu.workbook.probes import probe_claims
from mswelu.workbook.prologue import check_parameters

STUDIES = sorted((Path(__file__).parents[1] / "notebooks" / "studies").glob("*.yaml"))


def test_there_is_a_study() -> None:
    assert STUDIES, "notebooks/studies/ holds no study"


def notebook_of(path: Path) -> str:
    """The notebook a study file runs: the one its ``papermill notebooks/<name>.ipynb`` header names."""
    found = re.search(r"papermill notebooks/(\S+\.ipynb)", path.read_text())
    assert found, f"{path.name} names no notebook in its header"
    return found.group(1)


NOTEBOOK_05 = [p for p in STUDIES if notebook_of(p) == "05_baselines.ipynb"]
NOTEBOOK_07 = [p for p in STUDIES if notebook_of(p) == "07_probes.ipynb"]


def test_every_study_runs_a_known_notebook() -> None:
    assert set(STUDIES) == set(NOTEBOOK_05) | set(NOTEBOOK_07) and NOTEBOOK_07


@pytest.mark.parametrize("path", NOTEBOOK_05, ids=lambda p: p.stem)
def test_study_is_a_parameter_set_of_notebook_05(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    check_parameters("05_baselines.ipynb", params)  # a misspelt name would raise
    assert params["study"] is True and params["run_name"] == path.stem
    assert set(params["variants"]) <= set(VARIANTS)
    assert set(params["compare"]) <= {"swelu", "silu", "fixed", "transformer", "shapes"}
    assert set(params["compare"].values()) <= set(params["variants"])
    units = params.get("splits") or params["seeds"]  # the analysis unit: the split where there are several
    assert len(units) >= 3 and len(params["seeds"]) >= 2 and len(params["lr_grid"]) >= 2
    assert set(params.get("claims", [])) <= set(CLAIM_SETS)
    assert params["ckpt_every"] > 0  # an interrupted study resumes its unfinished runs


@pytest.mark.parametrize("path", NOTEBOOK_07, ids=lambda p: p.stem)
def test_probe_study_is_preregistered_in_full(path: Path) -> None:
    """The probes study (notebook 07): the variants, the five tasks at >= 3 levels each, >= 5 seeds, a
    bracketing lr grid, and H1-H3 as hypotheses of the form the notebook judges."""
    params = yaml.safe_load(path.read_text())
    check_parameters("07_probes.ipynb", params)
    assert params["study"] is True and params["run_name"] == path.stem
    assert set(params["variants"]) <= set(VARIANTS)
    assert set(params["variants"]) >= {
        "mamba", "mamba-swelu", "mamba-swelu-fixed", "mamba-swish", "mamba2", "mamba2-swelu", "gpt2",
        "mamba-conv1", "mamba-convres",
    }  # fmt: skip
    five = {"mqar", "selective_copying", "induction_heads", "inverse_matching", "composite"}
    assert set(params["tasks"]) >= five
    for task, levels in params["tasks"].items():
        assert len(levels) >= 3 and set(levels) <= set(TASKS[task].levels), task
        assert params["tune_levels"][task] in levels
    assert len(params["seeds"]) >= 5 and len(params["lr_grid"]) >= 3 and params["ckpt_every"] > 0
    names = [h["name"] for h in params["hypotheses"]]
    assert any(n.startswith("H1") for n in names) and any(n.startswith("H2") for n in names)
    assert any(n.startswith("H3") for n in names)
    for h in params["hypotheses"]:
        assert {h["ours"], h["base"]} <= set(params["variants"]) and set(h["tasks"]) <= set(params["tasks"])
        assert h["test"] in ("at_least", "at_most", "equivalent", "not_worse")
    assert "PRE-REGISTERED" in path.read_text() and "CPU estimate" in path.read_text()
    probe_claims(params["hypotheses"], params["tasks"], params.get("primary", ""))  # a primary names a row


def test_misspelt_study_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="seeds"):
        check_parameters("05_baselines.ipynb", {"seedz": [0, 1, 2]})


def test_a_study_reports_under_reports_studies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    plain = wb.start("05_baselines.ipynb", {"run_name": "plain"}, check=False)
    study = wb.start("05_baselines.ipynb", {"run_name": "one", "study": True}, check=False)
    for report in (plain, study):
        report.finish({})
        report._unregister_hook()
    assert plain.metrics_path == tmp_path / "reports" / "plain" / "metrics.json"
    assert study.metrics_path == tmp_path / "reports" / "studies" / "one" / "metrics.json"
    assert study.metrics_path.is_file()
