"""Import costs and shape: the declaration API (``workers``, ``workers.errors``) loads a
handful of modules and none of the process runtime (``workers.runtime``), and the modules
of ``workers`` import each other without a cycle.

The imports run in a fresh interpreter started in the repository's root, as a user's
``import workers`` would: inside pytest, ``tests/workers`` could stand in for the package
(see tests/test_exported_members.py), and pytest has already imported everything."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "workers"
MOST_MODULES = 14

PROBE = ("import {module}, sys, json; "
         "names = sorted(m for m in sys.modules if m.startswith('workers')); "
         "print(len(names)); print(json.dumps(names))")
"""Prints how many ``workers`` modules ``import {module}`` loaded, then their names."""


def _loaded_by(module: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    count, names = done.stdout.splitlines()
    return int(count), json.loads(names)


@pytest.fixture(scope="module", params=["workers.errors", "workers"])
def loaded(request: pytest.FixtureRequest) -> tuple[str, int, list[str]]:
    """(module imported, how many ``workers`` modules that loaded, their names), each in
    an interpreter of its own."""
    module: str = request.param
    return (module, *_loaded_by(module))


def test_the_declaration_api_loads_a_handful_of_modules(
        loaded: tuple[str, int, list[str]]) -> None:
    module, count, names = loaded

    assert module in names
    assert count == len(names) <= MOST_MODULES, names


def test_the_declaration_api_loads_nothing_of_the_runtime(
        loaded: tuple[str, int, list[str]]) -> None:
    _, _, names = loaded

    assert [m for m in names if m == "workers.runtime" or m.startswith("workers.runtime.")
            ] == []
    assert [m for m in names if m.startswith("workers.cli")] == []


# -- no cycles -----------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return ((isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
            or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _import_time_statements(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: at module level, also
    inside ``if``/``try``/``with`` blocks and class bodies, but not in functions nor under
    ``if TYPE_CHECKING:`` (its ``else`` does run)."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _import_time_statements(node.body)
            found += _import_time_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody,
                          *(h.body for h in node.handlers)):
                found += _import_time_statements(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            found += _import_time_statements(node.body)
    return found


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph() -> dict[str, set[str]]:
    """``workers`` module -> the ``workers`` modules it needs when it is imported: the
    modules it imports and those it takes names from."""
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        for node in _import_time_statements(ast.parse(path.read_text()).body):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                source = _absolute(node, name, is_package)
                for alias in node.names:
                    # ``from package import submodule`` needs the submodule, not the
                    # package's attributes (a parent package, as for ``import a.b``, is
                    # no edge); any other name is read from the module ``source``.
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in paths else source)
            graph[name] |= {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (its modules, the first repeated at the end), or None."""
    visiting: list[str] = []
    state: dict[str, str] = {}

    def visit(node: str) -> list[str] | None:
        state[node] = "visiting"
        visiting.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "visiting":
                return [*visiting[visiting.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        visiting.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_the_packages_imports() -> None:
    """(The graph this file checks is the real one: known edges are in it.)"""
    graph = import_graph()

    assert {"workers.app", "workers.errors"} <= graph["workers"]
    assert "workers.runtime.pool" in graph["workers.runtime"]
    assert "workers.runtime.policy" in graph["workers.runtime.stack"]
    assert "workers.runtime.recovery" in graph["workers.runtime.pool"]
    assert "workers.logs" in graph["workers.runtime.process"]
    assert not any(m.startswith("workers.runtime") for m in graph["workers.handler"])


def test_the_finder_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_modules_of_workers_import_each_other_without_a_cycle() -> None:
    cycle = find_cycle(import_graph())

    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
