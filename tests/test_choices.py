"""Every choice a user types says which known name is nearest ("did you mean 'tiny'?"): presets,
baselines, variants, activations, mixers, tokenizers, decode modes, run names, command-line choices."""

from __future__ import annotations

import contextlib
import io

import pytest

from mswelu.base.errors import choice


def _config(**kw):
    from mswelu.models.configuration import MsweluConfig

    return MsweluConfig.from_preset("tiny", **kw)


def _model_name(name: str):
    from mswelu.models.build import parse_model_name

    return parse_model_name(name)


def _variant(name: str):
    from mswelu.training.variants import variant_overrides

    return variant_overrides(name, "tiny")


def _view(name: str):
    from mswelu.analysis.curves import _axis

    return _axis(name, "a", {}, {})


def _test(name: str):
    from mswelu.base.stats import _bounds

    return _bounds(name, 0.1)


@pytest.mark.parametrize(
    "call,nearest",
    [
        (lambda: _model_name("tinny"), "tiny"),  # --preset tinny
        (lambda: _model_name("gtp2:small"), "gpt2"),
        (lambda: _model_name("gpt2:smal"), "small"),
        (lambda: __import__("mswelu").MsweluConfig.from_preset("smal"), "small"),
        (lambda: _variant("swelu-fixd"), "swelu-fixed"),
        (lambda: _config(activation="swelo"), "swelu"),
        (lambda: _config(mixer="mamba3"), "mamba"),
        (lambda: _view("tokns"), "tokens"),
        (lambda: _test("at_lest"), "at_least"),
    ],
)
def test_unknown_names_say_the_nearest_one(call, nearest: str) -> None:
    with pytest.raises(ValueError, match=f"did you mean '{nearest}"):
        call()


def test_a_misspelt_tokenizer_names_the_built_in_one(monkeypatch) -> None:
    from mswelu.data.tokenizer import get_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no Hub: the hint must come without it
    with pytest.raises(ValueError, match=r"unknown tokenizer 'gtp2' \(did you mean 'gpt2'\?\)"):
        get_tokenizer("gtp2")
    with pytest.raises(ValueError, match=r"did you mean 'bpe:4096'"):
        get_tokenizer("bpe4096")


def test_a_misspelt_run_name_names_the_nearest_run(tmp_path, monkeypatch) -> None:
    from mswelu.runs import folder as runs

    monkeypatch.setattr(runs, "runs_dir", lambda: tmp_path)
    monkeypatch.setattr(runs, "list_runs", lambda **kw: [tmp_path / "main", tmp_path / "other"])
    with pytest.raises(ValueError, match=r"no run 'mian' \(did you mean 'main'\?\)"):
        runs.resolve_run("mian")


@pytest.mark.parametrize(
    "module,argv,nearest",
    [
        ("mswelu.generate", ["--mode", "recurent"], "recurrent"),
        ("mswelu.plan", ["--dtype", "bf61"], "bf16"),
        ("mswelu.data.__main__", ["prepare", "--txt-sample-by", "lines"], "line"),
    ],
)
def test_command_line_choices_say_the_nearest_one(module: str, argv: list[str], nearest: str) -> None:
    import importlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        importlib.import_module(module).main(argv)
    assert exit_.value.code == 2
    assert f"did you mean '{nearest}'" in err.getvalue().strip().splitlines()[-1]


def test_choice_type_accepts_known_values() -> None:
    parse = choice("mode", ("a", "bb"))
    assert parse("bb") == "bb"
