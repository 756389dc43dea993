"""Every notebook's first and last steps: the prologue, checked outputs, and keeping the executed notebook."""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from IPython import get_ipython
from transformers.utils import logging as hf_logging

from mswelu.base import progress
from mswelu.base.errors import ParameterError, RunInterrupted, RunRefused, with_nearest
from mswelu.base.paths import reports_dir
from mswelu.base.progress import in_kernel, say
from mswelu.report import Report
from mswelu.report.index import STUDIES
from mswelu.runs import folder as runs

__all__ = [
    "STUDIES",
    "check_parameters",
    "current_report",
    "format_samples",
    "keep_executed_notebook",
    "notebook_parameters",
    "papermill_options",
    "papermill_output",
    "require_list",
    "start",
]

# Names in a notebook's namespace that are never its parameters: IPython's, and the paths papermill
# injects with --inject-paths.
_NOT_PARAMETERS = {
    "In",
    "Out",
    "get_ipython",
    "exit",
    "quit",
    "open",
    "PAPERMILL_INPUT_PATH",
    "PAPERMILL_OUTPUT_PATH",
}
_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"  # the checkout's, beside the package


def _plain_names(namespace: Mapping[str, Any]) -> list[str]:
    """Names holding plain values (what a parameters cell or papermill's injected cell sets)."""
    plain = (str, int, float, bool, list, dict, tuple, type(None))
    return [
        n
        for n, v in namespace.items()
        if not n.startswith("_") and n not in _NOT_PARAMETERS and isinstance(v, plain)
    ]


def _declared_defaults(notebook: str) -> dict[str, str] | None:
    """The parameters ``notebook``'s cell declares with their written defaults, or None without the file."""
    path = _NOTEBOOKS / notebook
    if not path.is_file():
        return None
    import papermill  # a second to import: only where a notebook's parameters are read

    return {name: str(p["default"]) for name, p in papermill.inspect_notebook(str(path)).items()}


def _example(value: Any) -> str:
    """``value`` as YAML inside a flow list: bare where it is a plain word, else quoted."""
    text = str(value)
    return text if re.fullmatch(r"[A-Za-z0-9_.+/-]+", text) else json.dumps(text)


def require_list(name: str, value: Any) -> None:
    """:class:`ParameterError` unless ``value`` is a list or None (``-p variants swelu`` gives a string)."""
    if value is None or isinstance(value, (list, tuple)):
        return
    raise ParameterError(
        f"{name} must be a list, e.g. -y '{name}: [{_example(value)}]', not the single value {value!r}"
    )


def _check_kinds(defaults: Mapping[str, str], namespace: Mapping[str, Any]) -> None:
    """A parameter whose default is a list or a mapping must be given as one, not fail late."""
    for name, written in defaults.items():
        if name not in namespace:
            continue
        try:
            default = ast.literal_eval(written)
        except (ValueError, SyntaxError):
            continue
        value = namespace[name]
        if isinstance(default, (list, tuple)):
            require_list(name, value)
        elif isinstance(default, dict) and not (value is None or isinstance(value, Mapping)):
            raise ParameterError(f"{name} must be a mapping, e.g. -y '{name}: {{key: value}}', not {value!r}")


