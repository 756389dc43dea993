"""The README and ``docs/`` say only what works: every command in their ```bash blocks that a test can run is
checked here (its module or notebook exists, its arguments parse with the command's own parser, every
``-p NAME`` is a parameter of its notebook; the cheap ones run for real), every relative link resolves, and
the README stays a front page."""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import runpy
import shlex
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 300

# Pages and notebooks other branches add (merged by the lead): a link to one of them, or a command naming
# one, is checked as soon as the file exists; until then it is allowed to be missing.
PENDING: set[str] = set()  # files another branch adds, skipped until they exist (none now)

# Commands whose program a test does not run, and why. Any other program in a ```bash block fails
# test_every_command_is_covered, so a new kind of command gets a check or a reason here.
NOT_RUN = {
    "pip": "installs packages (network, minutes)",
    "jupyter": "starts a server",
}

# `python -m` modules a test runs for real (cheap, writes nothing); every other one is parsed only.
RUN_FOR_REAL = {
    "mswelu.plan",
    "mswelu.ops.backends",
    "mswelu.monitor",
    "mswelu.runs",
    "mswelu.runs.index",
}
# Arguments that make a cheap module slow, endless, or need what a test lacks (`runs show main`: a run named
# main): such a command is parsed only.
SLOW_ARGS = {"--watch", "--measure", "show"}
# `python -c` code runs for real when it imports only these; otherwise (the CUDA kernels) it is compiled.
SAFE_IMPORTS = {"torch", "mswelu"}


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {shlex.join(self.words)}"


def _bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """Each ```bash block as (its first line's number, its lines dedented to the fence)."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```bash\s*$", lines[i])
        i += 1
        if not fence:
            continue
        indent, start, body = len(fence.group(1)), i + 1, []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        blocks.append((start, body))
        i += 1
    return blocks


def _commands(page: Path) -> list[Command]:
    """Every command of ``page``'s ```bash blocks: continuation lines joined, comments dropped, ``a && b``
    split in two, leading ``NAME=value`` environment settings dropped."""
    found = []
    for start, body in _bash_blocks(page.read_text()):
        joined, first = "", None
        for n, line in enumerate(body, start):
            first = n if first is None else first
            if line.rstrip().endswith("\\"):
                joined += line.rstrip()[:-1] + " "
                continue
            words = shlex.split(joined + line, comments=True)
            joined, line_no, first = "", first, None
            while words:
                cut = words.index("&&") if "&&" in words else len(words)
                command, words = words[:cut], words[cut + 1 :]
                while command and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command[0]):
                    command = command[1:]
                if command:
                    found.append(Command(str(page.relative_to(ROOT)), line_no, tuple(command)))
    return found


COMMANDS = [c for page in PAGES for c in _commands(page)]


def _program(command: Command) -> str:
    return Path(command.words[0]).name


def _of(*programs: str) -> list[Command]:
    return [c for c in COMMANDS if _program(c) in programs]


def _python_m(command: Command) -> tuple[str, list[str]] | None:
    """(module, its arguments) of a ``python -m`` or ``torchrun ... -m`` command, else None."""
    words = list(command.words)
    if "-m" not in words:
        return None
    i = words.index("-m")
    return words[i + 1], words[i + 2 :]


class _Parsed(Exception):
    """Raised by the patched parse_args once a command's arguments parsed: nothing after it runs."""


def _run_module(module: str, args: list[str], *, parse_only: bool, monkeypatch) -> tuple[int, str]:
    """Run ``python -m module args`` in this process (exit status, its output). With ``parse_only``, stop
    as soon as the module's own argument parser accepted ``args`` (status 0)."""
    real_parse = argparse.ArgumentParser.parse_args

    def parse_args(self, args=None, namespace=None):
        parsed = real_parse(self, args, namespace)
        if parse_only:
            raise _Parsed()
        return parsed

    out = io.StringIO()
    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_args)
        m.setattr(sys, "argv", [module, *args])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
            # runpy re-runs a module the package already imported (as `python -m` would not): harmless here
            warnings.filterwarnings("ignore", "'mswelu.*found in sys.modules", RuntimeWarning)
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
            except _Parsed:
                return 0, out.getvalue()
            except SystemExit as exc:
                code = exc.code
                return (code if isinstance(code, int) else (0 if code is None else 1)), out.getvalue()
    return 0, out.getvalue()


