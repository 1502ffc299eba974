"""The core's import rules, checked on its source (an AST walk, nothing imported).

`app/generation` is arranged by the life of a job (docs/architecture.md). Its folders
are layers: a module may import its own folder and the layers below it, never one
above, so a module's folder says what it may use. The rules are data, below; a new
folder or an import that breaks them fails here with the line that did it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "app" / "generation"
PACKAGE = "app.generation"

# Lowest first. A unit is a folder or a top-level module of the core; units on one line
# share a layer and may not import each other.
LAYERS: list[set[str]] = [
    {"job", "errors"},  # the vocabulary
    {"generators"},  # the plug-in API generators are written against
    {"scheduling"},  # which queued job starts next (pure policy)
    {"events"},  # what watchers hear (pure bus and hooks)
    {"store"},  # the database
    {"queue"},  # where accepted jobs wait; the claim
    {"forecast"},  # positions and ETAs over the queue
    {"results"},  # what a successful run leaves
    {"settings"},  # how the service runs (read by the steps above)
    {"notify"},  # telling other systems what happened (webhooks)
    {"intake", "execution"},  # a submission taken in; a claimed job run
    {"ops"},  # what operators read
    {"service", "__init__"},  # the front door
]

# Units that stay pure: no SQLAlchemy and no store, directly or through what they import.
PURE = {"job", "errors", "scheduling", "forecast", "events"}
# Third-party packages only one place may import: (package, the modules allowed it).
CONFINED = {
    "psycopg": {"store.listener_postgres"},
    "alembic": {"store.migrate", "store.migrations"},
}
# Nothing of the core imports the web tier or its framework.
FORBIDDEN = ("flask", "flask_sock", "werkzeug", "app.web")


@dataclass(frozen=True)
class Import:
    module: str  # the importer, dotted, below app.generation ("store.jobs")
    target: str  # what it imports, absolute ("app.generation.job", "sqlalchemy.orm")
    line: int

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "__init__"


def imports_of(path: Path) -> Iterator[Import]:
    """Every import in the file, wherever it sits (a function's lazy import counts)."""
    module = module_name(path)
    package = [PACKAGE, *path.relative_to(CORE).parts[:-1]]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from . import x` may name a module: count it as importing that module.
            for alias in node.names:
                inner = f"{base}.{alias.name}"
                is_module = (CORE / Path(*inner.split(".")[2:])).with_suffix(".py").exists()
                yield Import(module, inner if is_module else base, node.lineno)


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(found for path in sorted(CORE.rglob("*.py")) for found in imports_of(path))


def core_target(found: Import) -> str | None:
    """The imported core module, below app.generation, or None for anything else."""
    if found.target == PACKAGE:
        return "__init__"
    prefix = PACKAGE + "."
    return found.target[len(prefix) :] if found.target.startswith(prefix) else None


def unit(module: str) -> str:
    return module.split(".")[0]


def layer(name: str) -> int:
    for number, units in enumerate(LAYERS):
        if name in units:
            return number
    raise AssertionError(f"{name} is in no layer of tests/test_layout.py: add it there")


def upward(found: Import) -> bool:
    target = core_target(found)
    if target is None or unit(target) == unit(found.module):
        return False
    if unit(found.module) == "__init__":  # the package's lazy exports name the front door
        return False
    return layer(unit(target)) >= layer(unit(found.module))


def test_every_module_of_the_core_sits_in_a_layer():
    units = {unit(module_name(path)) for path in CORE.rglob("*.py")}
    placed = set().union(*LAYERS)
    assert sorted(units - placed) == [], "add these to LAYERS in tests/test_layout.py"


def test_imports_only_go_down_the_layers():
    assert [str(found) for found in all_imports() if upward(found)] == []


def core_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for found in all_imports():
        target = core_target(found)
        graph.setdefault(found.module, set())
        if target is not None:
            graph[found.module].add(target)
    return graph


def reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    """The core modules `start` imports, directly or through others (packages included)."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        module = todo.pop()
        for target in graph.get(module, ()):
            for name in (target, *parents(target)):
                if name not in seen:
                    seen.add(name)
                    todo.append(name)
    return seen


def parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts))]


@pytest.mark.parametrize("pure", sorted(PURE))
def test_the_vocabulary_the_policies_and_the_bus_need_no_database(pure):
    graph = core_graph()
    offenders = []
    for module in [name for name in graph if unit(name) == pure]:
        for name in {module} | reachable(module, graph):
            if unit(name) == "store":
                offenders.append(f"{module} reaches {name}")
            offenders += [
                f"{module} reaches {found}"
                for found in all_imports()
                if found.module == name and found.target.split(".")[0] == "sqlalchemy"
            ]
    assert offenders == []


def test_the_core_imports_neither_flask_nor_the_web_tier():
    offenders = [
        str(found)
        for found in all_imports()
        if any(found.target == name or found.target.startswith(name + ".") for name in FORBIDDEN)
    ]
    assert offenders == []


@pytest.mark.parametrize("package", sorted(CONFINED))
def test_a_driver_or_tool_is_imported_in_its_one_place(package):
    allowed = CONFINED[package]
    offenders = [
        str(found)
        for found in all_imports()
        if found.target.split(".")[0] == package
        and not any(
            found.module == place or found.module.startswith(place + ".") for place in allowed
        )
    ]
    assert offenders == []


def test_the_rules_see_a_violation():
    """The walk resolves relative imports: an upward one is caught, a downward one is not."""
    assert upward(Import("store.jobs", f"{PACKAGE}.queue.contract", 1))
    assert upward(Import("intake.admission", f"{PACKAGE}.execution.runner", 1))
    assert not upward(Import("queue.memory", f"{PACKAGE}.store.jobs", 1))
    found = {str(item) for item in all_imports() if item.module == "store.jobs"}
    assert any(f"imports {PACKAGE}.job" in item for item in found)