def notebook_parameters(notebook: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values in ``namespace`` of ``notebook``'s parameters (without the file: all plain values)."""
    declared = _declared_defaults(notebook)
    names = _plain_names(namespace) if declared is None else list(declared)
    return {n: namespace[n] for n in names if n in namespace}


def check_parameters(notebook: str, namespace: Mapping[str, Any]) -> None:
    """:class:`ParameterError` for values ``notebook`` does not declare (``-p presett small`` would
    otherwise run the default and report "complete") and for a single value where the default is a list or
    mapping."""
    defaults = _declared_defaults(notebook)
    if defaults is None:
        return
    declared = list(defaults)
    unknown = [n for n in _plain_names(namespace) if n not in declared]
    if unknown:
        raise ParameterError(
            f"unknown parameter(s) {with_nearest(unknown, declared)} for {notebook}; it takes: "
            f"{', '.join(declared)}"
        )
    _check_kinds(defaults, namespace)


def _fresh_kernel() -> bool:
    """True in a kernel that has run at most three cells: the start of a run."""
    shell = get_ipython()
    history = shell.user_ns.get("In") if shell is not None else None
    return isinstance(history, list) and len(history) - 1 <= 3  # In[0] is ""


def _show_refusal(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: Any = None) -> list[str]:
    """IPython's handler of refused and interrupted runs: one line in the notebook and on the terminal."""
    line = f"{etype.__name__}: {value}"
    if in_kernel():
        say(f"{'interrupted' if isinstance(value, RunInterrupted) else 'error'}: {value}")
    shell._showtraceback(etype, value, [line])  # the frontends' display hook (a kernel: the error reply)
    return [line]


def start(
    notebook: str, namespace: Mapping[str, Any], check: bool | None = None, defer: bool = False
) -> Report:
    """Every notebook's prologue: parameters checked, Hugging Face's progress bars off, a refused run
    shown as one line, and the run's :class:`mswelu.report.Report` (in ``reports/studies/`` for a ``study``).
    ``defer`` writes the report only with its first content, so a run refused before then leaves an earlier
    report as it was."""
    shell = get_ipython()
    if shell is not None:  # first: a parameter refused below is one line too
        shell.set_custom_exc((RunRefused, RunInterrupted), _show_refusal)
        _follow_papermill_bar(shell)
    if check if check is not None else _fresh_kernel():
        check_parameters(notebook, namespace)
    hf_logging.disable_progress_bar()
    root = reports_dir() / STUDIES if namespace.get("study") else None
    params = notebook_parameters(notebook, namespace)
    report = Report(namespace["run_name"], notebook, params, root=root, defer=defer)
    _CURRENT[:] = [report]
    return report


_CURRENT: list[Report] = []  # the report of the notebook run in this kernel (start() sets it)


def current_report() -> Report | None:
    """The report :func:`start` made for this kernel's notebook run, or None (plain Python, tests)."""
    return _CURRENT[0] if _CURRENT else None


def _bar_redrawn(*_: Any) -> None:
    progress.after_bar()


def _follow_papermill_bar(shell: Any) -> None:
    """Under papermill's bar each cell's first progress line starts a line of its own."""
    found = _papermill_parent()
    if found is None or not found[0]["progress_bar"]:
        return
    if _bar_redrawn not in shell.events.callbacks.get("pre_run_cell", []):
        shell.events.register("pre_run_cell", _bar_redrawn)
    progress.after_bar()  # this cell, the prologue's, started after the bar too


def format_samples(prompts: Sequence[str], texts: Sequence[str], max_newlines: int = 2) -> str:
    """Prompt + continuation pairs as text, runs of newlines and blank continuations made visible."""
    if len(prompts) != len(texts):
        raise ValueError(f"{len(prompts)} prompts but {len(texts)} continuations")
    limit = max(1, int(max_newlines))

    def shown(text: str) -> str:
        if text and not text.strip():
            return f"[{len(text)} whitespace characters: {text.count(chr(10))} newlines]"
        return re.sub(f"\n{{{limit + 1},}}", lambda m: f"\n[{len(m.group())} newlines]\n", text)

    pairs = enumerate(zip(prompts, texts, strict=True), 1)
    blocks = [f"--- sample {i} ---\n{p}{shown(t)}" for i, (p, t) in pairs]
    return "\n\n".join(blocks)


def _papermill_arguments(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``papermill`` (``papermill ...``, ``python -m papermill ...``), or None."""
    for i, arg in enumerate(argv):
        if Path(arg).name == "papermill":
            return list(argv[i + 1 :])
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1] == "papermill":
            return list(argv[i + 2 :])
    return None


def papermill_options(argv: Sequence[str]) -> dict[str, Any] | None:
    """The options of a papermill command line as papermill reads them, or None when ``argv`` is none."""
    args = _papermill_arguments(argv)
    if args is None:
        return None
    from papermill.cli import papermill as papermill_command  # papermill's own reading of its options

    options = dict(papermill_command.make_context("papermill", args, resilient_parsing=True).params)
    if options.get("progress_bar") is None:  # papermill's own default: a bar unless it logs the output
        options["progress_bar"] = not options.get("log_output")
    return options


def _papermill_parent() -> tuple[dict[str, Any], str] | None:
    """(options, working folder) of the papermill command line that started this kernel, or None."""
    try:
        import psutil  # installed with IPython; absent on a few platforms
    except ImportError:
        return None
    try:
        parent = psutil.Process(os.getppid())
        argv, cwd = parent.cmdline(), parent.cwd()
    except psutil.Error:
        return None
    options = papermill_options(argv)
    return None if options is None else (options, cwd)


def papermill_output() -> Path | None:
    """The notebook file the papermill command that started this kernel writes, or None."""
    found = _papermill_parent()
    if found is None:
        return None
    output = found[0].get("output_path")
    path = Path(found[1], output) if output else None
    try:
        written = json.loads(path.read_text(encoding="utf-8")) if path is not None else {}
    except (OSError, ValueError):
        return None
    return path if written.get("metadata", {}).get("papermill", {}).get("output_path") == output else None


def keep_executed_notebook(runs_by_name: Mapping[str, runs.RunData]) -> list[Path]:
    """Copy papermill's executed notebook into each run folder that holds none yet; returns the copies."""
    source = papermill_output()
    if source is None:
        return []
    kept = (runs.keep_notebook(run.path, source) for run in runs_by_name.values())
    return [path for path in kept if path is not None]