def _papermill_parameters(words: list[str], monkeypatch) -> tuple[str, dict]:
    """(notebook, parameters) as papermill's own command line reads them (-p, -y, -f), without running it."""
    import papermill.cli

    seen: dict = {}
    monkeypatch.setattr(papermill.cli, "execute_notebook", lambda **kw: seen.update(kw))
    papermill.cli.papermill.main(list(words), standalone_mode=False)
    return seen["input_path"], seen["parameters"]


def _pending(path: str) -> bool:
    return path in PENDING and not (ROOT / path).exists()


def test_the_readme_is_a_front_page() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines: move details to docs/"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} | {
        p for p in PENDING if p.startswith("docs/")
    }
    unlinked = sorted(p for p in pages if f"]({p}" not in readme)
    assert not unlinked, f"docs pages not linked from README.md: {unlinked}"


def test_commands_were_found() -> None:
    """The extraction itself: the README's two commands and the pages' examples are seen."""
    pages = {c.page for c in COMMANDS}
    assert {"README.md", "docs/training.md", "docs/gpus.md", "docs/kernels.md"} <= pages
    assert any(c.words[:2] == ("bash", ".ci/setup") for c in COMMANDS if c.page == "README.md")
    assert any(_python_m(c) == ("pytest", ["--nbval-lax", "tests", "notebooks"]) for c in COMMANDS)
    assert len(COMMANDS) >= 40


def test_every_command_is_covered() -> None:
    """Each command is one of the kinds checked below, or a program named in NOT_RUN with its reason."""
    checked = {"python", "torchrun", "papermill", "bash"}
    other = [str(c) for c in COMMANDS if _program(c) not in checked | set(NOT_RUN)]
    assert not other, "commands no test checks (add a check, or a reason to NOT_RUN):\n" + "\n".join(other)
    unknown_python = [
        str(c) for c in _of("python", "torchrun") if _python_m(c) is None and "-c" not in c.words
    ]
    assert not unknown_python, "python commands that are neither -m nor -c:\n" + "\n".join(unknown_python)


MODULE_COMMANDS = [
    c for c in _of("python", "torchrun") if _python_m(c) and _python_m(c)[0].startswith("mswelu")
]


@pytest.mark.parametrize("command", MODULE_COMMANDS, ids=str)
def test_a_module_command_parses_or_runs(command: Command, tmp_path: Path, monkeypatch) -> None:
    """The module exists and takes these arguments (its own argparse parser); the cheap ones run for real
    (in an empty project folder, so `runs list` / `monitor` read an empty runs/)."""
    import importlib.util

    module, args = _python_m(command)
    assert importlib.util.find_spec(module) is not None, f"{command}: no module {module}"
    real = module in RUN_FOR_REAL and not SLOW_ARGS & set(args) or "--help" in args
    (tmp_path / "runs").mkdir()
    (tmp_path / "pyproject.toml").touch()
    monkeypatch.setenv("MSWELU_HOME", str(tmp_path))
    monkeypatch.setenv("MSWELU_CPU_KERNELS", "0")  # ops.backends would build them: a minute, not a check
    monkeypatch.chdir(tmp_path)
    code, out = _run_module(module, args, parse_only=not real, monkeypatch=monkeypatch)
    assert code == 0, f"{command}: exit status {code}\n{out}"


TORCHRUN_COMMANDS = _of("torchrun")


@pytest.mark.parametrize("command", TORCHRUN_COMMANDS, ids=str)
def test_torchrun_options_parse(command: Command) -> None:
    """torchrun's own options (before ``-m``) parse with torchrun's parser."""
    from torch.distributed.run import get_args_parser

    words = list(command.words[1:])
    module_at = words.index("-m")
    get_args_parser().parse_args([*words[:module_at], "--module", *words[module_at + 1 :]])


PYTEST_COMMANDS = [c for c in _of("python") if _python_m(c) and _python_m(c)[0] == "pytest"]


@pytest.mark.parametrize("command", PYTEST_COMMANDS, ids=str)
def test_the_test_command_names_real_folders(command: Command) -> None:
    """The README's test command (running it here would run the whole suite inside itself)."""
    _, args = _python_m(command)
    import nbval  # noqa: F401  (--nbval-lax needs it)

    paths = [a for a in args if not a.startswith("-")]
    assert paths and all((ROOT / p).exists() for p in paths), f"{command}: a path does not exist"


