"""The package's shape, checked from its source: layers, cycles, file sizes, the architecture page.

``lad/`` is a stack of subpackages, one concern each. A module may import from its own subpackage
and from the layers below its own, never from a layer above or from another subpackage of its own
layer. Every import counts, those inside functions too: a deferred import is still a dependency
(it only moves the cost of importing to the first call), so a lower layer that imports an upper one
inside a function is as tangled as one that does it at the top of the file. For the same reason
the cycle check covers every import, not only the module-level ones.

What is not an edge here: the implicit import of a parent package (``import lad.models.arch`` runs
``lad/models/__init__.py`` first; packages are entered that way, not used), and modules imported by
name at run time (``lad.method.loss_terms`` imports every module of its folder with importlib: the
registry, not a dependency).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "lad"
ARCHITECTURE = REPO / "docs" / "architecture.md"
MAX_LINES = 450

# lowest first; subpackages on one line are independent of each other
LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),              # errors, config, file io, locks, secrets, signals, runtime
    ("data", "models"),     # tasks, readers, features, metrics | encoders, students, teachers
    ("method",),            # gates, loss terms, objective, distiller, teacher-output cache
    ("tracking",),          # MLflow: stores, runs, sweep parents, models, the UI record
    ("deploy",),            # a saved model's size and speed, ONNX export
    ("run",),               # one run: entry glue, checks, assembly, training loop, run directory
    ("search",),            # many runs: spaces, studies, in-process search, the Pareto front
    ("testing",),           # helpers for tests and QA scripts
)
RANK = {package: rank for rank, line in enumerate(LAYERS) for package in line}


# ----------------------------------------------------------------------------- reading the package
def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name (packages by their own name)."""
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import of a package module in ``path``, wherever it
    stands; ``from x import y`` names the submodule ``x.y`` when there is one, else ``x``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in known:  # import lad.x.y.z -> the longest module prefix
                    target = target.rpartition(".")[0]
                if target:
                    yield target, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    yield f"{base}.{alias.name}", node.lineno
                elif base in known:
                    yield base, node.lineno


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported module: first line}}`` over the package's own modules."""
    found = modules_of(root)
    graph: dict[str, dict[str, int]] = {}
    for name, path in found.items():
        edges = graph.setdefault(name, {})
        for target, line in imports_of(name, path, set(found)):
            if target != name:
                edges.setdefault(target, line)
    return graph


def layer_of(module: str) -> str | None:
    """The subpackage a module belongs to (None for the top package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


# ----------------------------------------------------------------------------- the rules
def layer_violations(root: Path) -> list[str]:
    """Imports that go up the stack, or sideways to another subpackage of the same layer."""
    out = []
    for module, edges in import_graph(root).items():
        source = layer_of(module)
        for target, line in edges.items():
            dest = layer_of(target)
            if dest is None or dest == source or source is None:
                continue
            if source not in RANK or dest not in RANK:
                out.append(f"{module}:{line} imports {target}: subpackage {source if source not in RANK else dest!r} "
                           "has no layer (add it to LAYERS)")
            elif RANK[dest] > RANK[source]:
                out.append(f"{module}:{line} imports {target}: {dest} is a higher layer than {source}")
            elif RANK[dest] == RANK[source]:
                out.append(f"{module}:{line} imports {target}: {dest} and {source} are independent subpackages "
                           "of one layer")
    return out


def cycles(root: Path) -> list[list[str]]:
    """The import cycles among the package's modules: every strongly connected set of two or more
    modules (Tarjan), each as a sorted list."""
    graph = import_graph(root)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def long_files(root: Path, limit: int = MAX_LINES) -> list[str]:
    return [f"{p.relative_to(root.parent)}: {n} lines" for p in sorted(root.rglob("*.py"))
            if (n := len(p.read_text().splitlines())) > limit]


TABLE_PATH = re.compile(r"`(lad/[\w/]+(?:\.py|/))`")


def documented_modules(page: str) -> dict[str, int]:
    """How many rows of the page's module table name each ``lad/`` path."""
    counts: dict[str, int] = {}
    for line in page.splitlines():
        if line.startswith("|"):
            for path in set(TABLE_PATH.findall(line)):
                counts[path] = counts.get(path, 0) + 1
    return counts


