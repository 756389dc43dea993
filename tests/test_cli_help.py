"""Every command's ``--help`` is plain text: the docstrings behind them are written for readers of the code
(reST roles, double backquotes), and ``--help`` must not show that markup to a user."""

from __future__ import annotations

import contextlib
import importlib
import io
import re

import pytest

from mswelu.base.errors import plain_text
from mswelu.bench import BENCHMARKS

# (module with main(argv), the arguments before --help)
COMMANDS = [
    ("mswelu.train", []),
    ("mswelu.generate", []),
    ("mswelu.bench.__main__", []),
    *[("mswelu.bench.__main__", [name]) for name in BENCHMARKS],
    ("mswelu.data.__main__", []),
    ("mswelu.data.__main__", ["prepare"]),
    ("mswelu.data.__main__", ["info"]),
    ("mswelu.plan", []),
    ("mswelu.runs.index", []),
    ("mswelu.runs.index", ["list"]),
    ("mswelu.runs.index", ["show"]),
    ("mswelu.monitor", []),
    ("mswelu.evaluate", []),
    ("mswelu.evaluate", ["tasks"]),
    ("mswelu.evaluate", ["build-tasks"]),
]
MARKUP = re.compile(r"``|:(func|mod|class|meth|data|attr|obj|exc):`")


def _help(module: str, args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = importlib.import_module(module).main([*args, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert not code, f"{module} {' '.join(args)} --help exited {code}:\n{out.getvalue()}"
    return out.getvalue()


@pytest.mark.parametrize("module,args", COMMANDS, ids=[" ".join([m, *a]) for m, a in COMMANDS])
def test_help_is_plain_text(module: str, args: list[str]) -> None:
    text = _help(module, args)
    assert "usage:" in text
    found = [line for line in text.splitlines() if MARKUP.search(line)]
    assert not found, "reST markup in --help:\n" + "\n".join(found)


def test_plain_text_drops_roles_and_literals() -> None:
    assert plain_text(':func:`decode` with ``mode="recurrent"``') == 'decode with mode="recurrent"'
    assert plain_text(":data:`~mswelu.base.stats.DEFAULT_SEEDS` and ``--set KEY=VALUE``") == (
        "DEFAULT_SEEDS and --set KEY=VALUE"
    )
    assert plain_text("a `single` quote stays") == "a `single` quote stays"