CODE_COMMANDS = [c for c in _of("python") if "-c" in c.words]


@pytest.mark.parametrize("command", CODE_COMMANDS, ids=str)
def test_a_python_c_command_runs(command: Command, capsys) -> None:
    code = command.words[command.words.index("-c") + 1]
    tree = ast.parse(code)
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
    }
    if imported <= SAFE_IMPORTS:
        exec(compile(tree, str(command), "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.strip(), f"{command} printed nothing"


PAPERMILL_COMMANDS = _of("papermill")


@pytest.mark.parametrize("command", PAPERMILL_COMMANDS, ids=str)
def test_a_papermill_command_names_a_notebook_and_its_parameters(command: Command, monkeypatch) -> None:
    """papermill's own command line reads the parameters (-p, -y, -f) and every one is declared by the
    notebook's parameters cell, with a list where the notebook takes a list."""
    from mswelu.workbook.prologue import check_parameters

    notebook, parameters = _papermill_parameters(list(command.words[1:]), monkeypatch)
    if _pending(notebook):
        pytest.skip(f"{notebook} is added by another branch")
    assert (ROOT / notebook).is_file(), f"{command}: no notebook {notebook}"
    assert Path(notebook).parent == Path("notebooks")
    check_parameters(Path(notebook).name, parameters)


BASH_COMMANDS = _of("bash")


@pytest.mark.parametrize("command", BASH_COMMANDS, ids=str)
def test_a_bash_script_exists(command: Command) -> None:
    assert (ROOT / command.words[1]).is_file(), f"{command}: no script {command.words[1]}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.M)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _broken_links(page: Path) -> list[str]:
    """The relative links of ``page`` (outside code blocks) whose file, or heading anchor, does not exist."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        rel = file.relative_to(ROOT).as_posix() if file.is_relative_to(ROOT) else str(file)
        if _pending(rel):
            continue
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with that anchor in {rel}")
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    """Each relative link points to a file that exists, and an anchor to a heading of that page."""
    broken = _broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)}: broken links:\n" + "\n".join(broken)


def test_the_checks_catch_a_wrong_command(monkeypatch, tmp_path: Path) -> None:
    """What the checks above would say of a misspelt option, a misspelt notebook parameter, a list
    parameter given one value, and a broken link."""
    from mswelu.workbook.prologue import check_parameters

    code, out = _run_module(
        "mswelu.plan", ["--preset", "tiny", "--gpuz", "8"], parse_only=True, monkeypatch=monkeypatch
    )
    assert code == 2 and "--gpuz" in out
    code, out = _run_module("mswelu.runs", ["lst"], parse_only=True, monkeypatch=monkeypatch)
    assert code == 2 and "lst" in out
    for words, match in [
        (["-p", "presett", "small"], "presett"),
        (["-p", "variants", "swelu"], "must be a list"),
    ]:
        notebook, parameters = _papermill_parameters(
            ["notebooks/05_baselines.ipynb", "out.ipynb", *words], monkeypatch
        )
        with pytest.raises(ValueError, match=match):
            check_parameters(Path(notebook).name, parameters)
    page = Command("x.md", 1, tuple(shlex.split("torchrun --nproc_per_node -m mswelu.train")))
    with pytest.raises(SystemExit):
        test_torchrun_options_parse(page)
    page = tmp_path / "page.md"
    page.write_text(
        "# A page\n[ok](#a-page) [gone](no-such-file.md) [anchor](#no-such-heading) [web](https://x.org)\n"
        "```bash\n[in code](not-a-link.md)\n```\n"
    )
    assert _broken_links(page) == [
        "no-such-file.md: no such file",
        "#no-such-heading: no heading with that anchor in " + str(page),
    ]


INLINE_MODULE = re.compile(r"`(?:\.venv/bin/)?python -m (mswelu[\w.]*)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_named_in_prose_exists(page: Path) -> None:
    """A `python -m mswelu.X ...` written in a sentence (often with placeholders, so not parsed) names a
    module that exists."""
    import importlib.util

    missing = sorted(
        {m for m in INLINE_MODULE.findall(page.read_text()) if importlib.util.find_spec(m) is None}
    )
    assert not missing, f"{page.relative_to(ROOT)} names modules that do not exist: {missing}"
