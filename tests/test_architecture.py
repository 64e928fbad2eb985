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
# The write side's rooms (core and sweeps) are read most and changed most: a few files of about 300 lines
# (issue 21). A module allowed more names the one concern that needs it.
WRITE_SIDE = ("actopt.core", "actopt.sweeps")
WRITE_SIDE_MAX_LINES = 300
WRITE_SIDE_LONGER = {"actopt.core.config": "the one configuration: its fields, parsing, validation and digest"}
# A function reads top to bottom on one screen, and takes few enough values that a caller sees them all.
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 6


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


def oversized_functions(source: str) -> dict[str, str]:
    """Each function in ``source`` longer than MAX_FUNCTION_LINES or taking more than MAX_PARAMETERS
    values (``self`` and ``cls`` not counted; ``*args`` and ``**kwargs`` counted as one each)."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            names = [item.arg for item in arguments.posonlyargs + arguments.args + arguments.kwonlyargs
                     if item.arg not in ("self", "cls")]
            names += [item.arg for item in (arguments.vararg, arguments.kwarg) if item]
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES or len(names) > MAX_PARAMETERS:
                found[node.name] = f"{length} lines, {len(names)} parameters"
    return found


def test_write_side_modules_stay_near_three_hundred_lines():
    long = {name: len(path.read_text().splitlines()) for name, path in modules().items()
            if name.startswith(WRITE_SIDE) and name not in WRITE_SIDE_LONGER}
    assert {name: lines for name, lines in long.items() if lines > WRITE_SIDE_MAX_LINES} == {}


def test_functions_are_short_and_take_few_parameters():
    found = {f"{name}.{function}": size for name, path in modules().items()
             for function, size in oversized_functions(path.read_text()).items()}
    assert found == {}
    # The check can fail: one function too long, one with seven parameters (self not counted).
    long_body = "def long():\n" + "    x = 1\n" * MAX_FUNCTION_LINES
    many = "class A:\n    def many(self, a, b, c, d, e, *rest, f=1):\n        pass\n"
    assert set(oversized_functions(long_body + many)) == {"long", "many"}
    assert oversized_functions("def fine(self, a, b, c, d, e, f):\n    pass\n") == {}


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


# Where a registry name is also something else: the configuration's learning_rate option, of which the analysis
# reads the logged parameter.
NOT_METRICS = {"actopt.core.config": {"learning_rate"}}


def test_every_module_spells_metric_names_through_the_registry():
    spelt = {name: literals for name, path in modules().items() if name != "actopt.core.metric_names"
             and (literals := [item for item in metric_literals(path) if item[1] not in NOT_METRICS.get(name, ())])}
    assert spelt == {}


def test_the_metric_check_sees_a_literal_name(tmp_path):
    module = tmp_path / "module.py"
    module.write_text('from actopt.core.metric_names import VAL_ACCURACY\n'
                      'a = VAL_ACCURACY\nb = "val_accuracy"\nc = f"grad_norm/{a}"\nd = "val accuracy"\n')
    assert metric_literals(module) == [(3, "val_accuracy"), (4, "grad_norm/")]


TESTS = Path(__file__).resolve().parent


def imported_top_names(source: str) -> set[str]:
    """The first component of every module ``source`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def edits_sys_path(source: str) -> bool:
    """Whether ``source`` changes ``sys.path`` (an insert, an append, an assignment or an extension)."""
    for node in ast.walk(ast.parse(source)):
        target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((item for item in targets if isinstance(item, ast.Attribute)), None)
        if isinstance(target, ast.Attribute) and target.attr == "path" and getattr(target.value, "id", "") == "sys":
            return True
    return False


def modules_importing_test_modules(sources: dict[str, str]) -> dict[str, set[str]]:
    """For each test module, the test modules (or conftest) it imports: shared helpers live in plain modules."""
    return {name: {imported for imported in imported_top_names(source)
                   if imported == "conftest" or imported.startswith("test_")} - {name}
            for name, source in sources.items()}




def test_no_test_imports_another_test_module_and_none_edits_sys_path():
    sources = {path.stem: path.read_text() for path in sorted(TESTS.glob("*.py"))}
    offenders = {name: sorted(found) for name, found in modules_importing_test_modules(sources).items() if found}
    assert not offenders, f"test modules importing test modules or conftest: {offenders}"
    assert not [name for name, source in sources.items() if edits_sys_path(source)]
    # The checks can fail: a module importing test_sweep and conftest, and one inserting into sys.path.
    planted = {"test_planted": "from test_sweep import write_study\nimport conftest\n",
               "test_fine": "from sweeping import write_study\n"}
    assert modules_importing_test_modules(planted) == {"test_planted": {"test_sweep", "conftest"}, "test_fine": set()}
    assert edits_sys_path("import sys\nsys.path.insert(0, 'x')\n")
    assert edits_sys_path("import sys\nsys.path = ['x']\n")
    assert not edits_sys_path("import sys\nprint(sys.path)\n")



def unmapped_modules(readme: str, paths: list[str]) -> list[str]:
    """The module paths (``actopt/core/data.py``) that the README's module map does not name: a line names a module
    by its whole path, or by its file name on a line that names another module of the same folder."""
    lines = readme.splitlines()
    missing = []
    for path in paths:
        folder, file = path.rsplit("/", 1)
        named = any(path in line or (f"`{folder}/" in line and f"`{file}`" in line) for line in lines)
        if not named:
            missing.append(path)
    return missing


def test_the_readme_module_map_lists_every_module():
    paths = [path.relative_to(PACKAGE.parent).as_posix() for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "__init__.py"]
    readme = (PACKAGE.parent / "README.md").read_text()
    assert unmapped_modules(readme, paths) == []
    # The check can fail: a module named nowhere, and one named only by its file name beside another folder.
    sample = "- `actopt/core/data.py`, `models.py`: data and models.\n- `actopt/tracking/store.py`: the store.\n"
    assert unmapped_modules(sample, ["actopt/core/models.py", "actopt/core/device.py", "actopt/sweeps/store.py"]) == [
        "actopt/core/device.py", "actopt/sweeps/store.py"]