def documentation_gaps(root: Path, page: str) -> list[str]:
    """Modules the architecture page's table does not name, names there that are not modules, and
    modules named in more than one row. A package is named by its folder (``lad/run/``), a module by
    its file (``lad/run/train.py``)."""
    expected = set()
    for path in root.rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root.parent)
        expected.add(f"{rel.parent}/" if path.name == "__init__.py" else str(rel))
    expected.discard(f"{root.name}/")  # the top package holds only the version
    named = documented_modules(page)
    return ([f"not in the table: {p}" for p in sorted(expected - set(named))]
            + [f"in the table but not in the package: {p}" for p in sorted(set(named) - expected)]
            + [f"in {n} rows: {p}" for p, n in sorted(named.items()) if n > 1])


# ----------------------------------------------------------------------------- the tests
def test_every_subpackage_has_a_layer_and_a_docstring():
    packages = sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))
    assert set(packages) == set(RANK), "LAYERS must name every subpackage of lad/ (and nothing else)"
    assert [p.name for p in PACKAGE.glob("*.py")] == ["__init__.py"], "every module belongs to a subpackage"
    undocumented = [name for name in packages
                    if not ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))]
    assert undocumented == []


def test_no_import_goes_up_the_stack():
    assert layer_violations(PACKAGE) == []


def test_no_import_cycle():
    assert cycles(PACKAGE) == []


def test_no_file_over_the_line_limit():
    assert long_files(PACKAGE) == []


def test_the_architecture_page_names_every_module_once():
    assert documentation_gaps(PACKAGE, ARCHITECTURE.read_text()) == []


# ----------------------------------------------------------------------------- the checks can fail
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "lad"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.mark.parametrize("source, text, expected", [
    ("core/config.py", "def f():\n    from lad.run import rundir\n", "run is a higher layer"),  # up, in a function
    ("data/tasks.py", "from lad.models.arch import layers\n", "independent subpackages"),  # sideways
    ("method/gates.py", "import lad.tracking.tracker as t\n", "a higher layer"),
])
def test_an_upward_or_sideways_import_is_found(tmp_path, source, text, expected):
    root = _package(tmp_path, {"core/__init__.py": '"""c"""', "core/config.py": "", "data/__init__.py": "",
                               "data/tasks.py": "", "models/__init__.py": "", "models/arch.py": "",
                               "method/__init__.py": "", "method/gates.py": "", "run/__init__.py": "",
                               "run/rundir.py": "from lad.core import config\n", "tracking/__init__.py": "",
                               "tracking/tracker.py": "", source: text})
    found = layer_violations(root)
    assert len(found) == 1 and expected.replace("/", ".") in found[0].replace("/", "."), found
    assert layer_violations(_package(tmp_path / "ok", {"run/__init__.py": "", "core/__init__.py": "",
                                                       "run/a.py": "from lad.core import b\n", "core/b.py": ""})) == []


def test_a_cycle_is_found_also_through_a_function_level_import(tmp_path):
    root = _package(tmp_path, {"run/__init__.py": "", "run/a.py": "from lad.run import b\n",
                               "run/b.py": "from .c import x\n", "run/c.py": "def f():\n    import lad.run.a\n"})
    assert cycles(root) == [["lad.run.a", "lad.run.b", "lad.run.c"]]
    (root / "run" / "c.py").write_text("")
    assert cycles(root) == []


def test_a_long_file_is_found(tmp_path):
    root = _package(tmp_path, {"core/__init__.py": "", "core/big.py": "x = 1\n" * (MAX_LINES + 1),
                               "core/ok.py": "x = 1\n" * MAX_LINES})
    assert long_files(root) == [f"lad/core/big.py: {MAX_LINES + 1} lines"]


def test_a_module_missing_from_or_stale_in_the_table_is_found(tmp_path):
    root = _package(tmp_path, {"run/__init__.py": "", "run/a.py": "", "run/b.py": ""})
    page = "| run | `lad/run/` | one run |\n| | `lad/run/a.py` | a |\n| | `lad/run/gone.py` | gone |\n" \
           "| | `lad/run/a.py` | again |\n\nprose naming `lad/run/b.py` outside the table\n"
    assert documentation_gaps(root, page) == ["not in the table: lad/run/b.py",
                                              "in the table but not in the package: lad/run/gone.py",
                                              "in 2 rows: lad/run/a.py"]


if __name__ == "__main__":  # the findings on this checkout, for a quick look
    for line in [*layer_violations(PACKAGE), *map(str, cycles(PACKAGE)), *long_files(PACKAGE),
                 *documentation_gaps(PACKAGE, ARCHITECTURE.read_text())]:
        print(line)
