"""Notebook 07's hypotheses as verdict rows: each row states the scale and the test set its task and level
were scored on (no corpus, tokenizer or claimed scale of a paper), and the pre-registered primary row is
tested alone while the others are Holm-corrected together."""

from __future__ import annotations

import pandas as pd
import pytest

from mswelu import analysis
from mswelu.analysis.tuning import LrStatus
from mswelu.workbook import probes

TASKS = {"inverse_matching": ["easy", "medium"]}
HYPOTHESES = [
    {"name": "H1 odd helps", "says": "x", "ours": "mamba-swelu", "base": "mamba",
     "tasks": ["inverse_matching"], "test": "at_least", "effect": 0.0},
]  # fmt: skip


def _results() -> pd.DataFrame:
    """Five seeds; on easy the treatment's error is about half the base's, on medium about the same."""
    rows = []
    for level, tokens, (base, ours) in (("easy", 1000, (0.40, 0.20)), ("medium", 2000, (0.45, 0.44))):
        for seed in range(5):
            wobble = 0.01 * (seed - 2)
            for variant, acc in (("mamba", 1 - base + wobble), ("mamba-swelu", 1 - ours + 1.3 * wobble)):
                rows.append({"task": "inverse_matching", "level": level, "variant": variant, "seed": seed,
                             "val_accuracy": acc, "val_error": 1 - acc, "params": 100_000.0,
                             "tokens": float(tokens)})  # fmt: skip
    return pd.DataFrame(rows)


def _lr() -> dict[str, LrStatus]:
    return {
        probes.unit(v, "inverse_matching", "*"): LrStatus(v, 3e-3, (1e-3, 3e-3, 1e-2), "", 0.0, None, "")
        for v in ("mamba", "mamba-swelu")
    }


@pytest.mark.parametrize("primary", ["", "H1 odd helps · inverse_matching medium"])
def test_probe_rows_state_their_test_set_and_the_primary_is_tested_alone(primary: str) -> None:
    study = probes.probe_study(_results(), "p", TASKS, 512, _lr(), [1e-3, 3e-3, 1e-2], primary)
    judged = analysis.evaluate_claims(probes.probe_claims(HYPOTHESES, TASKS), study).set_index("claim")
    easy, medium = (
        judged.loc["H1 odd helps · inverse_matching easy"],
        judged.loc["H1 odd helps · inverse_matching medium"],
    )
    for row, tokens in ((easy, "1k tokens"), (medium, "2k tokens")):
        assert f"judged at 0.1M params, {tokens}" in row.scale, row.scale
        assert "fixed test set (512 examples" in row.scale and "not other test sets" in row.scale
        assert "tokenizer" not in row.scale and "claimed at" not in row.scale
    assert easy.measured.startswith("+4") or easy.measured.startswith("+5")  # about half the errors
    assert easy.role == "exploratory"
    if primary:  # tested alone; the other row is a family of one: neither p is adjusted
        assert medium.role == "primary" and medium["p (Holm)"] == medium.p
        assert easy["p (Holm)"] == easy.p and easy.verdict == "supported"
    else:  # one family of two rows
        assert medium.role == "exploratory"
        low, high = sorted([easy.p, medium.p])
        assert min(easy["p (Holm)"], medium["p (Holm)"]) == pytest.approx(2 * low)
        assert max(easy["p (Holm)"], medium["p (Holm)"]) == pytest.approx(max(2 * low, high))


def test_a_primary_that_names_no_row_is_refused_before_any_training() -> None:
    with pytest.raises(ValueError, match="names none of the hypotheses' rows"):
        probes.probe_claims(HYPOTHESES, TASKS, "H1 odd helps · mqar easy")
    study = probes.probe_study(_results(), "p", TASKS, 512, _lr(), [1e-3], "H1 odd helps · mqar easy")
    with pytest.raises(ValueError, match="primary contrast"):  # the evaluator refuses it too
        analysis.evaluate_claims(probes.probe_claims(HYPOTHESES, TASKS), study)


def test_the_floor_is_the_most_common_answers_share_of_the_test_set() -> None:
    """Inverse matching's answer is a yes/no label (about half each); MQAR's answers are its values, about
    uniform; the table puts the floor beside every variant of its level."""
    from collections import Counter

    from mswelu.data.tasks import IGNORE, TaskSource

    source = TaskSource("task:mqar?level=easy&test=64")
    answers = [int(a) for b in source.test_batches(16) for a in b[:, 1].flatten() if a != IGNORE]
    want = Counter(answers).most_common(1)[0][1] / len(answers)
    assert probes.majority_accuracy("mqar", "easy", 64) == pytest.approx(want)
    assert 0.4 < probes.majority_accuracy("inverse_matching", "easy", 256) < 0.6
    table = probes.accuracy_table(_results(), 64)
    assert list(table.columns) == ["task", "level", "variant", "mean", "std", "count", "most_common_answer"]
    floors = table.groupby("level").most_common_answer.unique()
    assert all(len(f) == 1 for f in floors) and floors["easy"][0] == pytest.approx(
        probes.majority_accuracy("inverse_matching", "easy", 64)
    )
