"""The package's shape: the data flow train → track → sweep → analyse with no import loop and
nothing reaching upward, MLflow only in the tracking layer, and modules of one concern."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "actopt"
# Each layer may import the layers before it, never one after it (the CLI sits on top of all).
LAYERS = ("actopt.errors", "actopt.core", "actopt.tracking", "actopt.sweeps", "actopt.analysis", "actopt.cli")
# A module above this many lines is split by concern (issue 12).
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """Every actopt module ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def layer(name: str) -> int:
    return max((index for index, prefix in enumerate(LAYERS) if name == prefix or name.startswith(prefix + ".")),
               default=-1)


def test_the_import_graph_has_no_cycle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(edges.get(name, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target] if target in path else [name, target]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])


def test_no_layer_imports_a_later_one():
    upward = [f"{name} imports {target}" for name, targets in graph().items() for target in targets
              if layer(name) >= 0 and layer(target) > layer(name)]
    assert upward == []


def test_mlflow_is_imported_in_the_tracking_layer_and_above_only():
    # The training core takes a logger; only tracking (and what sits above it) may speak to MLflow.
    offenders = []
    for name, path in modules().items():
        if layer(name) < LAYERS.index("actopt.tracking") and name != "actopt":
            tree = ast.parse(path.read_text())
            names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
            names += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
            offenders += [name for imported in names if imported.split(".")[0] == "mlflow"]
    assert offenders == []


def test_modules_stay_small():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {name: lines for name, lines in long.items() if lines > MAX_LINES} == {}


def test_the_check_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    # The checks above must be able to fail: a tiny package with a loop and an upward import.
    root = tmp_path / "actopt"
    (root / "core").mkdir(parents=True)
    (root / "tracking").mkdir()
    (root / "__init__.py").write_text("")
    (root / "core" / "__init__.py").write_text("")
    (root / "tracking" / "__init__.py").write_text("")
    (root / "core" / "a.py").write_text("from actopt.tracking import b\n")
    (root / "tracking" / "b.py").write_text("def f():\n    from actopt.core import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", root)
    edges = graph()
    assert edges["actopt.core.a"] == {"actopt.tracking", "actopt.tracking.b"}
    assert "actopt.core.a" in edges["actopt.tracking.b"]
    assert layer("actopt.tracking.b") > layer("actopt.core.a")


def metric_literals(path: Path) -> list[tuple[int, str]]:
    """String literals (f-string parts included) in ``path`` that spell a registry metric name, or begin with a
    per-layer family's ``family/``: such a name belongs in ``actopt.core.metric_names``."""
    from actopt.core import metric_names

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            family = node.value.split("/", 1)[0] if "/" in node.value else ""
            if node.value in metric_names.NAMES or family in metric_names.PER_LAYER_FAMILIES:
                found.append((node.lineno, node.value))
    return found


def test_the_analysis_spells_metric_names_through_the_registry():
    spelt = {name: literals for name, path in modules().items()
             if name.startswith("actopt.analysis") and (literals := metric_literals(path))}
    assert spelt == {}


def test_the_metric_check_sees_a_literal_name(tmp_path):
    module = tmp_path / "module.py"
    module.write_text('from actopt.core.metric_names import VAL_ACCURACY\n'
                      'a = VAL_ACCURACY\nb = "val_accuracy"\nc = f"grad_norm/{a}"\nd = "val accuracy"\n')
    assert metric_literals(module) == [(3, "val_accuracy"), (4, "grad_norm/")]
