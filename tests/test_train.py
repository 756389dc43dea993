"""The trainer end to end on CPU: learning on the embedded corpus, metrics, exact resume, interrupted and
killed runs, non-finite steps, bad input, CLI and baselines.

Most runs use a byte-level dataset written here (real text: Python's own stdlib sources, 257-token
vocabulary), so a ``tiny`` model step costs milliseconds; the learning test uses the embedded GPT-2
corpus from ``mswelu.data.default_dataset``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mswelu.train import TrainConfig, config_from_args, main, train
from mswelu.training import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


def write_byte_dataset(folder: Path, n_tokens: int = 60_000, val_fraction: float = 0.1) -> Path:
    """A prepared dataset (the data package's format) whose tokens are the UTF-8 bytes of stdlib sources."""
    import argparse
    import textwrap

    text = (Path(argparse.__file__).read_bytes() + Path(textwrap.__file__).read_bytes()) * 2
    tokens = np.frombuffer(text[:n_tokens], dtype=np.uint8).astype(np.uint16)
    n_val = int(len(tokens) * val_fraction)
    splits = {"train": tokens[:-n_val], "val": tokens[-n_val:]}
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in splits.items():
        arr.tofile(folder / f"{name}.bin")
    meta = {
        "version": 1,
        "tokenizer": "bytes",
        "vocab_size": 257,
        "eos_id": 256,
        "dtype": "uint16",
        "splits": {
            n: {"tokens": len(a), "documents": 1, "bytes": len(a), "max_token_id": int(a.max())}
            for n, a in splits.items()
        },
        "source": "test-bytes",
        "seed": 0,
        "val_fraction": val_fraction,
        "max_tokens": n_tokens,
        "fingerprint": "test-bytes-v1",
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


@pytest.fixture(scope="module")
def byte_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_byte_dataset(tmp_path_factory.mktemp("bytes") / "data")


def read_metrics(run: Path) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in lines if "loss" in r], [r for r in lines if "val_loss" in r]


# ----------------------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def embedded_run(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from mswelu.data import default_dataset

    data = default_dataset(max_tokens=60_000)
    out = tmp_path_factory.mktemp("runs") / "embedded"
    summary = train(
        tiny_config(data, out, max_steps=24, seq_len=32, lr=4e-3, warmup=3, eval_every=12, ckpt_every=12)
    )
    return summary, out


@pytest.mark.slow
def test_loss_decreases_on_embedded_data(embedded_run: tuple[dict, Path]) -> None:
    summary, out = embedded_run
    train_lines, val_lines = read_metrics(out)
    losses = [r["loss"] for r in train_lines]
    assert len(losses) == 24
    assert losses[0] == pytest.approx(math.log(50257), abs=0.3)  # uniform start over GPT-2's vocabulary
    assert np.mean(losses[-5:]) < losses[0] - 1.0
    assert val_lines[-1]["val_loss"] < val_lines[0]["val_loss"] < math.log(50257)
    assert summary["steps"] == 24 and summary["tokens"] == 24 * 4 * 32


@pytest.mark.slow
def test_metrics_checkpoints_and_final_model(embedded_run: tuple[dict, Path]) -> None:
    from mswelu.models.modeling import MsweluForCausalLM

    summary, out = embedded_run
    model = MsweluForCausalLM.from_pretrained(out / "final")
    slots = list(model.shape_values())
    assert len(slots) == 7  # tiny: 2 blocks x (mixer + post-mixer) + 3 dense
    train_lines, val_lines = read_metrics(out)
    for r in train_lines:
        assert list(r["k"]) == slots and list(r["lambda"]) == slots  # every k, every step logged
        assert r["tokens"] == r["step"] * 4 * 32
        assert set(r["lr"]) == {"decay", "no_decay", "shape"}
        assert r["grad_norm"] > 0 and r["tokens_per_s"] > 0
    assert train_lines[-1]["k"] == pytest.approx({n: v["k"] for n, v in model.shape_values().items()})
    assert any(k != 1.0 for k in train_lines[-1]["k"].values())  # k is learned
    for r in val_lines:
        assert r["val_ppl"] == pytest.approx(math.exp(r["val_loss"]))
    # evaluations at 20% of the run (step 5), every eval_every (12) and at the end
    assert [r["step"] for r in val_lines] == [5, 12, 24]
    assert [r["val_scope"] for r in val_lines] == ["sample", "sample", "whole split"]
    assert [r["val_tokens"] for r in val_lines[:2]] == [4 * 32] * 2  # eval_batches x batch_size windows
    assert summary["val_loss"] == pytest.approx(val_lines[-1]["val_loss"])


@pytest.mark.slow
def test_final_bits_per_byte_are_over_exactly_the_tokens_scored(embedded_run: tuple[dict, Path]) -> None:
    """The final evaluation, recomputed independently: every seq_len window of the val split, the summed
    next-token loss of the final model, and the UTF-8 bytes of exactly those target tokens (decoded as a
    sequence, end-of-text tokens dropped); bpb = loss sum / ln 2 / bytes."""
    import torch.nn.functional as F

    from mswelu.data import get_tokenizer, load_meta
    from mswelu.models.modeling import MsweluForCausalLM

    summary, out = embedded_run
    meta = load_meta(json.loads((out / "config.json").read_text())["data"])
    data_dir = Path(json.loads((out / "config.json").read_text())["data"])
    val = np.fromfile(data_dir / "val.bin", dtype=meta["dtype"]).astype(np.int64)
    seq = 32
    windows = torch.from_numpy(val[: (len(val) - 1) // seq * seq + 1])
    tok = get_tokenizer(meta["tokenizer"])
    model = MsweluForCausalLM.from_pretrained(out / "final").eval()
    loss_sum, n_tokens, n_bytes = 0.0, 0, 0
    with torch.no_grad():
        for j in range((len(val) - 1) // seq):
            w = windows[j * seq : (j + 1) * seq + 1][None]
            logits = model(input_ids=w[:, :-1]).logits
            loss_sum += float(F.cross_entropy(logits[0], w[0, 1:], reduction="sum"))
            n_tokens += seq
            n_bytes += tok.byte_length([t for t in w[0, 1:].tolist() if t != tok.eos_id])
    final = read_metrics(out)[1][-1]
    assert final["val_tokens"] == n_tokens
    assert final["val_loss"] == pytest.approx(loss_sum / n_tokens, rel=1e-4)
    assert final["val_bpb"] == pytest.approx(loss_sum / math.log(2) / n_bytes, rel=1e-4)
    assert summary["val_bpb"] == pytest.approx(final["val_bpb"])
    assert json.loads((out / "summary.json").read_text())["steps"] == 24
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_0000012", "step_0000024"]
    assert any((out / "tb").glob("events.out.tfevents.*"))
    # the final model is the trained one
    fresh = MsweluForCausalLM(model.config)
    state = ckpt.load_checkpoint(out / "checkpoints" / "step_0000024", fresh)
    assert state["step"] == 24
    for a, b in zip(fresh.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------- resume
def _stop_at(step: int):
    def cb(event: str, trainer, info: dict) -> None:
        if event == "step" and info["step"] == step:
            trainer.request_stop("test")

    return cb


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_reproduces_uninterrupted_run_exactly(
    tiny_config, byte_data: Path, tmp_path: Path, optimizer: str
) -> None:
    train(tiny_config(byte_data, tmp_path / "full", optimizer=optimizer))
    part = train(tiny_config(byte_data, tmp_path / "split", optimizer=optimizer), callbacks=[_stop_at(2)])
    assert part["interrupted"] and part["steps"] == 2
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "split" / "checkpoints")] == ["step_0000002"]
    rest = train(tiny_config(byte_data, tmp_path / "split", optimizer=optimizer, resume="auto"))
    assert rest["steps"] == 6 and not rest["interrupted"]
    a, va = read_metrics(tmp_path / "full")
    b, vb = read_metrics(tmp_path / "split")
    assert [r["step"] for r in b] == list(range(1, 7))
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bit for bit
    assert [r["grad_norm"] for r in a] == [r["grad_norm"] for r in b]
    assert [r["k"] for r in a] == [r["k"] for r in b]
    assert [r["val_loss"] for r in va] == [r["val_loss"] for r in vb]
    wa = (tmp_path / "full" / "final" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "split" / "final" / "model.safetensors").read_bytes()


def test_killed_run_resumes_from_previous_complete_checkpoint(
    tiny_config, byte_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(tiny_config(byte_data, out, max_steps=4, ckpt_every=2))
    ckdir = out / "checkpoints"
    good = ckdir / "step_0000004"
    # what a kill can leave: a newer checkpoint cut short, one never finished, a writer's temporary
    cut = ckdir / "step_0000006"
    cut.mkdir()
    for f in good.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    with open(cut / "model.safetensors", "r+b") as f:
        f.truncate(100)
    (ckdir / "step_0000008").mkdir()
    (ckdir / "step_0000008" / "model.safetensors").write_bytes(b"half")
    (ckdir / ".tmp-step_0000010-999999999").mkdir()
    found, skipped = ckpt.latest_checkpoint(ckdir)
    assert found == good and {p.name for p, _ in skipped} == {"step_0000006", "step_0000008"}
    with pytest.raises(ValueError, match="cannot resume"):  # naming the broken one explicitly: clear error
        train(tiny_config(byte_data, out, max_steps=6, resume=str(cut)))
    summary = train(tiny_config(byte_data, out, max_steps=6, ckpt_every=2, resume="auto"))
    assert summary["steps"] == 6
    steps = [r["step"] for r in read_metrics(out)[0]]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step logged twice


@pytest.mark.slow
def test_sigterm_writes_checkpoint_and_exits(byte_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "sig"
    cmd = [
        sys.executable,
        "-m",
        "mswelu.train",
        "--preset",
        "tiny",
        "--data",
        str(byte_data),
        "--out",
        str(out),
        "--max-steps",
        "100000",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--log-every",
        "1",
        "--ckpt-every",
        "0",
        "--eval-every",
        "0",
        "--progress",
        "false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            m = out / "metrics.jsonl"
            if m.exists() and len(m.read_text().splitlines()) >= 2:
                break
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.communicate()[1][-2000:]}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "SIGTERM received" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["stop_reason"] == "SIGTERM"
    found, _ = ckpt.latest_checkpoint(out / "checkpoints")
    assert found is not None and found.name == ckpt.checkpoint_name(summary["steps"])


# ----------------------------------------------------------------------------------------- non-finite
def _nan_logits(steps: set[int] | None):
    """Callback making the model's output NaN on the given optimizer attempts (None: always): the
    logits, or the loss of the fused head (which the trainer uses; its logits are None)."""
    calls = {"n": 0}

    def hook(module, args, output):
        if steps is None or calls["n"] in steps:
            for field in ("logits", "loss"):
                if getattr(output, field, None) is not None:
                    setattr(output, field, getattr(output, field) * float("nan"))
        return output

    def cb(event: str, trainer, info: dict) -> None:
        if event == "model":
            info["model"].register_forward_hook(hook)
        elif event == "step":
            calls["n"] += 1

    return cb


def test_non_finite_steps_are_skipped_and_counted(tiny_config, byte_data: Path, tmp_path: Path) -> None:
    summary = train(
        tiny_config(byte_data, tmp_path / "nan", max_steps=5, eval_every=0), callbacks=[_nan_logits({1, 2})]
    )
    assert summary["steps"] == 5 and summary["nonfinite_skipped"] == 2
    lines, _ = read_metrics(tmp_path / "nan")
    assert all(math.isfinite(r["loss"]) for r in lines) and lines[-1]["nonfinite_skipped"] == 2


def test_too_many_non_finite_steps_stop_with_clear_error(
    tiny_config, byte_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "nan2"
    with pytest.raises(FloatingPointError, match="3 consecutive non-finite"):
        train(
            tiny_config(
                byte_data, out, max_steps=10, max_consecutive_nonfinite=3, ckpt_every=2, eval_every=0
            ),
            callbacks=[_nan_logits(set(range(2, 100)))],
        )
    found, _ = ckpt.latest_checkpoint(out / "checkpoints")
    assert found is not None and found.name == "step_0000002"
    m = torch.nn.Module()  # the checkpoint holds finite weights
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(found / "model.safetensors").values())
    del m


# ----------------------------------------------------------------------------------------- bad input
def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the writer's lock (it names its latest holder)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"optimizer": "sgd"}, "unknown optimizer"),
        ({"schedule": "linear"}, "unknown schedule"),
        ({"activation": "relu"}, "unknown activation"),
        ({"preset": "huge"}, "unknown preset"),
        ({"preset": "gpt3:small"}, "unknown baseline"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"batch_size": 6, "micro_batch_size": 4}, "must be a multiple"),
        ({"max_steps": None, "max_tokens": None}, "max_steps or max_tokens"),
        ({"model": {"vocab_size": 100}}, "does not fit"),
        ({"model": {"d_model": -3}}, "d_model"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_config_fails_before_any_work(
    tiny_config, byte_data: Path, tmp_path: Path, changes: dict, match: str
) -> None:
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=match):
        train(tiny_config(byte_data, out, **changes))
    assert not out.exists()


def test_unknown_config_key_and_missing_data(tiny_config, byte_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown training config keys"):
        TrainConfig.from_dict({"learning_rate": 1e-3})
    with pytest.raises(ValueError, match="does not exist"):
        train(tiny_config(tmp_path / "no-data", tmp_path / "never"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a prepared dataset"):
        train(tiny_config(tmp_path / "empty", tmp_path / "never"))
    assert not (tmp_path / "never").exists()


def test_existing_run_is_never_overwritten_by_mistake(tiny_config, byte_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny_config(byte_data, out, max_steps=2, ckpt_every=0, eval_every=0))
    before = _snapshot(out)
    with pytest.raises(ValueError, match="exists and is not empty"):
        train(tiny_config(byte_data, out, max_steps=2))
    with pytest.raises(ValueError, match="incompatible config.*seq_len"):
        train(tiny_config(byte_data, out, max_steps=4, seq_len=32, resume="auto"))
    with pytest.raises(ValueError, match="incompatible config.*optimizer"):
        train(tiny_config(byte_data, out, max_steps=4, optimizer="muon", resume="auto"))
    other = write_byte_dataset(tmp_path / "other-data", n_tokens=30_000)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps({**meta, "fingerprint": "another-corpus"}))
    with pytest.raises(ValueError, match="fingerprint"):
        train(tiny_config(other, out, max_steps=4, resume="auto"))
    bad = out / "checkpoints" / "step_0000002" / "optimizer.pt"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[:-1] + bytes([good_bytes[-1] ^ 1]))
    with pytest.raises(ValueError, match="no usable checkpoint.*sha256"):
        train(tiny_config(byte_data, out, max_steps=4, resume="auto"))
    bad.write_bytes(good_bytes)
    assert _snapshot(out) == before
    summary = train(tiny_config(byte_data, out, max_steps=3, overwrite=True, ckpt_every=0, eval_every=0))
    assert summary["steps"] == 3 and [r["step"] for r in read_metrics(out)[0]] == [1, 2, 3]


# ----------------------------------------------------------------------------------------- config / CLI
def test_config_roundtrip_and_cli_overrides(tmp_path: Path) -> None:
    cfg = TrainConfig(preset="tiny", lr=1e-3, betas=(0.8, 0.9), model={"d_model": 32})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert TrainConfig.from_file(path) == cfg
    cli = config_from_args(
        [
            "--config",
            str(path),
            "--lr",
            "2e-3",
            "--max-tokens",
            "5000",
            "--max-steps",
            "none",
            "--set",
            "layer_pattern=MA",
            "--compile",
            "--betas",
            "0.9",
            "0.99",
        ]
    )
    assert cli.lr == 2e-3 and cli.max_tokens == 5000 and cli.max_steps is None and cli.compile is True
    assert cli.model == {"d_model": 32, "layer_pattern": "MA"} and cli.betas == (0.9, 0.99)
    assert cli.preset == "tiny"
    assert cli.replace(batch_size=8, seq_len=10).total_steps() == 63  # ceil(5000 / 80)


def test_one_comparison_of_settings_serves_resume_and_reuse() -> None:
    from mswelu.training.config import RESUMABLE_CHANGES, RUNTIME_SETTINGS, changed_settings

    recorded = TrainConfig(preset="tiny", lr=1e-3, betas=(0.8, 0.9)).to_dict()  # as config.json holds it
    recorded["betas"] = list(recorded["betas"])
    wanted = TrainConfig(preset="tiny", lr=2e-3, betas=(0.8, 0.9), seq_len=64, progress=False).to_dict()
    assert changed_settings(recorded, wanted) == ["seq_len", "lr", "progress"]  # a tuple equals its list
    assert changed_settings(recorded, wanted, ignore=RESUMABLE_CHANGES) == ["seq_len"]
    assert changed_settings(recorded, wanted, ignore=RUNTIME_SETTINGS) == ["seq_len", "lr"]
    assert changed_settings({"lr": 2e-3}, wanted) == []  # a setting the record lacks is no change


def test_model_overrides_merge_over_the_base_or_replace_it() -> None:
    from mswelu.training.config import merge_overrides

    base = {"preset": "small", "lr": 1e-3, "model": {"d_state": 4, "dense_residual": True}}
    over = {"activation": "silu", "model": {"d_state": 8}}
    assert merge_overrides(base, over) == {
        "preset": "small",
        "lr": 1e-3,
        "activation": "silu",
        "model": {"d_state": 8, "dense_residual": True},
    }
    assert merge_overrides(base, {"preset": "gpt2:small"}, replace_model=True)["model"] == {}
    assert merge_overrides({"preset": "tiny"}, {"model": None}) == {"preset": "tiny", "model": {}}
    assert TrainConfig(preset="gpt2:small").default_run_name() == "gpt2-small-adamw-s0"
    assert TrainConfig(preset="pythia", seed=3).default_run_name() == "pythia-adamw-s3"  # a registered family


def test_grad_accum_and_tokens_per_step() -> None:
    cfg = TrainConfig(batch_size=32, micro_batch_size=4, seq_len=128)
    assert cfg.grad_accum(1) == 8 and cfg.grad_accum(2) == 4 and cfg.grad_accum(8) == 1
    assert cfg.tokens_per_step() == 32 * 128  # global: independent of the world size
    with pytest.raises(ValueError, match="must be a multiple"):
        cfg.grad_accum(3)


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture) -> None:
    assert main(["--preset", "tiny", "--optimizer", "sgd"]) == 2
    assert "unknown optimizer" in capsys.readouterr().err


def test_grad_accumulation_matches_one_big_batch(tiny_config, byte_data: Path, tmp_path: Path) -> None:
    """micro 2 x accum 2 = the same global batch as micro 4: same losses up to float summation order."""
    a = train(tiny_config(byte_data, tmp_path / "a", max_steps=3, eval_every=0, ckpt_every=0))
    b = train(
        tiny_config(byte_data, tmp_path / "b", max_steps=3, eval_every=0, ckpt_every=0, micro_batch_size=2)
    )
    assert b["grad_accum"] == 2 and a["tokens"] == b["tokens"]
    la = [r["loss"] for r in read_metrics(tmp_path / "a")[0]]
    lb = [r["loss"] for r in read_metrics(tmp_path / "b")[0]]
    np.testing.assert_allclose(la, lb, rtol=1e-5)


# ----------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("kind", ["gpt2", "pythia"])
def test_baselines_match_reference_size_and_train(
    tiny_config, byte_data: Path, tmp_path: Path, kind: str
) -> None:
    from mswelu.models.baselines import transformer_parameter_count
    from mswelu.models.build import build_model, count_parameters, preset_parameter_count

    ref = preset_parameter_count("small", 50257, 256)
    model = build_model(f"{kind}:small", vocab_size=50257, max_seq_len=256)
    info = model.baseline_info
    assert (
        count_parameters(model)
        == info["parameters"]
        == transformer_parameter_count(kind, info["width"], info["depth"], 50257, 256)
    )
    assert abs(info["parameters"] / ref - 1) < 0.05 and info["reference_parameters"] == ref
    assert model.config.vocab_size == 50257
    with pytest.raises(ValueError, match="mswelu presets only"):
        build_model(kind, 257, 32, activation="silu")
    summary = train(
        tiny_config(
            byte_data, tmp_path / kind, preset=f"{kind}:tiny", max_steps=2, eval_every=0, ckpt_every=0
        )
    )
    assert not {"k", "lambda", "beta"} & set(summary) and summary["baseline"]["kind"] == kind
    assert math.isfinite(summary["val_loss"])
    logits = build_model(f"{kind}:tiny", 257, 32)(torch.randint(0, 257, (2, 32))).logits
    assert logits.shape == (2, 32, 257)


def test_the_docs_example_config_is_valid() -> None:
    """The run.yaml shown in docs/training.md is a working config (unknown keys or bad values would raise)."""
    import re

    import yaml

    page = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    block = re.search(r"example this `run.yaml`:\n\n```yaml\n(.*?)```", page, re.S)
    assert block, "docs/training.md's run.yaml example is missing"
    cfg = TrainConfig.from_dict(yaml.safe_load(block.group(1)))
    cfg.validate(world_size=1)
    assert cfg.preset == "small" and cfg.model == {"dense_residual": True} and cfg.lr == 1e-3


def test_a_stop_request_is_honoured_while_steps_are_being_skipped(
    tiny_config, byte_data: Path, tmp_path: Path
) -> None:
    """Every step non-finite (each skipped): SIGTERM / a stop request still ends the run with a
    checkpoint, instead of being ignored until max_consecutive_nonfinite."""
    stop = {"n": 0}

    def request(event: str, trainer, info: dict) -> None:
        if event == "step" and not info["finite"]:
            stop["n"] += 1
            if stop["n"] == 2:
                trainer.request_stop("SIGTERM")

    out = tmp_path / "nan-stop"
    summary = train(
        tiny_config(byte_data, out, max_steps=5, max_consecutive_nonfinite=50),
        callbacks=[_nan_logits(None), request],
    )
    assert summary["interrupted"] and summary["stop_reason"] == "SIGTERM" and summary["steps"] == 0
    assert summary["nonfinite_skipped"] == 2
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == ["step_0000000"]


def test_auto_dtype_takes_bf16_only_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def rule(env: str | None, dtype: str, device: str) -> bool:
        if env is None:
            monkeypatch.delenv("MSWELU_CPU_BF16", raising=False)
        else:
            monkeypatch.setenv("MSWELU_CPU_BF16", env)
        return TrainConfig(dtype=dtype).uses_bf16(device)

    assert rule("1", "auto", "cpu") and not rule("0", "auto", "cpu")
    assert rule("0", "auto", "cuda") and rule("0", "bf16", "cpu") and not rule("1", "fp32", "cpu")
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    if flags is not None:  # the detection reads the kernel's CPU flags
        native = bool({"avx512_bf16", "amx_bf16", "bf16"} & set(flags))
        assert rule(None, "auto", "cpu") == native


def test_dtype_benchmark_pairs_runs_by_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench dtype``'s verdict is its interval against its noise floor (tiny runs; no speed asserted)."""
    from mswelu.bench import dtype as bench
    from mswelu.data import default_dataset

    small = default_dataset(max_tokens=60_000)  # the embedded corpus, capped (the bench takes it whole)
    monkeypatch.setattr("mswelu.data.default_dataset", lambda **kw: small)
    r = bench.run("tiny", "gpt2", steps=4, batch_size=2, seq_len=16, lr=3e-3, seeds=(0, 1), eval_at=())
    assert [(x["seed"], x["dtype"]) for x in r["runs"]] == [
        (0, "fp32"),
        (0, "bf16"),
        (1, "fp32"),
        (1, "bf16"),
    ]
    final = {(x["seed"], x["dtype"]): x["val_loss"] for x in r["runs"]}
    diffs = [final[(s, "bf16")] - final[(s, "fp32")] for s in (0, 1)]
    assert r["bf16_minus_fp32"]["mean"] == pytest.approx(sum(diffs) / 2)
    assert r["noise_floor_sd"] == pytest.approx(abs(final[(0, "fp32")] - final[(1, "fp32")]) / math.sqrt(2))
    d = r["bf16_minus_fp32"]
    assert r["equal"] == (d["lo"] <= 0 <= d["hi"] and abs(d["mean"]) <= r["noise_floor_sd"])
    assert all(x["curve"][-1][0] == 4 for x in r["runs"])
    assert [x["autocast"] for x in r["runs"]] == [None, "bf16", None, "bf16"]  # what each run really used
    with pytest.raises(ValueError, match="at least 2 seeds"):
        bench.run("tiny", "gpt2", steps=2, seeds=(0,))


def test_a_run_killed_after_its_last_step_finishes_its_record_on_resume(
    tiny_config, byte_data: Path, tmp_path: Path
) -> None:
    """A kill between the last checkpoint and the summary: the resumed run trains nothing, writes the final
    evaluation once, and its summary carries the figures of the run (not nulls from an empty sitting)."""
    out = tmp_path / "run"
    first = train(tiny_config(byte_data, out, ckpt_every=0))
    shutil.rmtree(out / "final")
    (out / "summary.json").unlink()
    again = train(tiny_config(byte_data, out, ckpt_every=0, resume="auto"))
    assert again["steps"] == first["steps"] and again["train_loss"] == pytest.approx(first["train_loss"])
    assert again["tokens_per_s"] == pytest.approx(first["tokens_per_s"]) and again["wall_time_s"] > 0
    assert again["val_loss"] == pytest.approx(first["val_loss"])
    finals = [r for r in read_metrics(out)[1] if r.get("val_scope") == "whole split" and r["step"] == 6]
    assert len(finals) == 1 and (out / "final").is_dir()
    # a finished run asked to resume is left as it is
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert train(tiny_config(byte_data, out, ckpt_every=0, resume="auto"))["steps"] == 6
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".lock"} == before


@pytest.mark.parametrize(
    ("text", "want"), [("0.5", (0.5,)), ("0.2,0.5", (0.2, 0.5)), ("[0.2, 0.8]", (0.2, 0.8)), ("none", ())]
)
def test_eval_fractions_from_the_command_line(text: str, want: tuple) -> None:
    assert config_from_args(["--eval-fractions", text]).eval_fractions == want
