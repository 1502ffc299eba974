"""Generators by name: the built-ins, plus whatever installed packages advertise.

A third-party package makes its generator available by declaring an entry point in the
group `ENTRY_POINT_GROUP` whose name is the generator's name, e.g. in its pyproject.toml:

    [project.entry-points."generation_service.generators"]
    spirograph = "gs_spirograph:SpirographGenerator"

The object it names is a `Generator` subclass, an instance, or a zero-argument factory.
A plugin that fails to load is logged and skipped: one broken package must not take the
service down with it.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points

from .base import Generator
from .images import ImagesGenerator
from .noop import NoopGenerator

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "generation_service.generators"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")


class GeneratorRegistry:
    def __init__(self, generators: Iterable[Generator] = ()) -> None:
        self._generators: dict[str, Generator] = {}
        for generator in generators:
            self.register(generator)

    def register(self, generator: Generator) -> None:
        """Add a generator; ValueError if it cannot be served (bad name, duplicate, or a
        cpu_bound generator that cannot be sent to a worker process)."""
        if not isinstance(generator, Generator):
            raise TypeError(f"expected a Generator, got {type(generator).__name__}")
        name = getattr(generator, "name", None)
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
            raise ValueError(
                f"generator name {name!r} must be lowercase letters, digits, '_', '.' or '-', "
                "starting with a letter, at most 64 characters"
            )
        if name in self._generators:
            raise ValueError(f"a generator named {name!r} is already registered")
        if generator.cpu_bound:
            _check_picklable(generator)
        self._generators[name] = generator

    def discover(
        self, group: str = ENTRY_POINT_GROUP, *, found: Iterable[EntryPoint] | None = None
    ) -> list[str]:
        """Register the generators that installed packages declare in `group` (or the
        given entry points); return the names added. Failures are logged, not raised."""
        added = []
        for entry_point in entry_points(group=group) if found is None else found:
            try:
                generator = load_entry_point(entry_point)
                self.register(generator)
            except Exception:  # noqa: BLE001 - a broken plugin must not stop the service
                log.exception(
                    "generator plugin %r (%s) could not be loaded; skipped",
                    entry_point.name,
                    entry_point.value,
                )
                continue
            log.info("loaded generator plugin %r from %s", generator.name, entry_point.value)
            added.append(generator.name)
        return added

    def get(self, name: str) -> Generator | None:
        return self._generators.get(name)

    def names(self) -> list[str]:
        return sorted(self._generators)

    def __iter__(self) -> Iterator[Generator]:
        return iter(self._generators.values())

    @property
    def has_cpu_bound(self) -> bool:
        return any(generator.cpu_bound for generator in self)


def load_entry_point(entry_point: EntryPoint) -> Generator:
    """The generator an entry point names: a class, an instance or a factory."""
    target = entry_point.load()
    generator = target if isinstance(target, Generator) else target()
    if not isinstance(generator, Generator):
        raise TypeError(f"{entry_point.value} gave a {type(generator).__name__}, not a Generator")
    if generator.name != entry_point.name:
        raise ValueError(
            f"entry point {entry_point.name!r} names a generator called {generator.name!r}; "
            "the two names must be the same"
        )
    return generator


def default_registry() -> GeneratorRegistry:
    """The built-in generators that need no configuration."""
    return GeneratorRegistry([ImagesGenerator(), NoopGenerator()])


def _check_picklable(generator: Generator) -> None:
    try:
        pickle.dumps(generator)
    except Exception as error:  # noqa: BLE001 - pickling raises many types
        raise ValueError(
            f"generator {generator.name!r} is cpu_bound, so it runs in a worker process and "
            f"must be picklable: {type(error).__name__}: {error}"
        ) from error
