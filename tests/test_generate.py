"""Generation: sampling filters against their definitions, recurrent == recompute decoding, batching by
prompt length, EOS handling, interactive commands, model loading and the CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from mswelu import generate as G
from mswelu.generate.cli import Session, run_command

# ----------------------------------------------------------------------------- filters


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0], [0.0, -1.0, 2.0, 1.0, 3.0]])
    out = G.top_k_filter(logits, 2)
    assert torch.isinf(out).sum(dim=1).tolist() == [3, 3]
    assert out[0].isfinite().nonzero().flatten().tolist() == [1, 3]
    assert out[1].isfinite().nonzero().flatten().tolist() == [2, 4]
    assert torch.equal(out[0, [1, 3]], logits[0, [1, 3]])
    assert torch.equal(G.top_k_filter(logits, 0), logits) and torch.equal(G.top_k_filter(logits, 5), logits)
    ties = G.top_k_filter(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 2)
    assert ties.isfinite().sum() == 2


def test_top_p_keeps_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.05, 0.3, 0.15]])
    logits = probs.log()
    # sorted: 0.5, 0.3, 0.15, 0.05 -> p=0.8 needs {0.5, 0.3}; p=0.81 needs 0.15 as well
    assert G.top_p_filter(logits, 0.8).isfinite().nonzero()[:, 1].tolist() == [0, 2]
    assert G.top_p_filter(logits, 0.81).isfinite().nonzero()[:, 1].tolist() == [0, 2, 3]
    assert G.top_p_filter(logits, 0.01).isfinite().nonzero()[:, 1].tolist() == [0]  # at least one
    assert torch.equal(G.top_p_filter(logits, 1.0), logits)
    with pytest.raises(ValueError):
        G.top_p_filter(logits, 0.0)


def test_top_p_matches_brute_force_on_random_rows():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 30, generator=gen) * 2
    for p in (0.3, 0.7, 0.95):
        out = G.top_p_filter(logits, p)
        probs = torch.softmax(logits, -1)
        for row in range(20):
            kept = out[row].isfinite()
            order = probs[row].argsort(descending=True)
            n = int((torch.cumsum(probs[row][order], 0) < p).sum()) + 1
            assert set(order[:n].tolist()) == set(kept.nonzero().flatten().tolist())


def test_sample_next_distribution_and_greedy():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]]).repeat(20000, 1)
    gen = torch.Generator().manual_seed(1)
    cfg = G.SamplingConfig(temperature=2.0, top_k=0, top_p=1.0)
    counts = torch.bincount(G.sample_next(logits, cfg, gen), minlength=4).float() / 20000
    expected = torch.softmax(torch.tensor([0.0, 1.0, 2.0, 3.0]) / 2.0, -1)
    assert torch.allclose(counts, expected, atol=0.015)
    only_top2 = G.sample_next(logits, G.SamplingConfig(temperature=1.0, top_k=2, top_p=1.0), gen)
    assert set(only_top2.unique().tolist()) == {2, 3}
    assert G.sample_next(logits[:3], G.SamplingConfig(temperature=0.0)).tolist() == [3, 3, 3]
    with pytest.raises(ValueError):
        G.sample_next(logits[0], cfg)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -1},
        {"top_k": -1},
        {"top_k": 1.5},
        {"top_p": 0},
        {"top_p": 1.1},
        {"max_new_tokens": 0},
        {"temperature": float("nan")},
    ],
)
def test_sampling_config_validation(kwargs):
    with pytest.raises(ValueError):
        G.SamplingConfig(**kwargs)


# ----------------------------------------------------------------------------- commands


def apply_command(cfg: G.SamplingConfig, line: str) -> tuple[G.SamplingConfig, str, bool]:
    """``run_command`` on sampling settings alone: (new config, message, quit?)."""
    session, message, stop = run_command(Session(cfg), line)
    return session.cfg, message, stop


def test_apply_command_seed_commands():
    cfg = G.SamplingConfig()
    cfg2, msg, stop = apply_command(cfg, "/temp 0.5")
    assert cfg2.temperature == 0.5 and cfg.temperature == 0.8 and not stop and "0.5" in msg
    assert apply_command(cfg, "/top_p 0.9")[0].top_p == 0.9
    assert apply_command(cfg, "/top_k 7")[0].top_k == 7
    assert apply_command(cfg, "/tokens 12")[0].max_new_tokens == 12
    assert "/top_p" in apply_command(cfg, "/help")[1]
    assert apply_command(cfg, "/quit")[2] and apply_command(cfg, "/exit")[2]
    bad, msg, _ = apply_command(cfg, "/top_p 2")
    assert bad == cfg and "not changed" in msg
    assert "usage" in apply_command(cfg, "/temp")[1]
    assert "unknown command" in apply_command(cfg, "/nope 1")[1]
    assert apply_command(cfg, "/temp abc")[0] == cfg
    assert apply_command(cfg, "/tokens abc")[1] == (
        "not changed: /tokens takes a whole number, not 'abc' (now 100)"
    )
    with pytest.raises(ValueError):
        apply_command(cfg, "hello")


# ----------------------------------------------------------------------------- with a model


class CharTokenizer:
    """Bytes as ids (vocab 256 + EOS 256): enough to drive a tiny model end to end."""

    eos_id = 256
    vocab_size = 257
    name = "bytes"

    def encode(self, text):
        return list(text.encode())

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode(errors="replace")


@pytest.fixture(scope="module")
def tiny_model():
    from mswelu import MsweluConfig, MsweluForCausalLM

    torch.manual_seed(0)
    model = MsweluForCausalLM(MsweluConfig.from_preset("tiny", vocab_size=257, eos_token_id=256))
    return model.eval()


@pytest.fixture(scope="module")
def tiny_hybrid():
    from mswelu import MsweluConfig, MsweluForCausalLM

    torch.manual_seed(0)
    cfg = MsweluConfig.from_preset("tiny", vocab_size=257, eos_token_id=256, layer_pattern="MA")
    return MsweluForCausalLM(cfg).eval()


@pytest.mark.parametrize("which", ["tiny_model", "tiny_hybrid", "tiny_gpt2"])
def test_recurrent_equals_recompute(which, request):
    model = request.getfixturevalue(which)
    prompt = torch.randint(0, 256, (3, 5), generator=torch.Generator().manual_seed(0))
    rows = G.decode_speed(model, prompt, new_tokens=12)
    assert [r["mode"] for r in rows] == ["recurrent", "recompute"]
    assert all(r["same_tokens"] for r in rows) and all(r["tokens_per_s"] > 0 for r in rows)
    # sampling with the same seed gives the same tokens in both modes too
    cfg = G.SamplingConfig(temperature=1.0, top_k=20, top_p=0.9, max_new_tokens=10)
    a = G.decode(model, prompt, cfg, "recurrent", torch.Generator().manual_seed(3))
    b = G.decode(model, prompt, cfg, "recompute", torch.Generator().manual_seed(3))
    assert a.shape == (3, 15) and torch.equal(a, b) and torch.equal(a[:, :5], prompt)


def test_decode_checks(tiny_model):
    cfg = G.SamplingConfig(max_new_tokens=200)
    with pytest.raises(ValueError, match="context"):
        G.decode(tiny_model, torch.zeros(1, 10, dtype=torch.long), cfg)
    with pytest.raises(ValueError):
        G.decode(tiny_model, torch.zeros(1, 0, dtype=torch.long), G.SamplingConfig())
    with pytest.raises(ValueError):
        G.decode(tiny_model, torch.zeros(1, 3, dtype=torch.long), G.SamplingConfig(), mode="fast")


def test_eos_rows_stop(tiny_model):
    with torch.no_grad():
        bias = torch.zeros(257)
        bias[256] = 100.0  # make EOS certain
        saved = tiny_model.lm_head.weight.clone()
        tiny_model.lm_head.weight.zero_()
    try:
        tiny_model.lm_head.register_parameter("bias", torch.nn.Parameter(bias))
        out = G.decode(
            tiny_model,
            torch.ones(2, 3, dtype=torch.long),
            G.SamplingConfig(max_new_tokens=9),
            eos_token_id=256,
        )
        assert out.shape == (2, 4) and out[:, 3].tolist() == [256, 256]
    finally:
        del tiny_model.lm_head.bias
        tiny_model.lm_head.register_parameter("bias", None)
        with torch.no_grad():
            tiny_model.lm_head.weight.copy_(saved)


def test_generate_text_batches_by_length(tiny_model):
    tok = CharTokenizer()
    cfg = G.SamplingConfig(temperature=0.0, max_new_tokens=6)
    prompts = ["abc", "hello", "xyz"]
    batch = G.generate_text(tiny_model, tok, prompts, cfg, stop_at_eos=False)
    one_by_one = [G.generate_text(tiny_model, tok, p, cfg, stop_at_eos=False)[0] for p in prompts]
    assert batch == one_by_one and len(batch) == 3
    s1 = G.generate_text(tiny_model, tok, prompts, dataclasses.replace(cfg, temperature=1.0), seed=5)
    s2 = G.generate_text(tiny_model, tok, prompts, dataclasses.replace(cfg, temperature=1.0), seed=5)
    assert s1 == s2
    with pytest.raises(ValueError):
        G.generate_text(tiny_model, tok, [], cfg)


def test_repl_script(tiny_model):
    lines = iter(["/temp 0", "/tokens 4", "", "ab", "/seed 3", "/bogus", "/quit", "never read"])
    printed: list[str] = []
    cfg = G.repl(
        tiny_model,
        CharTokenizer(),
        input_fn=lambda _: next(lines),
        print_fn=lambda *a: printed.append(" ".join(map(str, a))),
    )
    assert cfg.temperature == 0.0 and cfg.max_new_tokens == 4
    assert any(p.startswith("ab") for p in printed) and "bye" in printed
    assert any(re.fullmatch(r"\[4 tokens, [0-9.]+ tok/s, [0-9.]+ s\]", p) for p in printed), printed
    assert any("unknown command" in p for p in printed) and "seed = 3" in printed
    assert next(lines) == "never read"
    # end of input also leaves the loop
    G.repl(
        tiny_model,
        CharTokenizer(),
        input_fn=lambda _: (_ for _ in ()).throw(EOFError),
        print_fn=lambda *a: None,
    )


def test_load_model_and_cli(tiny_model, tmp_path, capsys, monkeypatch):
    run = tmp_path / "runs" / "r1"
    tiny_model.save_pretrained(run / "final")
    (run / "config.json").write_text(json.dumps({"preset": "tiny", "data": None}))
    model, tok, model_dir = G.load_model(run)
    assert model_dir == run / "final" and tok.name.startswith("gpt2")
    sd, sd2 = tiny_model.state_dict(), model.state_dict()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    model2, _, d2 = G.load_model(run / "final")
    assert d2 == run / "final"
    with pytest.raises(ValueError):
        G.load_model(tmp_path / "missing")

    # the CLI with a byte tokenizer (the tiny model's vocab is 257)
    monkeypatch.setattr("mswelu.data.get_tokenizer", lambda name="gpt2": CharTokenizer())
    assert (
        G.main(
            ["--run", str(run), "--prompt", "ab", "--prompt", "cde", "--temp", "0", "--tokens", "5", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [o["prompt"] for o in out] == ["ab", "cde"]
    assert G.main(["--run", str(run), "--bench", "--tokens", "8", "--repeats", "2", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert {r["mode"] for r in bench["results"]} == {"recurrent", "recompute"}
    assert all(r["same_tokens"] and r["repeats"] == 2 for r in bench["results"])
    assert "8 new tokens after a prompt of 8 tokens, batch 1" in bench["measured"]
    monkeypatch.setattr("builtins.input", lambda _: "/quit")
    assert G.main(["--run", str(run)]) == 0
    assert G.main(["--run", str(tmp_path / "nope")]) == 2
    assert G.main(["--run", str(run), "--top-p", "3"]) == 2


def test_load_model_by_run_name(tiny_model, monkeypatch, tmp_path):
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    tiny_model.save_pretrained(tmp_path / "runs" / "named" / "final")
    (tmp_path / "runs" / "named" / "config.json").write_text("{}")
    _, _, model_dir = G.load_model("named")
    assert model_dir == tmp_path / "runs" / "named" / "final"
    _, _, newest = G.load_model(None)
    assert newest == model_dir
    with pytest.raises(ValueError, match="no run 'nosuchrun'.*runs with a saved model: named"):
        G.load_model("nosuchrun")


@pytest.mark.parametrize("which", ["tiny_model", "tiny_hybrid", "tiny_gpt2"])
def test_recurrent_decode_feeds_one_token_per_step(which, request):
    """The O(1) guard: one prefill of the prompt, then forwards of length 1, whatever the installed
    transformers calls the cache; with test_recurrent_equals_recompute it shows the cache is really used."""
    model = request.getfixturevalue(which)
    lengths = []
    hook = model.register_forward_pre_hook(
        lambda mod, args, kwargs: lengths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        G.decode(model, torch.randint(0, 256, (2, 5)), G.SamplingConfig(temperature=0, max_new_tokens=6))
    finally:
        hook.remove()
    assert lengths == [5] + [1] * 5


@pytest.fixture(scope="module")
def tiny_gpt2():
    from mswelu.models.baselines import build_baseline

    torch.manual_seed(0)
    return build_baseline("gpt2", "tiny", vocab_size=257, max_seq_len=64, n_embd=32, n_layer=2).eval()


def test_decode_speed_warms_up_and_reports_the_median(monkeypatch):
    """Every mode is decoded once untimed, then timed ``repeats`` times alternating with the other mode;
    tokens/s come from the median time, and each row says what was measured."""
    from mswelu.generate import decoding

    calls: list[str] = []
    durations = {"recurrent": iter([9.0, 1.0, 2.0]), "recompute": iter([4.0, 5.0, 100.0])}
    clock = {"now": 0.0, "mode": None}

    def fake_decode(model, ids, cfg, mode="recurrent", **kw):
        calls.append(mode)
        if len(calls) > 2:  # the warm-up (one per mode) is not timed
            clock["now"] += next(durations[mode])
        return torch.cat([ids, torch.zeros(ids.size(0), cfg.max_new_tokens, dtype=ids.dtype)], 1)

    class FakeTime:
        @staticmethod
        def perf_counter():
            return clock["now"]

    monkeypatch.setattr(decoding, "decode", fake_decode)
    monkeypatch.setattr(decoding, "time", FakeTime)
    rows = decoding.decode_speed(
        None, torch.zeros(2, 3, dtype=torch.long), new_tokens=10, repeats=3, warmup=1
    )
    assert calls == ["recurrent", "recompute"] * 4
    rec, full = rows
    assert (rec["seconds"], rec["seconds_min"], rec["seconds_max"]) == (2.0, 1.0, 9.0)
    assert full["seconds"] == 5.0 and rec["tokens_per_s"] == 20 / 2.0 and full["tokens_per_s"] == 20 / 5.0
    assert {k: rec[k] for k in ("batch", "prompt_len", "new_tokens", "warmup", "repeats")} == {
        "batch": 2,
        "prompt_len": 3,
        "new_tokens": 10,
        "warmup": 1,
        "repeats": 3,
    }
    text = decoding.describe_benchmark(rows)
    assert "10 new tokens after a prompt of 3 tokens, batch 2" in text and "median of 3 timed runs" in text
    assert "1 warm-up run per mode" in text
