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

# Units that stay pure: no SQLAlchemy and no store, directly or through what they import
# (the "may not import" column of docs/architecture.md's table). Generators are written
# and run (in a child process too) without the database; settings is one plain value.
PURE = {"job", "errors", "generators", "scheduling", "forecast", "events", "settings"}
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
    return imports_in(path.read_text(), path)


def imports_in(source: str, path: Path) -> Iterator[Import]:
    """The imports of `source`, read as the file at `path` of the core."""
    module = module_name(path)
    # The dotted parts of the package a relative import starts from ("." is the file's own
    # package; for an __init__.py, the package it begins), so ".." and beyond can climb
    # out of app.generation to app.
    package = [*PACKAGE.split("."), *path.relative_to(CORE).parts[:-1]]
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if node.level > len(package):
                    raise AssertionError(f"{path}:{node.lineno} climbs above the package app")
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for target in from_targets(base, [alias.name for alias in node.names]):
                yield Import(module, target, node.lineno)


def from_targets(base: str, names: list[str]) -> list[str]:
    """What `from base import names` imports, as the rules see it.

    `from X import name` may bind a submodule X.name (`from app import web`), so X.name
    counts as imported. Inside the core, a name that is a module or a package counts
    instead of `base`: `from .. import queue` in ops/ imports the queue, not the front door
    (app/generation/__init__.py, which any import of the core runs anyway); a name that is
    not a module (`from .. import Job`) is taken from `base` itself. Outside the core the
    tree cannot tell a module from a name, so both are counted.
    """
    named = [f"{base}.{name}" for name in names if name != "*"]
    if core_module(base) is None:
        return [base, *named]
    modules = [target for target in named if is_core_module(target)]
    return modules if len(modules) == len(named) else [base, *modules]


def is_core_module(dotted: str) -> bool:
    """Whether app.generation.<...> names a module or a package of the core's tree."""
    inner = core_module(dotted)
    if inner is None or inner == "__init__":
        return False
    place = CORE.joinpath(*inner.split("."))
    return place.with_suffix(".py").is_file() or place.is_dir()


@cache
def all_imports() -> tuple[Import, ...]:
    return tuple(found for path in sorted(CORE.rglob("*.py")) for found in imports_of(path))


def core_target(found: Import) -> str | None:
    """The imported core module, below app.generation, or None for anything else."""
    return core_module(found.target)


def core_module(dotted: str) -> str | None:
    """`dotted` below app.generation ("__init__" for the package), or None if outside."""
    if dotted == PACKAGE:
        return "__init__"
    prefix = PACKAGE + "."
    return dotted[len(prefix) :] if dotted.startswith(prefix) else None


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


def forbidden(found: Import) -> bool:
    return any(found.target == name or found.target.startswith(name + ".") for name in FORBIDDEN)


def test_the_core_imports_neither_flask_nor_the_web_tier():
    assert [str(found) for found in all_imports() if forbidden(found)] == []


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


def imports_at(place: str, source: str) -> list[Import]:
    """The imports of `source` as if it were the core's file `place` ("ops/example.py")."""
    return list(imports_in(source, CORE / place))


# Each way a core module could reach the web tier or its framework, and a file it could
# sit in: relative imports that climb out of app.generation name app.web too.
WEB_IMPORTS = [
    ("ops/example.py", "import app.web"),
    ("ops/example.py", "import app.web.api as api"),
    ("ops/example.py", "from app import web"),
    ("ops/example.py", "from app import web as w"),
    ("ops/example.py", "from app.web import api"),
    ("ops/example.py", "from app.web.api import bp"),
    ("ops/example.py", "from ... import web"),
    ("ops/example.py", "from ...web import api"),
    ("ops/example.py", "from ...web.api import bp"),
    ("service.py", "from .. import web"),
    ("service.py", "from ..web import api"),
    ("__init__.py", "from ..web import api"),
    ("ops/example.py", "def lazy():\n    from flask import current_app"),
    ("ops/example.py", "import werkzeug.exceptions"),
    ("ops/example.py", "from flask_sock import Sock"),
]


@pytest.mark.parametrize(("place", "source"), WEB_IMPORTS)
def test_the_rule_sees_every_form_of_a_web_import(place, source):
    assert any(forbidden(found) for found in imports_at(place, source))


def test_a_relative_import_resolves_to_the_module_it_names():
    """`from .. import x` imports x when x is a module or package of the core, and the
    package itself (its lazy front door) when x is only a name there."""

    def targets(place: str, source: str) -> list[str]:
        return [found.target for found in imports_at(place, source)]

    assert targets("ops/example.py", "from .. import queue") == [f"{PACKAGE}.queue"]
    assert targets("store/schema.py", "from . import migrate") == [f"{PACKAGE}.store.migrate"]
    assert targets("ops/example.py", "from .. import Job") == [PACKAGE]
    assert targets("ops/example.py", "from .. import queue, Job") == [
        PACKAGE,
        f"{PACKAGE}.queue",
    ]
    assert targets("store/__init__.py", "from .jobs import JobStore") == [f"{PACKAGE}.store.jobs"]
    # Outside the core a name may be a module (`from app import web`): both count.
    assert targets("service.py", "from ..config import Config") == [
        "app.config",
        "app.config.Config",
    ]
    # A subpackage taken from its parent is judged by its own layer, both ways.
    assert not any(upward(found) for found in imports_at("ops/example.py", "from .. import queue"))
    assert any(upward(found) for found in imports_at("store/example.py", "from .. import queue"))
    assert any(upward(found) for found in imports_at("ops/example.py", "from .. import Job"))
    assert [
        unit(core_target(found) or "")
        for found in imports_at("generators/x.py", "from .. import store")
    ] == ["store"]
    with pytest.raises(AssertionError, match="climbs above"):
        imports_at("service.py", "from ... import web")


def test_the_rules_see_a_violation():
    """The walk resolves relative imports: an upward one is caught, a downward one is not."""
    assert upward(Import("store.jobs", f"{PACKAGE}.queue.contract", 1))
    assert upward(Import("intake.admission", f"{PACKAGE}.execution.runner", 1))
    assert not upward(Import("queue.memory", f"{PACKAGE}.store.jobs", 1))
    found = {str(item) for item in all_imports() if item.module == "store.jobs"}
    assert any(f"imports {PACKAGE}.job" in item for item in found)
