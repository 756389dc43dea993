"""The committed studies (``notebooks/studies/*.yaml``): each is a valid parameter set of notebook 05, and a
study's report goes where it is committed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mswelu import workbook as wb
from mswelu.analysis import CLAIM_SETS
from mswelu.variants import VARIANTS
from mswelu.workbook.prologue import check_parameters

STUDIES = sorted((Path(__file__).parents[1] / "notebooks" / "studies").glob("*.yaml"))


def test_there_is_a_study() -> None:
    assert STUDIES, "notebooks/studies/ holds no study"


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_study_is_a_parameter_set_of_notebook_05(path: Path) -> None:
    params = yaml.safe_load(path.read_text())
    check_parameters("05_baselines.ipynb", params)  # a misspelt name would raise
    assert params["study"] is True and params["run_name"] == path.stem
    assert set(params["variants"]) <= set(VARIANTS)
    assert set(params["compare"]) <= {"swelu", "silu", "fixed", "transformer", "shapes"}
    assert set(params["compare"].values()) <= set(params["variants"])
    assert len(params["seeds"]) >= 3 and len(params["lr_grid"]) >= 2
    assert set(params.get("claims", [])) <= set(CLAIM_SETS)
    assert params["ckpt_every"] > 0  # an interrupted study resumes its unfinished runs


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
