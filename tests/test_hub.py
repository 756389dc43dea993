"""A run's ``final/`` loads like any Hugging Face model after ``import mswelu``: Auto classes, the tokenizer,
``pipeline("text-generation")`` (greedy output equal to ``mswelu.generate``'s, decoding one token per step)
and the model card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mswelu.data import get_tokenizer
from mswelu.generate import SamplingConfig, decode, generate_text
from mswelu.runs.hub import hf_tokenizer
from mswelu.runs.model import load_model

ROOT = Path(__file__).resolve().parents[1]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n  Café — naïve 'quotes' 123."


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_mswelu_registers_the_auto_classes_lazily(tiny_run) -> None:
    final = tiny_run / "final"
    before = _python(
        "import sys, mswelu; assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "from transformers import AutoConfig, AutoModelForCausalLM\n"
        f"print(type(AutoConfig.from_pretrained({str(final)!r})).__name__)\n"
        f"print(type(AutoModelForCausalLM.from_pretrained({str(final)!r})).__name__)"
    )
    assert before.returncode == 0, before.stderr
    assert before.stdout.split() == ["MsweluConfig", "MsweluForCausalLM"]
    after = _python(  # transformers' Auto modules imported before mswelu
        "from transformers import AutoModelForCausalLM\nimport mswelu\n"
        f"print(type(AutoModelForCausalLM.from_pretrained({str(final)!r})).__name__)"
    )
    assert after.returncode == 0 and after.stdout.split() == ["MsweluForCausalLM"], after.stderr


def test_final_holds_the_tokenizer_generation_config_and_card(tiny_run) -> None:
    final = tiny_run / "final"
    names = {p.name for p in final.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    gen = json.loads((final / "generation_config.json").read_text())
    assert gen["eos_token_id"] == gen["pad_token_id"] == 50256 and gen["max_new_tokens"] == 100
    card = (final / "README.md").read_text()
    summary = json.loads((tiny_run / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: text-generation\n")
    assert f"| validation bits per byte | {summary['val_bpb']:.4f} |" in card
    assert f"| tokens | {summary['tokens']:,} |" in card and "| tokenizer | `gpt2` |" in card
    slots = json.loads((tiny_run / "config.json").read_text())["_shape_slots"]
    for slot in slots:  # one row per slot: learned k, fixed lambda
        k = summary["k"][slot["name"]]
        assert (
            f"| `{slot['name']}` | swelu | {slot['group']} | {slot['layer']} | {k:.4f} | 1.0000 (fixed) |"
            in card
        )
    assert "## How it was made" in card and "preset: tiny" in card


def test_auto_classes_round_trip(tiny_run, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    import mswelu  # noqa: F401

    final = tiny_run / "final"
    model = AutoModelForCausalLM.from_pretrained(final).eval()
    ours, _ = load_model(tiny_run)
    ids = torch.tensor([get_tokenizer("gpt2").encode(TEXT)])
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ours(input_ids=ids).logits, rtol=0, atol=0)
    model.save_pretrained(tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    for (n, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    tok = AutoTokenizer.from_pretrained(final)
    assert isinstance(tok, PreTrainedTokenizerFast) and tok.eos_token_id == 50256
    assert (
        json.loads((final / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    assert tok(TEXT)["input_ids"] == get_tokenizer("gpt2").encode(TEXT)  # GPT-2's ids, built offline
    assert tok.decode(tok(TEXT)["input_ids"]) == TEXT


def test_pipeline_greedy_equals_mswelu_generate(tiny_run) -> None:
    from transformers import pipeline

    import mswelu  # noqa: F401

    pipe = pipeline("text-generation", model=str(tiny_run / "final"), device="cpu")
    lengths: list[int] = []
    pipe.model.register_forward_pre_hook(
        lambda m, args, kw: lengths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    prompt, new = "ROMEO:\nBut soft", 24
    out = pipe(prompt, do_sample=False, max_new_tokens=new)[0]["generated_text"]
    model, _ = load_model(tiny_run)
    tok = get_tokenizer("gpt2")
    (ours,) = generate_text(model, tok, [prompt], SamplingConfig(temperature=0.0, max_new_tokens=new))
    assert out == prompt + ours
    assert lengths[0] == len(tok.encode(prompt)) and set(lengths[1:]) <= {1}  # O(1) per new token
    # the same tokens, id for id
    ids = torch.tensor([tok.encode(prompt)])
    hf = pipe.model.generate(ids, do_sample=False, max_new_tokens=new, eos_token_id=None)
    assert torch.equal(hf, decode(model, ids, SamplingConfig(temperature=0.0, max_new_tokens=new)))


def test_a_corpus_bpe_becomes_a_fast_tokenizer(tmp_path) -> None:
    from mswelu.data.tokenizer import train_bpe

    texts = [
        "To be, or not to be, that is the question:\n",
        "Whether 'tis nobler in the mind to suffer\n",
    ] * 30
    ours = train_bpe(texts, 300, tmp_path / "tokenizer.json")
    fast = hf_tokenizer(str(tmp_path / "tokenizer.json"), model_max_length=256)
    assert fast.eos_token == "<|endoftext|>" and fast.eos_token_id == 0 == ours.eos_id
    assert fast(TEXT)["input_ids"] == ours.encode(TEXT) and fast.decode(ours.encode(TEXT)) == TEXT
    assert fast.model_max_length == 256
    with pytest.raises(ValueError, match="not found"):
        hf_tokenizer(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="not available offline"):
        hf_tokenizer(str(tmp_path / "no-such-tokenizer-folder"))


def test_a_notice_about_final_is_said_once_per_process(capsys) -> None:
    """A study of synthetic tasks saves hundreds of final/ folders with no tokenizer: one line per reason."""
    from mswelu.runs import hub

    for _ in range(3):
        hub._say_once("final/ has no tokenizer: task:test-a is a synthetic task")
    hub._say_once("final/ has no tokenizer: task:test-b is a synthetic task")
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "[mswelu.train] final/ has no tokenizer: task:test-a is a synthetic task",
        "[mswelu.train] final/ has no tokenizer: task:test-b is a synthetic task",
    ]
