"""The package's import structure: no cycles, and no module imports a layer above its own
(ARCHITECTURE.md draws the same map). Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mswelu"

# Lowest first; a module may import its own layer and those below it.
LAYERS = [
    [
        "paths",
        "fs",
        "progress",
        "hf_compat",
        "config_files",
        "stats",
        "distributed",
        "provenance",
        "stop",
        "errors",
        "run_names",
        "devices",
        "settings_policy",
        "base",
    ],
    ["ops"],
    ["modules"],
    [
        "configuration",
        "presets",
        "modeling",
        "convert",
        "baselines",
        "models",
        "flops",
        "data",
        "analysis",
        "shape_gradients",
    ],
    [
        "optim",
        "schedule",
        "checkpoint",
        "train_config",
        "variants",
        "evaluation",
        "parallel",
        "sharded_checkpoint",
        "trackers",
        "training_code",
    ],
    ["runs", "run_model", "resume", "preflight", "metrics_log", "hub", "run_index"],
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
