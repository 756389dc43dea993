"""The package's import structure: no cycles, and no module imports a layer above its own
(ARCHITECTURE.md draws the same map). Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mswelu"

# Lowest first; a module may import its own layer and those below it.
LAYERS = [
    ["base"],
    ["ops"],
    ["modules"],
    ["models", "data", "analysis"],
    ["training"],
    ["runs"],
    ["trainer", "train", "launch", "generate", "monitor", "evaluate", "plan"],
    ["report", "workbook", "bench", "__init__"],
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(module: str) -> str:
    """``mswelu.ops.swelu`` -> ``ops``; ``mswelu.trainer`` -> ``trainer``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = (
            ".".join(p for p in rel.parts if p != "__init__")
            if rel.name == "__init__"
            else ".".join(rel.parts)
        )
        targets = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mswelu"):
                subs = {f"{node.module}.{a.name}" for a in node.names}  # ``from mswelu.ops import x``
                found = {
                    t
                    for t in subs
                    if (PACKAGE.parent / Path(*t.split("."))).with_suffix(".py").exists()
                    or (PACKAGE.parent / Path(*t.split("."))).is_dir()
                }
                targets.update(found if found else {node.module})
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("mswelu"))
    modules = set(graph)
    return {m: {t for t in ts if t in modules and t != m} for m, ts in graph.items()}


def test_every_module_has_a_layer() -> None:
    missing = sorted({_unit(m) for m in _imports()} - set(LAYER_OF))
    assert not missing, f"add these to LAYERS (and ARCHITECTURE.md): {missing}"


def test_no_module_imports_a_higher_layer() -> None:
    wrong = [
        f"{m} (layer {LAYER_OF[_unit(m)]}) imports {t} (layer {LAYER_OF[_unit(t)]})"
        for m, targets in _imports().items()
        for t in targets
        if LAYER_OF[_unit(t)] > LAYER_OF[_unit(m)]
    ]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles() -> None:
    graph = _imports()
    # Package faces (__init__ re-exports) are not part of a cycle's meaning: drop edges into them.
    faces = {m for m in graph if (PACKAGE.parent / Path(*m.split("."))).is_dir()}
    graph = {m: {t for t in ts if t not in faces} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t) :] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_a_cycle(tmp_path: Path, monkeypatch) -> None:
    """The walker itself: two modules importing each other are reported."""
    pkg = tmp_path / "mswelu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from mswelu import b\n")
    (pkg / "b.py").write_text("def f():\n    from mswelu.a import x\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    graph = _imports()
    assert graph["mswelu.a"] == {"mswelu.b"} and graph["mswelu.b"] == {"mswelu.a"}


#: what a notebook may import from the package: the workbook facade (``wb``), the reports, the layer-6 entry
#: points, and the two packages that are notebooks' subjects (data preparation, a study's statistics)
NOTEBOOK_IMPORTS = {"workbook", "report", "data", "analysis", *LAYERS[6]}


def _notebook_imports(notebook: Path) -> set[str]:
    """The package units (``workbook``, ``data``, ...) the code cells of ``notebook`` import."""
    import json

    units = set()
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        code = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines())
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mswelu":
                if node.module == "mswelu":  # ``from mswelu import workbook as wb``
                    units.update(a.name for a in node.names)
                else:
                    units.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                units.update(a.name.split(".")[1] for a in node.names if a.name.startswith("mswelu."))
    return units


def test_notebooks_import_only_the_workbook_reports_their_subjects_and_entry_points() -> None:
    """ARCHITECTURE.md's rule for notebooks: anything else goes through ``mswelu.workbook``."""
    notebooks = sorted((PACKAGE.parent / "notebooks").glob("*.ipynb"))
    assert notebooks
    wrong = {nb.name: sorted(_notebook_imports(nb) - NOTEBOOK_IMPORTS) for nb in notebooks}
    assert not {k: v for k, v in wrong.items() if v}, wrong


def test_the_notebook_rule_sees_a_lower_import(tmp_path: Path) -> None:
    """The parser itself: a module below the workbook imported in a code cell is reported."""
    import json

    cells = [
        {"cell_type": "code", "source": ["%matplotlib inline\n", "from mswelu import workbook as wb\n"]},
        {"cell_type": "code", "source": ["def f():\n", "    from mswelu.base.paths import display_path\n"]},
        {"cell_type": "markdown", "source": ["from mswelu import fs"]},
    ]
    (tmp_path / "x.ipynb").write_text(json.dumps({"cells": cells}))
    assert _notebook_imports(tmp_path / "x.ipynb") == {"workbook", "base"}


def test_the_workbook_facade_exports_what_the_notebooks_use_and_nothing_else() -> None:
    """``wb.<name>`` in every notebook's code resolves, and every name the facade exports is used by one."""
    import json
    import re

    from mswelu import workbook as wb

    used = set()
    for notebook in sorted((PACKAGE.parent / "notebooks").glob("*.ipynb")):
        for cell in json.loads(notebook.read_text())["cells"]:
            if cell["cell_type"] == "code":
                used |= set(re.findall(r"\bwb\.([A-Za-z_]\w*)", "".join(cell["source"])))
    assert not sorted(used - set(wb.__all__)), "used by a notebook, not exported"
    assert not sorted(set(wb.__all__) - used), "exported, used by no notebook"
    assert all(hasattr(wb, name) for name in wb.__all__)
