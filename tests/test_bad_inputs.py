"""Every case of the bad-input probe (tests/bad_inputs.py) ends as it must: a non-zero exit with one clear
line naming the problem, or a correct recovery that says what it did; never a traceback for a user's
mistake, never a changed or deleted file the user had, never temporary debris."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_inputs import CASES, judge, run_case


@pytest.mark.parametrize("case", CASES, ids=[f"{c.group}: {c.name}" for c in CASES])
def test_bad_input(case, tmp_path: Path) -> None:
    outcome = run_case(case, tmp_path)
    verdict = judge(case, outcome)
    expected = "clear error" if case.expect == "error" else "recovered"
    assert verdict == expected, f"{verdict}: exit {outcome.code}, stderr:\n{outcome.stderr[-2000:]}"
