"""The package's layers: every ``lib`` import (top-level or inside a function) points down or sideways
within its layer, never up, and no modules import each other in a circle.

``LAYERS`` is the one written statement of the order (docs/architecture.md points here). A module
belongs to the first entry that is a prefix of its dotted name.
"""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "lib"

#: bottom to top; each layer may import itself and the layers below it
LAYERS = (
    ("foundation", ("lib.config", "lib.display", "lib.fileio", "lib.parallel", "lib.plots", "lib.precision")),
    ("acquire", ("lib.acquire",)),
    ("extract", ("lib.extract",)),
    ("masking", ("lib.masking",)),
    ("defects", ("lib.defects",)),
    ("dataset", ("lib.dataset",)),
    ("store", ("lib.store", "lib.identity")),
    ("models", ("lib.models",)),
    ("evaluate", ("lib.evaluate",)),
    ("studies", ("lib.studies",)),
    ("notebook runner", ("lib.notebooks",)),
    ("grid", ("lib.grid",)),
    ("report", ("lib.report",)),
    ("orchestration", ("lib.workbook", "lib.inspection")),
    ("command line", ("lib.__main__",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def lib_imports(path: Path) -> set[str]:
    """Every ``lib...`` module ``path`` imports, wherever the statement stands (``from lib.x import y``
    counts as ``lib.x.y`` when ``lib/x/y.py`` exists, else ``lib.x``)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "lib"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if base.split(".")[0] != "lib":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                rel = Path(*sub.split("."))
                is_module = (LIB.parent / rel).with_suffix(".py").is_file() or (LIB.parent / rel).is_dir()
                out.add(sub if is_module else base)
    out.discard("lib")
    return out


def layer_of(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to LAYERS")


def import_graph() -> dict[str, set[str]]:
    return {module_name(p): lib_imports(p) for p in LIB.rglob("*.py")}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if n not in graph:
                continue
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_every_module_has_a_layer_and_imports_only_downwards():
    upward = []
    for module, imports in sorted(import_graph().items()):
        if module == "lib":
            continue
        for target in sorted(imports):
            if layer_of(target) > layer_of(module):
                upward.append(
                    f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checker_sees_upward_imports_and_circles(tmp_path):
    """Teeth: a planted upward import and a planted circle are both found."""
    assert layer_of("lib.grid") > layer_of("lib.models") > layer_of("lib.store")
    assert find_cycle({"lib.a": {"lib.b"}, "lib.b": {"lib.c"}, "lib.c": {"lib.a"}}) == [
        "lib.a",
        "lib.b",
        "lib.c",
        "lib.a",
    ]
    assert find_cycle({"lib.a": {"lib.b"}, "lib.b": set()}) is None
    f = LIB / "models" / "_probe_for_test.py"
    try:
        f.write_text("def f():\n    from lib.grid import run_grid\n    from .base import AnomalyModel\n")
        assert lib_imports(f) == {"lib.grid", "lib.models.base"}
    finally:
        f.unlink()


def test_nothing_outside_a_model_folder_names_a_model():
    """Adding a model touches its folder and the registry line only (docs/adding-a-model.md)."""
    names = ("patchcore", "memseg", "efficientad", "simplenet")
    allowed = {"lib/models/__init__.py"}
    hits = []
    for p in sorted(LIB.rglob("*.py")):
        rel = p.relative_to(LIB.parent).as_posix()
        if rel in allowed or any(rel.startswith(f"lib/models/{n}/") for n in names):
            continue
        if rel.startswith("lib/evaluate/claims/"):
            continue  # the paper's claims are about named models
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lib.models."):
                if node.module.split(".")[2] in names:
                    hits.append(f"{rel}: imports {node.module}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if any(node.value.startswith(n) for n in names) and len(node.value) < 20:
                    hits.append(f"{rel}: names {node.value!r}")
    assert not hits, "\n".join(hits)
