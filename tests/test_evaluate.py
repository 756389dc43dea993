"""Downstream tasks through lm-eval-harness: the local tasks built from the validation split run on a tiny
run's model, and the accuracy lm-eval reports equals an independent count with the model itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mswelu import evaluate as ev
from mswelu.data import get_tokenizer
from mswelu.runs.model import load_model


def test_local_tasks_are_built_from_the_validation_split(embedded_data, tmp_path) -> None:
    out = ev.build_local_tasks(embedded_data, tmp_path / "tasks", n=5, context_chars=120)
    texts = "\n".join(ev.validation_texts(embedded_data))
    lastword = [json.loads(x) for x in (out / "mswelu_lastword.jsonl").read_text().splitlines()]
    choice = [json.loads(x) for x in (out / "mswelu_choice.jsonl").read_text().splitlines()]
    assert len(lastword) == len(choice) == 5
    for d in lastword:
        assert d["target"].startswith(" ") and d["target"][1:].isalpha() and len(d["context"]) == 120
        assert d["context"] + d["target"] in texts  # a real passage of the split, cut before its word
    for d in choice:
        assert len(d["choices"]) == 4 and len(set(d["choices"])) == 4 and 0 <= d["gold"] < 4
        assert d["context"].endswith("\n") and d["context"] + d["choices"][d["gold"]] in texts
    again = ev.build_local_tasks(embedded_data, tmp_path / "again", n=5, context_chars=120)
    assert (again / "mswelu_choice.jsonl").read_text() == (out / "mswelu_choice.jsonl").read_text()  # seeded
    assert "dataset_path: json" in (out / "mswelu_choice.yaml").read_text()


def _logprobs(model, tok, context: str, continuation: str) -> tuple[float, bool]:
    """Sum of log p(continuation | context) and whether every continuation token is the argmax, computed
    on the model directly. Tokens split as lm-eval splits them: trailing whitespace of the context moves to
    the continuation, the pair is encoded whole and cut at the context's length."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    target = whole[len(ctx) :]
    ids = torch.tensor([whole[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)[-len(target) :]
    t = torch.tensor(target)
    return float(logp.gather(1, t[:, None]).sum()), bool((logp.argmax(-1) == t).all())


@pytest.mark.slow
def test_lm_eval_accuracy_equals_an_independent_count(tiny_run, embedded_data, tmp_path) -> None:
    pytest.importorskip("lm_eval")
    tasks = ev.build_local_tasks(embedded_data, tmp_path / "tasks", n=8, context_chars=120)
    results = ev.run_tasks(
        tiny_run, list(ev.LOCAL_TASKS), include=tasks, batch_size=4, device="cpu", log_samples=True
    )
    model, _ = load_model(tiny_run)
    tok = get_tokenizer("gpt2")
    lastword = [json.loads(x) for x in (tasks / "mswelu_lastword.jsonl").read_text().splitlines()]
    mine = [_logprobs(model, tok, d["context"], d["target"]) for d in lastword]
    greedy = [g for _, g in mine]
    theirs = {s["doc_id"]: s["filtered_resps"][0] for s in results["samples"]["mswelu_lastword"]}
    for i, (ll, g) in enumerate(mine):  # the same numbers, not just the same count
        assert theirs[i][0] == pytest.approx(ll, rel=1e-4, abs=1e-3) and theirs[i][1] == g
    choice = [json.loads(x) for x in (tasks / "mswelu_choice.jsonl").read_text().splitlines()]
    theirs = {s["doc_id"]: [r[0] for r in s["filtered_resps"]] for s in results["samples"]["mswelu_choice"]}
    right = right_norm = 0
    for j, d in enumerate(choice):
        lls = [_logprobs(model, tok, d["context"], c)[0] for c in d["choices"]]
        assert theirs[j] == pytest.approx(lls, rel=1e-4, abs=1e-3)
        right += int(max(range(4), key=lambda i: lls[i]) == d["gold"])
        right_norm += int(max(range(4), key=lambda i: lls[i] / len(d["choices"][i])) == d["gold"])
    got = results["results"]
    assert got["mswelu_lastword"]["acc,none"] == sum(greedy) / len(greedy)
    assert got["mswelu_choice"]["acc,none"] == right / len(choice)
    assert got["mswelu_choice"]["acc_norm,none"] == right_norm / len(choice)
    saved = json.loads((Path(tiny_run) / "tasks.json").read_text())
    assert saved["tasks"]["mswelu_choice"]["acc"] == right / len(choice)
    assert saved["tasks"]["mswelu_choice"]["n"] == 8 and saved["model"].endswith("final")
    assert ev.read_task_scores(tiny_run)["mswelu_lastword"]["acc"] == sum(greedy) / len(greedy)


def test_task_command_errors_are_one_line(tiny_run, monkeypatch, capsys) -> None:
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert ev.main(["tasks", "--run", str(tiny_run), "--tasks", "lambada_openai,hellaswag"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot reach the Hugging Face Hub")
    assert ev.main(["tasks", "--run", str(tiny_run), "--tasks", "mswelu_lastwrod"]) == 2
    assert "did you mean 'mswelu_lastword'" in capsys.readouterr().err


def test_without_lm_eval_the_command_names_the_extra(tiny_run, monkeypatch, capsys) -> None:
    real = ev.importlib.util.find_spec
    monkeypatch.setattr(ev.importlib.util, "find_spec", lambda n, *a: None if n == "lm_eval" else real(n, *a))
    assert ev.main(["tasks", "--run", str(tiny_run), "--tasks", "mswelu_choice"]) == 2
    assert capsys.readouterr().err.strip().endswith("pip install 'mswelu[eval]'")
